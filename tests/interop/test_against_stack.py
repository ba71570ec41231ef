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
