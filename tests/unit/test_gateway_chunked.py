"""The gateway's chunked OHTTP path without sockets: any split of the request gives the same answer,
a request that does not open raises its typed error, and an answer cut after it started reaches
its reader truncated."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privproc.errors import LimitExceededError, UpstreamError
from privproc.gateway.core import GatewayCore
from privproc.gateway.keys import KeySchedule
from privproc.gateway.routes import Router, health_route
from privproc.runtime.http import HttpServer, make_app, stream_answer
from privproc.runtime.ohttp_transport import HttpTransport
from privproc.wire import bhttp, ohttp_chunked

HEALTH = bhttp.Request("GET", "https", "privproc.local", "/v1/health")


def _core(max_request_bytes: int = 256 << 10) -> GatewayCore:
    router = Router()
    router.add("GET", "/v1/health", health_route("test"))
    return GatewayCore(
        KeySchedule(rotation=3600, grace=60, now=0), router, max_request_bytes=max_request_bytes
    )


async def _pieces(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    edges = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in itertools.pairwise(edges):
        if end > start:
            yield data[start:end]


async def _answer(
    core: GatewayCore, body: bytes, cuts: list[int], sealer: ohttp_chunked.RequestSealer
) -> bhttp.Response:
    answer = await core.handle_chunked(_pieces(body, cuts))
    opener = sealer.response_opener()
    decoder = bhttp.MessageDecoder(response=True)
    async with contextlib.aclosing(answer):
        async for piece in answer:
            for chunk in opener.feed(piece):
                decoder.receive_data(chunk.data)
    for chunk in opener.feed_eof():
        decoder.receive_data(chunk.data)
    decoder.receive_eof()
    events = decoder.events()
    head = events[0]
    assert isinstance(head, bhttp.ResponseHead) and isinstance(events[-1], bhttp.EndOfMessage)
    content = b"".join(e.data for e in events if isinstance(e, bhttp.ContentChunk))
    return bhttp.Response(head.status, head.headers, content)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inner_chunk=st.integers(min_value=1, max_value=64),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12),
)
def test_any_split_of_a_chunked_request_gets_the_same_answer(inner_chunk: int, cuts: list[int]) -> None:
    core = _core()
    config = core.schedule.current.key.config
    sealer = ohttp_chunked.RequestSealer(config)
    encoded = bhttp.encode_request(HEALTH, indeterminate=True)
    pieces = [encoded[i : i + inner_chunk] for i in range(0, len(encoded), inner_chunk)]
    body = b"".join(sealer.seal(p) for p in pieces[:-1]) + sealer.finish(pieces[-1])
    response = asyncio.run(_answer(core, body, cuts, sealer))
    assert response.status == 200 and json.loads(response.content)["status"] == "serving"


async def test_a_malformed_inner_request_is_answered_encapsulated() -> None:
    core = _core()
    sealer = ohttp_chunked.RequestSealer(core.schedule.current.key.config)
    body = sealer.finish(b"\x02not binary http")
    assert (await _answer(core, body, [], sealer)).status == 400


@pytest.mark.parametrize("cut", ["no_final", "mid_chunk", "over_limit", "wrong_key"])
async def test_a_request_that_does_not_open_raises_its_typed_error(cut: str) -> None:
    core = _core(max_request_bytes=4096)
    config = core.schedule.current.key.config
    sealer = ohttp_chunked.RequestSealer(config)
    encoded = bhttp.encode_request(HEALTH, indeterminate=True)
    error: type[Exception] = ohttp_chunked.ChunkedTruncatedError
    if cut == "no_final":
        body = sealer.seal(encoded)
    elif cut == "mid_chunk":
        body = sealer.seal(encoded)[:-3]
    elif cut == "over_limit":
        body = sealer.seal(b"\x00" * 5000)
        error = LimitExceededError
    else:
        other = KeySchedule(rotation=3600, grace=60, now=0).current.key.config
        body = ohttp_chunked.RequestSealer(other).finish(encoded)
        error = ohttp_chunked.ChunkedKeyRejectedError
    with pytest.raises(error):
        await core.handle_chunked(_pieces(body, [7, 100]))


async def test_an_answer_cut_after_it_started_reaches_its_reader_truncated() -> None:
    """The gateway's or the relay's upstream fails mid-answer: no status is left to give, so the
    connection is cut without the chunked coding's end, and the reader fails closed."""

    async def failing() -> AsyncIterator[bytes]:
        yield b"second piece"
        raise UpstreamError("upstream unavailable")

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return await stream_answer(request, "relay", ohttp_chunked.MEDIA_TYPE_RESPONSE, b"first", failing())

    app = make_app("relay", 1 << 16)
    app.router.add_post("/", handler)
    server = HttpServer(app)
    port = await server.start("127.0.0.1", 0)
    transport = HttpTransport(f"http://127.0.0.1:{port}/")

    async def body() -> AsyncIterator[bytes]:
        yield b"request"

    received = bytearray()
    try:
        with pytest.raises(UpstreamError):
            async with contextlib.aclosing(transport.stream(body())) as answer:
                async for piece in answer:
                    received += piece
        # A plain HTTP client sees the same: the body ends without its last chunk.
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/", data=b"x") as resp,
        ):
            assert resp.status == 200 and resp.headers["Incremental"] == "?1"
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    finally:
        await transport.close()
        await server.stop()
    assert b"firstsecond piece".startswith(bytes(received))  # what was sent before the cut, at most
