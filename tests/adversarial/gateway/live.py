"""What an attacker of the gateway does on the wire: raw OHTTP through the relay, tokens minted
at the stack's own issuer, ClientHellos that open real predictor sessions.

Everything goes through the real relay and gateway of a :mod:`tests.livestack` stack; the
relay-visible answer (HTTP status and media type) is returned next to the decapsulated one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import aiohttp

from privproc.attestation.appraisal import SnpPolicy
from privproc.attestation.ratls import AppraisalVerifier
from privproc.attestation.ratls_session import RaTlsClient
from privproc.crypto import blindrsa
from privproc.wire import bhttp, ohttp
from privproc.wire import privacypass as pp
from privproc.wire.session import SESSION_HEADER
from tests.livestack import Stack


@dataclass
class Answer:
    """One exchange as the relay saw it (status, media type) and as the client reads it."""

    relay_status: int
    relay_media_type: str
    inner: bhttp.Response | None


async def send(stack: Stack, request: bhttp.Request) -> Answer:
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.file.cdn.keys_url) as resp:
            config, _ = ohttp.select_key_config(ohttp.decode_key_config_list(await resp.read()))
        payload, context = ohttp.encapsulate_request(config, bhttp.encode_request(request))
        async with session.post(
            stack.file.relay.ohttp_url, data=payload, headers={"Content-Type": ohttp.MEDIA_TYPE_REQUEST}
        ) as resp:
            body = await resp.read()
            status, media_type = resp.status, resp.content_type
    inner = None
    if status == 200 and media_type == ohttp.MEDIA_TYPE_RESPONSE:
        inner = bhttp.decode_response(context.decapsulate_response(body))
    return Answer(status, media_type, inner)


def open_request(stack: Stack, records: bytes, authorization: str | None) -> bhttp.Request:
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/octet-stream"),)
    if authorization is not None:
        headers += (("authorization", authorization),)
    return bhttp.Request(
        "POST", "https", stack.file.gateway.origin, "/v1/sessions", headers=headers, content=records
    )


def continue_request(stack: Stack, handle: str, records: bytes) -> bhttp.Request:
    return bhttp.Request(
        "POST",
        "https",
        stack.file.gateway.origin,
        "/v1/sessions/" + handle,
        headers=(("content-type", "application/octet-stream"),),
        content=records,
    )


async def type2_challenge(stack: Stack) -> pp.Challenge:
    """The gateway's type 0x0002 challenge, from the 401 to a request without a token."""
    answer = await send(stack, open_request(stack, b"", None))
    assert answer.inner is not None and answer.inner.status == 401
    [challenge] = [
        c
        for c in pp.parse_www_authenticate(answer.inner.header("www-authenticate") or "")
        if c.challenge.token_type == 2
    ]
    return challenge


def mint(stack: Stack, challenge: pp.Challenge, count: int) -> list[str]:
    """``count`` tokens for ``challenge`` from the stack's issuer (the demo account), as headers."""
    assert stack.acs is not None and stack.file.demo_account is not None
    public = blindrsa.public_key_from_spki_pss(challenge.token_key)
    key_id = pp.token_key_id(challenge.token_key)
    variant = blindrsa.Variant.SHA384_PSS_DETERMINISTIC
    inputs, requests, states = [], [], []
    for _ in range(count):
        token_input = pp.token_authenticator_input(
            2, secrets.token_bytes(32), challenge.challenge.digest(), key_id
        )
        blinded, state = blindrsa.blind(public, token_input, variant)
        inputs.append(token_input)
        states.append(state)
        requests.append(pp.TokenRequest(2, pp.truncated_key_id(key_id), blinded).encode())
    responses = stack.acs.issuer.issue(stack.file.demo_account.credential, requests, stack.acs.clock())
    return [
        pp.authorization_header(
            pp.Token.decode(token_input + blindrsa.finalize(public, token_input, response, state, variant))
        )
        for token_input, response, state in zip(inputs, responses, states, strict=True)
    ]


def client_hello(stack: Stack) -> bytes:
    """A fresh, genuine ClientHello: it makes a predictor open a session."""
    assert stack.file.development_root is not None
    verifier = AppraisalVerifier(SnpPolicy().with_development_root(stack.file.development_root))
    return RaTlsClient(verifier).start()


def handle_of(answer: Answer) -> str:
    assert answer.inner is not None and answer.inner.status == 201, answer
    return answer.inner.header(SESSION_HEADER) or ""
