"""Issue 11, item 3: the relay and the gateway must learn a size bucket, never a length.

The attack: watch the encapsulated bodies the relay forwards (and the TLS
records the gateway relays) while one device asks for rewrites of drafts of
1, 50, 300 and 900 characters, then gets a refusal, then an error. Before
padding, every request was the draft's length plus a constant, and answers,
refusals and errors had different sizes. Now every body has a size from the
documented set (docs/private-processing.md, "What the relay and the gateway see"), and all of
these exchanges look the same.

The bucket set is written out here, not imported, so that the test checks
the documented numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from pathlib import Path

import pytest

from privproc.client.private import PrivateProcessingClient
from privproc.errors import UpstreamError
from privproc.gateway.predictors import GrpcPredictorPool
from privproc.runtime.ohttp_transport import Transport
from privproc.v1 import predictor_pb2
from privproc.wire import ohttp_chunked, varint
from tests.livestack import Stack, start_stack, stop_stack

KIB = 1024
#: docs/private-processing.md: Binary HTTP messages inside OHTTP are 2, 3, 5, 9, 17, 33, 65 or 129 KiB.
MESSAGE_BUCKETS = tuple(((1 << k) + 1) * KIB for k in range(8))
#: RFC 9458, Section 4.3: key id (1), KEM, KDF and AEAD ids (2 each), enc (32 for X25519), AEAD tag (16).
REQUEST_OVERHEAD = 7 + 32 + 16
#: RFC 9458, Section 4.4: response_nonce (max(Nn, Nk) = 16 for AES-128-GCM), AEAD tag (16).
RESPONSE_OVERHEAD = 16 + 16
#: draft-ietf-ohai-chunked-ohttp: the same header (request) or nonce (response), then chunks of at
#: most 2^14 bytes of plaintext, each a varint length (4 bytes for 2^14 + 16) and a sealed chunk
#: (+16), the last one a zero length (1 byte) and a sealed chunk running to the end.
CHUNK = 1 << 14


def chunked_size(prefix: int, bucket: int) -> int:
    """The body size of a chunked message whose plaintext (one bucket) is cut into 2^14-byte chunks."""
    full, last = divmod(bucket, CHUNK)
    if last == 0:
        full, last = full - 1, CHUNK
    return prefix + full * (4 + CHUNK + 16) + 1 + last + 16


#: docs/private-processing.md: a frame inside the RA-TLS session is 1, 2, 4, ... 128 KiB.
FRAME_BUCKETS = tuple((1 << k) * KIB for k in range(8))
#: RFC 8446, Section 5.2: a record's length counts its inner content type (1) and AEAD tag (16, GCM).
TLS_RECORD_EXPANSION = 1 + 16
TLS_APPLICATION_DATA = 23

Exchange = tuple[int, int]  # (request body bytes, response body bytes) as the relay forwards them


class RelayTap:
    """Wraps the relay's forwarder: records the size of every body it carries, each way."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.seen: list[Exchange] = []
        #: The sealed chunk lengths of each chunked answer, by its size (as the relay can read them).
        self.streams: dict[int, list[int]] = {}

    async def send(self, payload: bytes, *, timeout_seconds: float | None = None) -> bytes:
        answer = await self.inner.send(payload, timeout_seconds=timeout_seconds)
        self.seen.append((len(payload), len(answer)))
        return answer

    async def stream(
        self, body: AsyncIterable[bytes], *, media_type: str = ohttp_chunked.MEDIA_TYPE_REQUEST
    ) -> AsyncGenerator[bytes, None]:
        sent = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal sent
            async for piece in body:
                sent += len(piece)
                yield piece

        got = b""
        async with contextlib.aclosing(self.inner.stream(counted(), media_type=media_type)) as answer:
            async for piece in answer:
                got += piece
                yield piece
        self.seen.append((sent, len(got)))
        self.streams[len(got)] = sealed_chunks(got)

    async def close(self) -> None:
        await self.inner.close()

    def take(self) -> list[Exchange]:
        seen, self.seen = self.seen, []
        return seen


def sealed_chunks(body: bytes) -> list[int]:
    """The lengths of a chunked answer's sealed chunks, the final one last (its framing only)."""
    lengths, offset = [], 16  # the response nonce
    while True:
        length, offset = varint.decode(body, offset)
        if length == 0:
            return [*lengths, len(body) - offset]
        lengths.append(length)
        offset += length


#: A streamed session answer (issue 15): the response head (status 200, two fixed header fields)
#: in one sealed chunk, the predictor's TLS records in the next ones, the end of the message
#: (content terminator and empty trailers) in the final chunk; each chunk's AEAD tag is 16 bytes.
STREAM_HEAD_CHUNK = 65 + 16
STREAM_FINAL_CHUNK = 2 + 16
#: A TLS 1.3 record header (5) and expansion; close_notify is one 2-byte alert record.
TLS_RECORD = 5 + TLS_RECORD_EXPANSION
CLOSE_NOTIFY = 5 + 2 + 1 + 16


def streamed_frames(chunks: list[int]) -> int | None:
    """The frame bytes a streamed answer carries, if its chunks have the documented shape."""
    if len(chunks) < 3 or chunks[0] != STREAM_HEAD_CHUNK or chunks[-1] != STREAM_FINAL_CHUNK:
        return None
    records = 0
    for sealed in chunks[1:-1]:
        plaintext = sealed - 16  # a Binary HTTP content chunk: varint length, then the records
        records += next(plaintext - n for n in (1, 2, 4) if len(varint.encode(plaintext - n)) == n)
    return records - CLOSE_NOTIFY


def tls_records(data: bytes) -> list[tuple[int, int]]:
    """(content type, length) of each TLS record in ``data``, as anyone relaying them can read."""
    records = []
    offset = 0
    while offset + 5 <= len(data):
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        records.append((data[offset], length))
        offset += 5 + length
    assert offset == len(data)
    return records


class Processor:
    """Answers a draft, refuses one that asks for it, fails on one that asks for that."""

    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        if request.draft.startswith("refuse"):
            return predictor_pb2.ProcessResponse(refusal_reason="self_harm", model_id="test-model")
        if request.draft.startswith("fail"):
            raise RuntimeError("the model crashed")
        return predictor_pb2.ProcessResponse(text=request.draft.upper(), model_id="test-model")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Stack, RelayTap]]:
    stack = await start_stack(tmp_path, processor=Processor())
    tap = RelayTap(stack.relay.core.forwarder)
    stack.relay.core.forwarder = tap
    try:
        yield stack, tap
    finally:
        await stop_stack(stack)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "rfc9458"])
async def test_relay_and_gateway_see_buckets_not_lengths(
    world: tuple[Stack, RelayTap], monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    stack, tap = world
    # The TLS records the gateway relays in each session's last exchange.
    relayed: list[tuple[bytes, bytes]] = []
    stream = GrpcPredictorPool.stream

    async def recording_stream(
        pool: GrpcPredictorPool, target: str, session_id: bytes, records: bytes, *, timeout_seconds: float
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        answer = b""
        try:
            async with contextlib.aclosing(
                stream(pool, target, session_id, records, timeout_seconds=timeout_seconds)
            ) as batches:
                async for batch, closed in batches:
                    answer += batch
                    yield batch, closed
        finally:  # the gateway closes the stream once the session closed
            relayed.append((records, answer))

    monkeypatch.setattr(GrpcPredictorPool, "stream", recording_stream)
    drafts = ["a", "b" * 50, "c" * 300, "d" * 900]
    async with PrivateProcessingClient.from_stack(stack.file, chunked=chunked) as client:
        # A wallet that never buys inside a request (issue 11, item 2) is filled ahead, as a device does.
        refill = getattr(client.wallet, "refill", None)
        if refill is not None:
            await refill(wait_quiet=False)
        await client.suggest_rewrite("warm up")  # learns the token challenge (a 401 the relay sees too)
        warm_up = tap.take()
        relayed.clear()
        sizes: dict[str, list[Exchange]] = {}
        for draft in drafts:
            answer, _ = await client.suggest_rewrite(draft)
            assert answer.text == draft.upper()
            sizes[f"draft of {len(draft)}"] = tap.take()
        refusal, _ = await client.suggest_rewrite("refuse this")
        assert refusal.refusal_reason == "self_harm" and not refusal.text
        sizes["refusal"] = tap.take()
        with pytest.raises(UpstreamError):
            await client.suggest_rewrite("fail this")
        sizes["error"] = tap.take()

    # Every body the relay carried has a size from the documented set.
    exchanges = warm_up + [exchange for seen in sizes.values() for exchange in seen]
    assert len(warm_up) == 3 and all(len(seen) == 2 for seen in sizes.values())
    if chunked:
        allowed_requests = {chunked_size(7 + 32, size) for size in MESSAGE_BUCKETS}
        allowed_responses = {chunked_size(16, size) for size in MESSAGE_BUCKETS}
        # A session's answer streams (issue 15): its chunks carry whole TLS records of padded frames.
        for size, chunks in tap.streams.items():
            frames = streamed_frames(chunks)
            if frames is not None and any(
                frames - TLS_RECORD * k in FRAME_BUCKETS for k in range(1, 1 + frames // KIB)
            ):
                allowed_responses.add(size)
    else:
        allowed_requests = {size + REQUEST_OVERHEAD for size in MESSAGE_BUCKETS}
        allowed_responses = {size + RESPONSE_OVERHEAD for size in MESSAGE_BUCKETS}
    assert {request for request, _ in exchanges} <= allowed_requests
    assert {response for _, response in exchanges} <= allowed_responses
    # Short drafts, a long one, a refusal and (whole messages) an error all look the same to the
    # relay. A streamed answer is not padded whole: a predictor that fails before its first records
    # gets a padded 503 instead of a stream, which the relay can tell from one (not what failed).
    looks = {tuple(seen) for name, seen in sizes.items() if not (chunked and name == "error")}
    assert len(looks) == 1, sizes
    # The gateway reads the TLS record headers it relays: the same records, of the same sizes, for
    # every draft and for the refusal; the application data is one frame bucket plus record overhead.
    answered = relayed[: len(drafts) + 1]
    assert len({(tuple(tls_records(sent)), tuple(tls_records(got))) for sent, got in answered}) == 1
    for sent, got in answered:
        for records in (tls_records(sent), tls_records(got)):
            data = [length for kind, length in records if kind == TLS_APPLICATION_DATA]
            runs = [data[i:j] for i in range(len(data)) for j in range(i + 1, len(data) + 1)]
            assert any(sum(run) - TLS_RECORD_EXPANSION * len(run) in FRAME_BUCKETS for run in runs)
