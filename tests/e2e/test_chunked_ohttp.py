"""Chunked OHTTP (issue 15, item 2) through the real relay and gateway, over both of the relay's
upstreams: private requests end to end, each hop forwarding as bytes arrive (shown by the order of
events, not by timing), limits and idle deadlines counted as the stream flows, and a relay that
truncates, reorders or splices the answer makes the client fail closed with nothing delivered
past the tampered chunk."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from privproc.client import ohttp_client
from privproc.client.private import Chat, ChatMessage, PrivateProcessingClient
from privproc.errors import PrivprocError
from privproc.runtime.ohttp_transport import Transport
from privproc.stackfile import StackFile
from privproc.v1 import predictor_pb2
from privproc.wire import bhttp, ohttp, ohttp_chunked, varint
from tests.livestack import Stack, start_stack, stop_stack

HEALTH = bhttp.Request("GET", "https", "privproc.local", "/v1/health")
CHAT = Chat(
    "c1",
    "Team",
    (
        ChatMessage("ana", "2026-11-25T09:00:00Z", "The release moves to Thursday."),
        ChatMessage("bo", "2026-11-25T09:05:00Z", "Then the demo is on Friday."),
    ),
)
#: A draft whose answer spans several response chunks (2^14 bytes of plaintext each).
LONG_DRAFT = "long answer"
LONG_TEXT = "".join(f"line {i} of a long answer. " for i in range(1500))
CHUNK = ohttp_chunked.DEFAULT_MAX_CHUNK
NONCE = 16  # the response nonce: max(Nn, Nk) for AES-128-GCM
HEADER = 7 + 32  # key id, KEM, KDF and AEAD ids, and enc for X25519


class Processor:
    """Answers drafts in upper case, and one draft with an answer of several chunks."""

    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        if request.task == predictor_pb2.TASK_SUMMARIZE:
            return predictor_pb2.ProcessResponse(text=f"{len(request.messages)} messages", model_id="m")
        text = LONG_TEXT if request.draft == LONG_DRAFT else request.draft.upper()
        return predictor_pb2.ProcessResponse(text=text, model_id="m")


UPSTREAMS = pytest.mark.parametrize("relay_via_http", [False, True], ids=["grpc-upstream", "http-upstream"])


@contextlib.asynccontextmanager
async def _stack(tmp_path: Path, **options: Any) -> AsyncIterator[Stack]:
    stack = await start_stack(tmp_path, **options)
    try:
        yield stack
    finally:
        await stop_stack(stack)


async def _client(file: StackFile, **options: Any) -> PrivateProcessingClient:
    client = PrivateProcessingClient.from_stack(file, refill=None, **options)
    await client.wallet.refill(wait_quiet=False)
    return client


def _chunks(body: bytes, prefix: int) -> tuple[list[bytes], bytes]:
    """A chunked body's sealed chunks and its final chunk, read by its framing alone (as a relay can)."""
    chunks: list[bytes] = []
    offset = prefix
    while True:
        length, offset = varint.decode(body, offset)
        if length == 0:
            return chunks, body[offset:]
        chunks.append(body[offset : offset + length])
        offset += length


def _framed(prefix: bytes, chunks: list[bytes], final: bytes) -> bytes:
    return prefix + b"".join(varint.encode(len(c)) + c for c in chunks) + b"\x00" + final


@UPSTREAMS
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "rfc9458"])
async def test_private_requests_end_to_end(tmp_path: Path, relay_via_http: bool, chunked: bool) -> None:
    async with _stack(tmp_path, processor=Processor(), relay_via_http=relay_via_http) as stack:
        assert stack.cvm is not None
        client = await _client(stack.file, chunked=chunked)
        try:
            assert client.ohttp.chunked is chunked
            summary, receipt = await client.summarize(CHAT)
            long, _ = await client.suggest_rewrite(LONG_DRAFT)
        finally:
            await client.close()
        assert summary.text == "2 messages" and long.text == LONG_TEXT
        # The receipt is what it always was, however the bytes travelled.
        assert receipt.token_type == 2 and receipt.model_id == "m"
        assert receipt.measurement == stack.cvm.measurement.hex()
        assert receipt.measurement_log_index == stack.cvm.release_index
        assert receipt.ohttp_key_id == stack.gateway.core.schedule.current.key.config.key_id
        # What reached the gateway: chunked bodies (with Incremental: ?1 over HTTP) or whole ones.
        seen = stack.recorder.seen
        assert len(seen) == 5  # 401 challenge, session opened, answered; session opened, answered
        for received in seen:
            if relay_via_http:
                headers = {name.lower(): value for name, value in received.metadata}
                media_type = ohttp_chunked.MEDIA_TYPE_REQUEST if chunked else ohttp.MEDIA_TYPE_REQUEST
                assert headers["content-type"] == media_type
                assert ohttp_chunked.incremental_requested(headers.get("incremental")) is chunked
            elif chunked:
                chunks, final = _chunks(received.body, HEADER)
                assert len(final) >= 16 and all(len(c) > 16 for c in chunks)


# --- a relay that tampers with the answer -------------------------------------------------------


@dataclasses.dataclass
class Tampering:
    """An HTTP relay in front of the real one that rewrites answers of five chunks or more (a short
    answer streams as a head chunk, a chunk or two of records and the final chunk: untouched)."""

    attack: str
    previous: list[bytes] = dataclasses.field(default_factory=list)
    #: Index of the first chunk that no longer opens, in the answer tampered with.
    tampered: int | None = None

    def rewrite(self, answer: bytes) -> bytes:
        nonce, (chunks, final) = answer[:NONCE], _chunks(answer, NONCE)
        other, self.previous = self.previous, [*chunks, final]
        if len(chunks) < 4 or self.tampered is not None:
            return answer
        if self.attack == "drop-final":
            self.tampered = len(chunks)
            return nonce + b"".join(varint.encode(len(c)) + c for c in chunks)
        if self.attack == "cut":  # ends inside the second chunk
            self.tampered = 1
            return answer[: NONCE + 4 + len(chunks[0]) + 100]
        if self.attack == "reorder":
            self.tampered = 0
            return _framed(nonce, [chunks[1], chunks[0], *chunks[2:]], final)
        if self.attack == "splice":  # the second chunk comes from the previous answer
            self.tampered = 1
            return _framed(nonce, [chunks[0], other[0], *chunks[2:]], final)
        if self.attack == "unmark-final":  # the final chunk sent as an ordinary one, then an empty end
            self.tampered = len(chunks)
            return _framed(nonce, [*chunks, final], b"")
        if self.attack == "append":  # a chunk after the final one
            self.tampered = len(chunks)
            return answer + varint.encode(len(chunks[0])) + chunks[0]
        raise AssertionError(self.attack)


@contextlib.asynccontextmanager
async def _tampering_relay(relay_url: str, tampering: Tampering) -> AsyncIterator[str]:
    session = aiohttp.ClientSession()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Content-Type": request.content_type, "Incremental": "?1"}
        async with session.post(relay_url, data=body, headers=headers) as resp:
            answer, status, content_type = await resp.read(), resp.status, resp.content_type
        if status == 200 and content_type == ohttp_chunked.MEDIA_TYPE_RESPONSE:
            answer = tampering.rewrite(answer)
        return web.Response(status=status, body=answer, content_type=content_type)

    app = web.Application()
    app.router.add_post("/ohttp-relay", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/ohttp-relay"
    finally:
        await runner.cleanup()
        await session.close()


@pytest.mark.parametrize("attack", ["drop-final", "cut", "reorder", "splice", "unmark-final", "append"])
async def test_a_relay_that_tampers_with_the_answer_makes_the_client_fail_closed(
    tmp_path: Path, attack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the client hands on from each answer, chunk by chunk, as it authenticates.
    delivered: list[list[bhttp.Event]] = []
    openers: list[ohttp_chunked.ResponseOpener] = []  # one per answer
    opened = ohttp_client._opened

    def recording(
        opener: ohttp_chunked.ResponseOpener, decoder: bhttp.MessageDecoder
    ) -> Iterator[bhttp.Event]:
        if not any(known is opener for known in openers):
            openers.append(opener)
            delivered.append([])
        for event in opened(opener, decoder):
            delivered[-1].append(event)
            yield event

    monkeypatch.setattr(ohttp_client, "_opened", recording)
    tampering = Tampering(attack)
    async with (
        _stack(tmp_path, processor=Processor(), relay_via_http=True) as stack,
        _tampering_relay(stack.file.relay.ohttp_url, tampering) as url,
    ):
        file = dataclasses.replace(stack.file, relay=dataclasses.replace(stack.file.relay, ohttp_url=url))
        client = await _client(file)
        try:
            assert (await client.suggest_rewrite("short"))[0].text == "SHORT"  # untouched: few chunks
            with pytest.raises(PrivprocError):
                await client.suggest_rewrite(LONG_DRAFT)
        finally:
            await client.close()
    assert tampering.tampered is not None
    # Nothing past the tampered chunk was handed on: at most the plaintext of the chunks before it.
    content = sum(len(e.data) for e in delivered[-1] if isinstance(e, bhttp.ContentChunk))
    assert content <= tampering.tampered * CHUNK
    assert not any(isinstance(e, bhttp.EndOfMessage) for e in delivered[-1])


# --- each hop forwards as bytes arrive ----------------------------------------------------------


async def _keys(stack: Stack) -> ohttp.KeyConfig:
    async with aiohttp.ClientSession() as session, session.get(stack.file.cdn.keys_url) as resp:
        return ohttp.select_key_config(ohttp.decode_key_config_list(await resp.read()))[0]


class SplitAnswers:
    """The relay's upstream as the relay sees it, except that each answer comes in two reads, the
    second only once the client has received the first: a relay that held the answer back until it
    had more would wait forever."""

    def __init__(self, inner: Transport, client_has_first: asyncio.Event, split: int) -> None:
        self.inner = inner
        self.client_has_first = client_has_first
        self.split = split
        self.order: list[str] = []

    async def send(self, payload: bytes, *, timeout_seconds: float | None = None) -> bytes:
        return await self.inner.send(payload, timeout_seconds=timeout_seconds)

    async def stream(
        self, body: AsyncIterable[bytes], *, media_type: str = ohttp_chunked.MEDIA_TYPE_REQUEST
    ) -> AsyncGenerator[bytes, None]:
        async with contextlib.aclosing(self.inner.stream(body, media_type=media_type)) as answer:
            data = b"".join([piece async for piece in answer])
        self.order.append("relay read 1")
        yield data[: self.split]
        await asyncio.wait_for(self.client_has_first.wait(), 30)
        self.order.append("relay read 2")
        yield data[self.split :]

    async def close(self) -> None:
        await self.inner.close()


@UPSTREAMS
async def test_the_relay_forwards_each_way_before_the_message_is_whole(
    tmp_path: Path, relay_via_http: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _stack(tmp_path, relay_via_http=relay_via_http) as stack:
        config = await _keys(stack)
        sealer = ohttp_chunked.RequestSealer(config)
        encoded = bhttp.encode_request(HEALTH, indeterminate=True)
        first, rest = sealer.seal(encoded[:10]), sealer.finish(encoded[10:])
        order: list[str] = []

        # Request: the real gateway holds the first chunk before the client has made the second.
        gateway_has_first = asyncio.Event()
        handle_chunked = stack.gateway.core.handle_chunked

        async def observed(pieces: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
            async def tee() -> AsyncIterator[bytes]:
                received = 0
                async for piece in pieces:
                    received += len(piece)
                    if received >= len(first) and not gateway_has_first.is_set():
                        order.append("gateway has chunk 1")
                        gateway_has_first.set()
                    yield piece

            return await handle_chunked(tee())

        monkeypatch.setattr(stack.gateway.core, "handle_chunked", observed)

        async def body() -> AsyncIterator[bytes]:
            yield first
            await asyncio.wait_for(gateway_has_first.wait(), 30)
            order.append("client sends chunk 2")
            yield rest

        # Answer: the client has the first bytes before the relay reads the rest from upstream.
        client_has_first = asyncio.Event()
        split = NONCE + 10
        tap = SplitAnswers(stack.relay.core.forwarder, client_has_first, split)
        stack.relay.core.forwarder = tap
        headers = {"Content-Type": ohttp_chunked.MEDIA_TYPE_REQUEST, "Incremental": "?1"}
        received = bytearray()
        async with (
            aiohttp.ClientSession() as session,
            session.post(stack.file.relay.ohttp_url, data=body(), headers=headers) as resp,
        ):
            assert resp.status == 200 and resp.content_type == ohttp_chunked.MEDIA_TYPE_RESPONSE
            assert ohttp_chunked.incremental_requested(resp.headers.get("Incremental"))
            while piece := await resp.content.readany():
                received += piece
                if len(received) >= split and not client_has_first.is_set():
                    tap.order.append("client has the first bytes")
                    client_has_first.set()
        assert order == ["gateway has chunk 1", "client sends chunk 2"]
        assert tap.order == ["relay read 1", "client has the first bytes", "relay read 2"]
        opener = sealer.response_opener()
        chunks = opener.feed(bytes(received)) + opener.feed_eof()
        decoder = bhttp.MessageDecoder(response=True)
        for chunk in chunks:
            decoder.receive_data(chunk.data)
        decoder.receive_eof()
        events = decoder.events()
        assert isinstance(events[0], bhttp.ResponseHead) and events[0].status == 200
        content = b"".join(e.data for e in events if isinstance(e, bhttp.ContentChunk))
        assert json.loads(content)["status"] == "serving"


@UPSTREAMS
async def test_an_endless_request_is_cut_at_the_limit_not_buffered(
    tmp_path: Path, relay_via_http: bool
) -> None:
    limit = 8 << 10
    async with _stack(
        tmp_path, relay_via_http=relay_via_http, relay_config={"max_request_bytes": limit}
    ) as stack:
        sealer = ohttp_chunked.RequestSealer(await _keys(stack))
        sent = 0

        async def endless() -> AsyncIterator[bytes]:
            nonlocal sent
            while sent < 256 << 20:  # a bound for the test only: the relay must answer long before
                piece = sealer.seal(b"\x00" * 1024)
                sent += len(piece)
                yield piece
                await asyncio.sleep(0)

        headers = {"Content-Type": ohttp_chunked.MEDIA_TYPE_REQUEST}
        async with (
            aiohttp.ClientSession() as session,
            session.post(stack.file.relay.ohttp_url, data=endless(), headers=headers) as resp,
        ):
            assert resp.status == 413
            assert json.loads(await resp.read())["title"] == "too_large"
        assert sent < 256 << 20


@UPSTREAMS
async def test_streams_have_idle_deadlines_not_total_ones(tmp_path: Path, relay_via_http: bool) -> None:
    relay_config = {"idle_seconds": 1.0, "timeout_seconds": 0.2}
    async with _stack(tmp_path, relay_via_http=relay_via_http, relay_config=relay_config) as stack:
        config = await _keys(stack)
        encoded = bhttp.encode_request(HEALTH, indeterminate=True)
        headers = {"Content-Type": ohttp_chunked.MEDIA_TYPE_REQUEST, "Incremental": "?1"}

        # Bytes keep flowing for longer than the total timeout of a whole message: still answered.
        sealer = ohttp_chunked.RequestSealer(config)

        async def trickle() -> AsyncIterator[bytes]:
            for byte in encoded[:-1]:
                yield sealer.seal(bytes([byte]))
                await asyncio.sleep(0.02)
            yield sealer.finish(encoded[-1:])

        async with (
            aiohttp.ClientSession() as session,
            session.post(stack.file.relay.ohttp_url, data=trickle(), headers=headers) as resp,
        ):
            assert resp.status == 200
            answer = await resp.read()
        opener = sealer.response_opener()
        assert [c.final for c in opener.feed(answer) + opener.feed_eof()][-1]

        # A client that goes silent mid-request is answered once the idle deadline passes.
        silent = ohttp_chunked.RequestSealer(config)
        never = asyncio.Event()

        async def stalls() -> AsyncIterator[bytes]:
            yield silent.seal(encoded[:5])
            await never.wait()

        async with (
            aiohttp.ClientSession() as session,
            session.post(stack.file.relay.ohttp_url, data=stalls(), headers=headers) as resp,
        ):
            assert resp.status == 400
            assert json.loads(await resp.read())["title"] == "bad_request"


@UPSTREAMS
async def test_chunked_refusals_keep_their_status(tmp_path: Path, relay_via_http: bool) -> None:
    """A key the gateway does not have is RFC 9458's key problem, chunked or not, through the relay."""
    async with _stack(tmp_path, relay_via_http=relay_via_http) as stack:
        config = await _keys(stack)
        wrong = dataclasses.replace(config, key_id=(config.key_id + 1) % 256)
        body = ohttp_chunked.RequestSealer(wrong).finish(bhttp.encode_request(HEALTH, indeterminate=True))
        for url in (stack.file.relay.ohttp_url, stack.file.gateway.ohttp_url):
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    url, data=body, headers={"Content-Type": ohttp_chunked.MEDIA_TYPE_REQUEST}
                ) as resp,
            ):
                assert resp.status == 400
                assert json.loads(await resp.read())["type"] == ohttp.KEY_PROBLEM_TYPE
