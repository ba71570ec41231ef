"""The relay's deadlines on a streamed answer (issue 15, item 3): idle, never total.

A gateway that keeps sending (as a live stream does: a padding frame every second) is relayed for
longer than the relay's whole-message timeout; one that goes silent for the idle timeout is cut,
and its reader sees the answer truncated; a whole RFC 9458 message keeps its total timeout. The
gateway here is a plain HTTP server on loopback, standing for any RFC 9458 gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from privproc.errors import UpstreamError
from privproc.relay.policy import RateLimiter
from privproc.relay.server import RELAY_PATH, RelayCore, build_http_app
from privproc.runtime.http import HttpServer
from privproc.runtime.ohttp_transport import HttpTransport
from privproc.wire import ohttp, ohttp_chunked

TOTAL = 0.3
IDLE = 0.6


def _gateway(pauses: list[float]) -> web.Application:
    """Answers a chunked request with one piece after each pause, and a whole one after the first."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.content_type == ohttp.MEDIA_TYPE_REQUEST:
            await asyncio.sleep(pauses[0])
            return web.Response(body=b"whole", content_type=ohttp.MEDIA_TYPE_RESPONSE)
        response = web.StreamResponse(headers={"Content-Type": ohttp_chunked.MEDIA_TYPE_RESPONSE})
        await response.prepare(request)
        for pause in pauses:
            await asyncio.sleep(pause)
            await response.write(b"piece")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/gateway", answer)
    return app


@contextlib.asynccontextmanager
async def _relayed(pauses: list[float]) -> AsyncIterator[HttpTransport]:
    """A client transport to a relay (total TOTAL, idle IDLE) in front of the gateway above."""
    gateway = HttpServer(_gateway(pauses))
    gateway_port = await gateway.start("127.0.0.1", 0)
    forwarder = HttpTransport(f"http://127.0.0.1:{gateway_port}/gateway", timeout=TOTAL, idle=IDLE)
    core = RelayCore(forwarder, RateLimiter(rate=100, burst=100), streams_whole_messages=True)
    relay = HttpServer(build_http_app(core, 1 << 16, IDLE))
    relay_port = await relay.start("127.0.0.1", 0)
    client = HttpTransport(f"http://127.0.0.1:{relay_port}{RELAY_PATH}", timeout=10, idle=10)
    try:
        yield client
    finally:
        await client.close()
        await relay.stop()
        await forwarder.close()
        await gateway.stop()


async def _body() -> AsyncIterator[bytes]:
    yield b"sealed request"


async def _stream(client: HttpTransport) -> bytes:
    received = bytearray()
    async with contextlib.aclosing(client.stream(_body())) as answer:
        async for piece in answer:
            received += piece
    return bytes(received)


async def test_a_stream_that_keeps_sending_outlives_the_total_timeout() -> None:
    pauses = [0.1] * 8  # 0.8 s in all, well past TOTAL, never IDLE without a byte
    async with _relayed(pauses) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await _stream(client) == b"piece" * len(pauses)
        assert loop.time() - started > TOTAL * 2


async def test_a_stream_silent_for_the_idle_timeout_is_cut_and_reads_truncated() -> None:
    async with _relayed([0.0, IDLE * 3, 0.0]) as client:
        received = bytearray()
        with pytest.raises(UpstreamError):
            async with contextlib.aclosing(client.stream(_body())) as answer:
                async for piece in answer:
                    received += piece
        assert bytes(received) == b"piece"  # what came before the silence, and no end


async def test_a_whole_message_keeps_its_total_timeout() -> None:
    async with _relayed([TOTAL * 3]) as client:
        with pytest.raises(UpstreamError):
            await client.send(b"sealed request")
    async with _relayed([0.0]) as client:
        assert await client.send(b"sealed request") == b"whole"
