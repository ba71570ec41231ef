"""A standard RFC 9458 client, knowing nothing of privproc, against the real gateway and relay."""

from __future__ import annotations

import asyncio
import json

from tests.interop import standard_ohttp_client as std
from tests.livestack import Stack


async def test_standard_client_via_relay_with_keys_from_cdn(stack: Stack) -> None:
    status, headers, content = await asyncio.to_thread(
        std.request,
        stack.file.cdn.keys_url,
        stack.file.relay.ohttp_url,
        "GET",
        "privproc.local",
        "/v1/health",
    )
    assert status == 200
    assert ("content-type", "application/json") in headers
    assert json.loads(content)["status"] == "serving"


async def test_standard_client_direct_to_gateway_rfc9540_resource(stack: Stack) -> None:
    url = stack.file.gateway.ohttp_url  # keys and requests at /.well-known/ohttp-gateway
    status, _, content = await asyncio.to_thread(std.request, url, url, "GET", "privproc.local", "/v1/health")
    assert status == 200 and json.loads(content)["service"] == "privproc-gateway"


async def test_standard_client_sees_not_found_and_misdirected(stack: Stack) -> None:
    relay, keys = stack.file.relay.ohttp_url, stack.file.cdn.keys_url
    status, _, _ = await asyncio.to_thread(std.request, keys, relay, "GET", "privproc.local", "/missing")
    assert status == 404
    status, _, _ = await asyncio.to_thread(std.request, keys, relay, "GET", "example.org", "/v1/health")
    assert status == 421


async def test_standard_privacy_pass_client_obtains_a_token_the_gateway_accepts(stack: Stack) -> None:
    """RFC 9578 client, knowing only the challenge and the issuer URLs; RFC 9458 client as transport."""
    from tests.interop import standard_privacypass_client as pp_std

    assert stack.file.acs is not None and stack.file.demo_account is not None
    keys, relay = stack.file.cdn.keys_url, stack.file.relay.ohttp_url

    def session(headers: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str]], bytes]:
        return std.request(keys, relay, "POST", "privproc.local", "/v1/sessions", headers=headers)

    status, headers, _ = await asyncio.to_thread(session, [])
    assert status == 401
    challenge_header = dict(headers)["www-authenticate"]
    [challenge] = [c for c in pp_std.parse_www_authenticate(challenge_header) if c.token_type == 2]
    directory = await asyncio.to_thread(pp_std.fetch_issuer_directory, stack.file.acs.issuer_directory_url)
    request_url = pp_std.issuer_request_url(directory, stack.file.acs.issuer_directory_url)
    token = await asyncio.to_thread(
        pp_std.issue_token, challenge, request_url, stack.file.demo_account.credential
    )
    authorization = [("authorization", pp_std.authorization_header(token))]
    status, _, content = await asyncio.to_thread(session, authorization)
    assert status == 503 and json.loads(content)["title"] == "no predictor available"  # accepted
    # Not spent (no predictor took the session); spent once one would have, then refused.
    await stack.gateway.redeemer.redeem(dict(authorization)["authorization"])
    status, _, _ = await asyncio.to_thread(session, authorization)
    assert status == 401  # spent
    # Without an account credential the issuer refuses.
    try:
        await asyncio.to_thread(pp_std.issue_token, challenge, request_url, None)
    except pp_std.PrivacyPassClientError as err:
        assert err.status == 401
    else:
        raise AssertionError("issuance without a credential succeeded")
