"""Attack (interop): privproc's Privacy Pass fields were base64url without padding.

RFC 9577 §2.1 says of the ``challenge`` parameter "This document follows the
default padding behavior described in Section 3.2 of [RFC4648], so the
base64url value MUST include padding", the same of ``token-key`` and (§2.2)
of the ``token`` credential; RFC 9578 §4 says the issuer directory's
``token-key`` is "The base64url encoding of the Public Key ..., including
padding". A client written to the RFC refuses unpadded values, so it could
not answer privproc's challenge (the P-384 key of type 0x0001 is 49 bytes:
its base64url needs padding).

The decoder below is written from the RFC text alone (padding required),
independently of privproc; it must read what the live gateway, CDN and ACS
send. privproc itself still accepts unpadded input, and RFC 9577's vectors
still pass.
"""

from __future__ import annotations

import base64
import binascii
import re

import aiohttp
import pytest

from privproc.client import OhttpClient, TokenWallet
from privproc.wire import privacypass as pp
from tests.livestack import Stack
from tests.support import load_vector

_PARAM = re.compile(r'([A-Za-z0-9-]+)="([^"]*)"')


class StrictError(Exception):
    pass


def strict_b64url(value: str) -> bytes:
    """RFC 4648 §5 base64url that MUST include padding (RFC 9577 §2.1, §2.2; RFC 9578 §4)."""
    if len(value) % 4 or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", value):
        raise StrictError("not padded base64url")
    try:
        return base64.b64decode(value, altchars=b"-_", validate=True)
    except binascii.Error as err:
        raise StrictError("not base64url") from err


def strict_challenges(header: str) -> list[tuple[bytes, bytes]]:
    """(TokenChallenge, token-key) of each ``PrivateToken`` challenge, decoded strictly."""
    out = []
    for part in re.split(r"(?:^|,\s*)PrivateToken\s+", header)[1:]:
        params = dict(_PARAM.findall(part))
        out.append((strict_b64url(params["challenge"]), strict_b64url(params["token-key"])))
    return out


def test_the_strict_decoder_refuses_unpadded_values() -> None:
    assert strict_b64url("AA==") == b"\x00"
    for bad in ("AA", "AAA", "AA=", "+/8="):
        with pytest.raises(StrictError):
            strict_b64url(bad)


async def test_a_strict_rfc_client_reads_the_gateways_challenges(stack: Stack) -> None:
    async with OhttpClient.from_stack(stack.file) as client:
        response, _ = await client.request(client._session_request(b"", None))
    assert response.status == 401
    header = response.header("www-authenticate") or ""
    challenges = strict_challenges(header)
    assert {pp.TokenChallenge.decode(c).token_type for c, _ in challenges} == {1, 2}
    assert any(len(key) % 3 for _, key in challenges)  # a value that needs padding was checked
    for challenge, key in challenges:
        assert pp.TokenChallenge.decode(challenge).issuer_name == "issuer.privproc.local"
        assert key


async def test_a_strict_rfc_client_reads_the_issuer_directories(stack: Stack) -> None:
    assert stack.file.acs is not None
    async with aiohttp.ClientSession() as session:
        for url in (stack.file.cdn.issuer_directory_url, stack.file.acs.issuer_directory_url):
            async with session.get(url, headers={"Accept": pp.MEDIA_TYPE_ISSUER_DIRECTORY}) as resp:
                assert resp.status == 200
                document = await resp.json(content_type=None)
            keys = [strict_b64url(entry["token-key"]) for entry in document["token-keys"]]
            assert keys and any(len(key) % 3 for key in keys)


def test_the_authorization_privproc_sends_is_padded() -> None:
    # Type 0x0001 tokens are 146 bytes: their base64url ends in padding.
    token = pp.Token(pp.TOKEN_TYPE_VOPRF, bytes(32), bytes(32), bytes(32), b"\x05" * 48)
    header = pp.authorization_header(token)
    value = _PARAM.findall(header)[0][1]
    assert value.endswith("=") and strict_b64url(value) == token.encode()


async def test_privproc_still_accepts_unpadded_values(stack: Stack) -> None:
    async with OhttpClient.from_stack(stack.file) as client:
        response, _ = await client.request(client._session_request(b"", None))
        header = response.header("www-authenticate") or ""
        unpadded = re.sub(r'=+"(?=\s*,|\s*$)', '"', header)  # padding before each closing quote
        assert unpadded != header
        assert pp.parse_www_authenticate(unpadded) == pp.parse_www_authenticate(header)
        challenge = next(
            c for c in pp.parse_www_authenticate(header) if c.challenge.token_type == pp.TOKEN_TYPE_VOPRF
        )
        # A genuine type 0x0001 token, sent without its padding: the gateway takes it.
        assert stack.file.acs is not None and stack.file.demo_account is not None
        wallet = TokenWallet(
            acs_target=stack.file.acs.grpc,
            credential=stack.file.demo_account.credential,
            directory_url=stack.file.cdn.issuer_directory_url,
            issuer_name=stack.file.acs.issuer_name,
            origin=stack.file.gateway.origin,
            batch_size=1,
        )
        try:
            await wallet.check(challenge)
            token = (await wallet._fetch(challenge, 1))[0]
        finally:
            await wallet.close()
        bare = pp.b64url_encode(token.encode()).rstrip("=")
        assert len(bare) % 4  # really unpadded
        assert pp.parse_authorization(f'PrivateToken token="{bare}"') == token
        accepted, _ = await client.request(client._session_request(b"", f'PrivateToken token="{bare}"'))
    assert accepted.status != 401


def test_rfc9577_header_vectors_parse_and_reencode_as_the_rfc_writes_them() -> None:
    from tests.unit.test_privacypass import _header_vectors

    vectors = [(header, expected) for header, expected in _header_vectors() if header]
    assert vectors
    for header, _ in vectors:
        # The RFC's own headers pass the strict decoder (it is the RFC's rule) ...
        written = {
            name: value for name, value in _PARAM.findall(header) if name in ("challenge", "token-key")
        }
        assert all(strict_b64url(value) is not None for value in written.values())
        # ... and privproc writes the values it parsed exactly as the RFC does.
        for challenge in pp.parse_www_authenticate(header):
            assert pp.b64url_encode(challenge.challenge.encode()) in header
            assert pp.b64url_encode(challenge.token_key) in header


def test_rfc9577_redemption_vectors_still_pass() -> None:
    vectors = [
        v for v in load_vector("rfc9577-testvectors.json")["challenge_redemption"] if "issuer_name" in v
    ]
    assert vectors
    for vector in vectors:
        origins = bytes.fromhex(vector["origin_info"]).decode()
        challenge = pp.TokenChallenge(
            int(vector["token_type"], 16),
            bytes.fromhex(vector["issuer_name"]).decode(),
            bytes.fromhex(vector["redemption_context"]),
            tuple(origins.split(",")) if origins else (),
        )
        encoded = pp.b64url_encode(challenge.encode())
        assert strict_b64url(encoded) == challenge.encode()
        assert pp.TokenChallenge.decode(pp.b64url_decode(encoded)) == challenge
        got = pp.token_authenticator_input(
            challenge.token_type,
            bytes.fromhex(vector["nonce"]),
            challenge.digest(),
            bytes.fromhex(vector["token_key_id"]),
        )
        assert got == bytes.fromhex(vector["token_authenticator_input"])
