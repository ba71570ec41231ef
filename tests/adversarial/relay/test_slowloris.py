"""Issue 11, item 8: slowloris against the relay's ingress and the other HTTP fronts.

Idle, header-trickle and slow-body connections used to stay open for minutes (aiohttp's
default keep-alive is an hour), and 140 half-open requests exhausted a relay with 128
descriptors. Every front now closes them by its read deadlines and caps connections per
address (and in total) at accept time. Real sockets on loopback; short deadlines set
through config; the tests assert on closure (and on the deadline that closed it), never
on how long it took — the waits are only bounds on a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from privproc.cdn.server import CdnConfig, CdnService
from privproc.runtime.http import HttpLimits
from privproc.wire import bhttp, ohttp
from tests.livestack import Stack, cdn_publishers, start_stack, stop_stack

SHORT = 0.4
LONG = 60.0
#: A bound on a hang, not a timing assertion: closure must happen, however long it takes.
HANG = 15.0
HEALTH = bhttp.Request("GET", "https", "privproc.local", "/v1/health")

HEAD_ONLY = HttpLimits(head_timeout_seconds=SHORT, body_timeout_seconds=LONG, idle_timeout_seconds=LONG)
BODY_ONLY = HttpLimits(head_timeout_seconds=LONG, body_timeout_seconds=SHORT, idle_timeout_seconds=LONG)
IDLE_ONLY = HttpLimits(head_timeout_seconds=LONG, body_timeout_seconds=LONG, idle_timeout_seconds=SHORT)


@contextlib.asynccontextmanager
async def _stack(tmp_path: Path, limits: HttpLimits) -> AsyncIterator[Stack]:
    stack = await start_stack(
        tmp_path,
        with_acs=True,
        with_ledger=False,
        relay_via_http=True,
        relay_config={"http_limits": limits},
        gateway_config={"http_limits": limits},
        acs_config={"http_limits": limits},
    )
    try:
        yield stack
    finally:
        await stop_stack(stack)


def _host_port(url: str) -> tuple[str, int]:
    parsed = URL(url)
    assert parsed.host is not None and parsed.port is not None
    return parsed.host, parsed.port


def _fronts(stack: Stack) -> dict[str, tuple[str, int]]:
    assert stack.file.acs is not None
    return {
        "relay": _host_port(stack.file.relay.ohttp_url),
        "gateway": _host_port(stack.file.gateway.ohttp_url),
        "acs": _host_port(stack.file.acs.token_request_url),
    }


async def _connect(
    address: tuple[str, int], local: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*address, local_addr=(local, 0))


async def _wait_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent before closing; fails if it does not close (a hang bound)."""
    received = b""

    async def drain() -> None:
        nonlocal received
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(4096):
                received += chunk

    await asyncio.wait_for(drain(), HANG)
    return received


async def _trickle(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    """Send ``data`` one byte at a time, then keep dribbling spaces: never finishing."""
    with contextlib.suppress(ConnectionError, OSError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(interval)
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(interval)


def _timeouts(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    found = []
    for record in caplog.records:
        if record.name != "privproc.events":
            continue
        line = json.loads(record.getMessage())
        if line["event"] == "http.connection_timeout":
            found.append((line["service"], line["phase"]))
    return found


async def _private_health(stack: Stack, session: aiohttp.ClientSession) -> int:
    async with session.get(stack.file.cdn.keys_url) as resp:
        config = ohttp.select_key_config(ohttp.decode_key_config_list(await resp.read()))[0]
    payload, context = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
    headers = {"Content-Type": ohttp.MEDIA_TYPE_REQUEST}
    async with session.post(stack.file.relay.ohttp_url, data=payload, headers=headers) as resp:
        assert resp.status == 200
        answer = await resp.read()
    return bhttp.decode_response(context.decapsulate_response(answer)).status


async def test_idle_connections_are_closed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with _stack(tmp_path, IDLE_ONLY) as stack:
        with caplog.at_level(logging.DEBUG, logger="privproc.events"):
            connections = [await _connect(address) for address in _fronts(stack).values()]
            for reader, _ in connections:
                assert await _wait_closed(reader) == b""
            for _, writer in connections:
                writer.close()
    assert sorted(_timeouts(caplog)) == [("acs", "idle"), ("gateway", "idle"), ("relay", "idle")]


async def test_header_trickle_is_closed_by_the_head_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    head = b"POST /ohttp-relay HTTP/1.1\r\nHost: relay\r\nX-Padding: "
    async with _stack(tmp_path, HEAD_ONLY) as stack:
        with caplog.at_level(logging.DEBUG, logger="privproc.events"):
            for address in _fronts(stack).values():
                reader, writer = await _connect(address)
                trickler = asyncio.create_task(_trickle(writer, head, SHORT / 8))
                try:
                    # Bytes keep coming, so no idle timer fires: only the head deadline can close it.
                    await _wait_closed(reader)
                finally:
                    trickler.cancel()
                    writer.close()
    assert sorted(_timeouts(caplog)) == [("acs", "head"), ("gateway", "head"), ("relay", "head")]


async def test_slow_body_is_closed_by_the_body_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with _stack(tmp_path, BODY_ONLY) as stack:
        with caplog.at_level(logging.DEBUG, logger="privproc.events"):
            for name, address in _fronts(stack).items():
                path = {
                    "relay": "/ohttp-relay",
                    "gateway": "/.well-known/ohttp-gateway",
                    "acs": "/token-request",
                }
                head = (
                    f"POST {path[name]} HTTP/1.1\r\nHost: x\r\nContent-Type: {ohttp.MEDIA_TYPE_REQUEST}\r\n"
                    "Content-Length: 4000\r\n\r\n"
                ).encode()
                reader, writer = await _connect(address)
                writer.write(head)
                trickler = asyncio.create_task(_trickle(writer, b"x" * 4000, SHORT / 8))
                try:
                    await _wait_closed(reader)
                finally:
                    trickler.cancel()
                    writer.close()
    assert sorted(_timeouts(caplog)) == [("acs", "body"), ("gateway", "body"), ("relay", "body")]


async def test_per_address_cap_refuses_at_accept_while_others_are_served(tmp_path: Path) -> None:
    limits = HttpLimits(max_connections_per_address=3, idle_timeout_seconds=LONG)
    async with _stack(tmp_path, limits) as stack:
        relay = _fronts(stack)["relay"]
        held = [await _connect(relay) for _ in range(3)]
        reader, writer = await _connect(relay)
        # The fourth from the same address is refused before any request: a fixed 503, then closed.
        assert (await _wait_closed(reader)).startswith(b"HTTP/1.1 503 ")
        writer.close()
        # Another address is still served, a real private request end to end.
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        limiter = stack.relay.http.connections
        async with aiohttp.ClientSession(connector=connector) as session:
            assert await _private_health(stack, session) == 200
            assert len(limiter) == 2  # two addresses hold connections: keyed by HMAC, no address kept
        for _, held_writer in held:
            held_writer.close()
        for _ in range(int(HANG / 0.05)):
            if limiter.total == 0:
                break
            await asyncio.sleep(0.05)
        # Counts that reach zero are dropped: nothing about a gone client stays.
        assert limiter.total == 0 and len(limiter) == 0
        # And the first address is served again.
        async with aiohttp.ClientSession() as session:
            assert await _private_health(stack, session) == 200


async def test_global_cap_refuses_at_accept(tmp_path: Path) -> None:
    limits = HttpLimits(max_connections=4, max_connections_per_address=16, idle_timeout_seconds=LONG)
    async with _stack(tmp_path, limits) as stack:
        acs = _fronts(stack)["acs"]
        held = [await _connect(acs, f"127.0.0.{i + 2}") for i in range(4)]
        reader, writer = await _connect(acs, "127.0.0.9")
        assert (await _wait_closed(reader)).startswith(b"HTTP/1.1 503 ")
        writer.close()
        for _, held_writer in held:
            held_writer.close()


async def test_normal_requests_still_work_under_tight_deadlines(tmp_path: Path) -> None:
    limits = HttpLimits(head_timeout_seconds=SHORT, body_timeout_seconds=SHORT, idle_timeout_seconds=SHORT)
    async with _stack(tmp_path, limits) as stack, aiohttp.ClientSession() as session:
        for _ in range(3):  # keep-alive: one connection, several requests
            assert await _private_health(stack, session) == 200


async def test_the_cdn_front_has_the_same_guard(tmp_path: Path) -> None:
    credential = tmp_path / "cdn-gateway"
    credential.write_text("test-gateway-credential-0123456789")
    cdn = CdnService(CdnConfig(publishers=cdn_publishers({"gateway": credential}), http_limits=HEAD_ONLY))
    endpoints = await cdn.start()
    try:
        reader, writer = await _connect(_host_port(str(endpoints["http_url"]) + "/"))
        trickler = asyncio.create_task(_trickle(writer, b"GET /ohttp-keys HTTP/1.1\r\nX: ", SHORT / 8))
        try:
            await _wait_closed(reader)
        finally:
            trickler.cancel()
            writer.close()
    finally:
        await cdn.stop()
