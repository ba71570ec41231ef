"""The gateway streams a session's answer (issue 15, items 2 and 3), without sockets.

The predictor side is a test double of the gateway's own ``PredictorPool`` interface (the real
predictor's StreamSession runs in the e2e tests): records go out chunk by chunk as they arrive,
chunk sizes follow the frame buckets only, RFC 9458 gets the answer whole, a stream that fails
after its head reaches the client truncated, the request's deadline reaches the predictor call and
is enforced, and a silent predictor is cancelled after the idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privproc.errors import DeadlineExceededError, UnavailableError
from privproc.gateway.core import GatewayCore
from privproc.gateway.keys import KeySchedule
from privproc.gateway.routes import RouteLimits, Router, session_continue_route
from privproc.gateway.sessions import SessionTable
from privproc.v1 import predictor_pb2
from privproc.wire import bhttp, ohttp, ohttp_chunked, padding
from privproc.wire.session import (
    SESSIONS_PREFIX,
    TIMEOUT_HEADER,
    TimeoutFieldError,
    format_timeout,
    frame,
    parse_timeout,
)

Step = bytes | float | BaseException | asyncio.Event


class FakePool:
    """One admitted predictor whose stream plays ``steps``: bytes are a batch of records, a float a
    pause, an event a wait, an exception a failure; a batch that is the last step closes the session."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self.timeouts: list[float] = []
        self.outcome = "running"

    def admitted(self) -> Sequence[str]:
        return ["p1"]

    async def open(self, target: str, records: bytes, *, timeout_seconds: float) -> tuple[bytes, bytes, bool]:
        self.timeouts.append(timeout_seconds)
        return b"sid", b"flight", False

    async def stream(
        self, target: str, session_id: bytes, records: bytes, *, timeout_seconds: float
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        self.timeouts.append(timeout_seconds)
        try:
            for index, step in enumerate(self.steps):
                if isinstance(step, bytes):
                    yield step, index == len(self.steps) - 1
                elif isinstance(step, float):
                    await asyncio.sleep(step)
                elif isinstance(step, asyncio.Event):
                    await step.wait()
                else:
                    raise step
            self.outcome = "ended"
        except (asyncio.CancelledError, GeneratorExit):
            self.outcome = "cancelled"
            raise


def _gateway(pool: FakePool, limits: RouteLimits | None = None) -> tuple[GatewayCore, SessionTable, str]:
    table = SessionTable()
    handle = table.create("p1", b"sid")
    router = Router()
    router.add_prefix("POST", SESSIONS_PREFIX, session_continue_route(pool, table, limits))
    core = GatewayCore(KeySchedule(rotation=3600, grace=60, now=0), router)
    return core, table, handle


def _continue(handle: str, *headers: tuple[str, str]) -> bhttp.Request:
    return bhttp.Request(
        "POST",
        "https",
        "privproc.local",
        SESSIONS_PREFIX + handle,
        headers=headers,
        content=b"client records",
    )


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Reader:
    """The client's side of one chunked exchange: what the relay sees, and what opens."""

    def __init__(self, core: GatewayCore, request: bhttp.Request) -> None:
        self.core = core
        self.sealer = ohttp_chunked.RequestSealer(_config(core))
        self.body = self.sealer.finish(bhttp.encode_request(request, indeterminate=True))
        self.opener = self.sealer.response_opener()
        self.decoder = bhttp.MessageDecoder(response=True)
        self.pieces: list[bytes] = []
        self.events: list[bhttp.Event] = []

    async def answer(self) -> AsyncGenerator[bytes, None]:
        return await self.core.handle_chunked(_one(self.body))

    def take(self, piece: bytes) -> None:
        self.pieces.append(piece)
        for chunk in self.opener.feed(piece):
            self.decoder.receive_data(chunk.data)
            if chunk.final:
                self.decoder.receive_eof()
            self.events += self.decoder.events()

    def end(self) -> None:
        for chunk in self.opener.feed_eof():  # raises if the final chunk never came
            self.decoder.receive_data(chunk.data)
            if chunk.final:
                self.decoder.receive_eof()
            self.events += self.decoder.events()

    def content(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, bhttp.ContentChunk))

    def status(self) -> int:
        head = self.events[0]
        assert isinstance(head, bhttp.ResponseHead)
        return head.status


def _config(core: GatewayCore) -> ohttp.KeyConfig:
    return ohttp.decode_key_config_list(core.schedule.advertisement().body)[0]


async def _read_all(reader: Reader) -> None:
    answer = await reader.answer()
    async with contextlib.aclosing(answer):
        async for piece in answer:
            reader.take(piece)
    reader.end()


async def test_records_go_out_chunk_by_chunk_as_they_arrive() -> None:
    release = asyncio.Event()
    pool = FakePool([b"first records", release, b"last records"])
    core, table, handle = _gateway(pool)
    reader = Reader(core, _continue(handle))
    answer = await reader.answer()
    async with contextlib.aclosing(answer):
        # The head and the first records are out while the predictor is still generating.
        reader.take(await anext(answer))
        reader.take(await anext(answer))
        assert reader.status() == 200 and reader.content() == b"first records"
        assert not any(isinstance(e, bhttp.EndOfMessage) for e in reader.events)
        release.set()
        async for piece in answer:
            reader.take(piece)
    reader.end()
    assert reader.content() == b"first recordslast records"
    assert isinstance(reader.events[-1], bhttp.EndOfMessage)
    with pytest.raises(Exception, match="no such session"):
        table.lookup(handle)  # the predictor closed the session: the route is gone


def _frames(texts: Sequence[str]) -> list[bytes]:
    """Stream frames as the predictor pads them (the TLS record overhead around each is fixed)."""
    frames = [frame(predictor_pb2.ProcessChunk(text=t), buckets=padding.STREAM_FRAME_BUCKETS) for t in texts]
    answer = predictor_pb2.ProcessResponse(text="".join(texts), model_id="m")
    frames.append(frame(predictor_pb2.ProcessChunk(response=answer), buckets=padding.STREAM_FRAME_BUCKETS))
    return frames


async def _chunk_sizes(texts: Sequence[str]) -> list[int]:
    core, _, handle = _gateway(FakePool(_frames(texts)))
    reader = Reader(core, _continue(handle))
    await _read_all(reader)
    return [len(p) for p in reader.pieces]


async def test_what_the_relay_sees_of_a_stream_follows_the_frame_buckets_only() -> None:
    same_buckets = await _chunk_sizes(["The budget ", "is cut to ", "40k."])
    other_text = await _chunk_sizes(["Start date ", "moved to ", "March 3rd, confirmed."])
    assert same_buckets == other_text
    assert len(same_buckets) == 6  # head, four frames, final chunk
    # A frame of a larger bucket is visible (so the comparison above could fail).
    assert await _chunk_sizes(["x" * 300, "is cut to ", "40k."]) != same_buckets


async def test_rfc9458_gets_the_stream_whole_and_padded() -> None:
    pool = FakePool([b"first", 0.01, b"second"])
    core, _, handle = _gateway(pool)
    encoded = padding.pad_with_zeros(bhttp.encode_request(_continue(handle)), padding.MESSAGE_BUCKETS)
    payload, context = ohttp.encapsulate_request(_config(core), encoded)
    inner = context.decapsulate_response(await core.handle(payload))
    assert len(inner) in padding.MESSAGE_BUCKETS
    response = bhttp.decode_response(inner)
    assert response.status == 200 and response.content == b"firstsecond"


async def test_a_failure_after_the_head_reaches_the_client_truncated() -> None:
    pool = FakePool([b"first", UnavailableError("predictor unavailable")])
    core, table, handle = _gateway(pool)
    reader = Reader(core, _continue(handle))
    answer = await reader.answer()
    with pytest.raises(UnavailableError):
        async with contextlib.aclosing(answer):
            async for piece in answer:
                reader.take(piece)
    assert reader.content() == b"first"  # shown as provisional at most: the answer never completes
    with pytest.raises(ohttp_chunked.ChunkedTruncatedError):
        reader.end()
    assert len(table) == 0  # a failed stream leaves no session behind


@pytest.mark.parametrize(
    ("failure", "status", "title"),
    [
        (DeadlineExceededError("deadline exceeded"), 504, "deadline exceeded"),
        (UnavailableError("predictor unavailable"), 503, "session lost"),
    ],
)
async def test_a_failure_before_the_first_records_is_a_status(
    failure: Exception, status: int, title: str
) -> None:
    core, _, handle = _gateway(FakePool([failure]))
    reader = Reader(core, _continue(handle))
    await _read_all(reader)
    assert reader.status() == status
    assert f'"title":"{title}"'.encode() in reader.content()


async def test_the_deadline_header_sets_the_predictor_call_timeout() -> None:
    pool = FakePool([b"records"])
    core, _, handle = _gateway(pool, RouteLimits(max_request_seconds=20.0))
    await _read_all(Reader(core, _continue(handle, (TIMEOUT_HEADER, "2500"))))
    assert 2.0 < pool.timeouts[-1] <= 2.5
    core, _, handle = _gateway(pool, RouteLimits(max_request_seconds=20.0))
    await _read_all(Reader(core, _continue(handle, (TIMEOUT_HEADER, "999999999"))))
    assert 19.0 < pool.timeouts[-1] <= 20.0  # capped
    core, _, handle = _gateway(pool, RouteLimits(max_request_seconds=20.0))
    await _read_all(Reader(core, _continue(handle)))
    assert 19.0 < pool.timeouts[-1] <= 20.0  # none named: the cap


@pytest.mark.parametrize("value", ["", "-5", "1.5", "2s", "1 00", "0", "0x10", "1234567890", "12a"])
async def test_a_malformed_deadline_is_answered_400_encapsulated(value: str) -> None:
    pool = FakePool([b"records"])
    core, _, handle = _gateway(pool)
    reader = Reader(core, _continue(handle, (TIMEOUT_HEADER, value)))
    await _read_all(reader)
    assert reader.status() == 400
    assert pool.timeouts == []  # the predictor was never asked


async def test_a_deadline_that_passes_mid_stream_cuts_it_and_cancels_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()
    pool = FakePool([b"first", never])
    core, _, handle = _gateway(pool, RouteLimits(idle_seconds=5.0))
    reader = Reader(core, _continue(handle, (TIMEOUT_HEADER, "300")))
    answer = await reader.answer()
    with caplog.at_level(logging.DEBUG, logger="privproc.events"), pytest.raises(DeadlineExceededError):
        async with contextlib.aclosing(answer):
            async for piece in answer:
                reader.take(piece)
    assert pool.outcome == "cancelled"
    assert '"outcome":"deadline"' in caplog.text


async def test_a_silent_predictor_is_cancelled_after_the_idle_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = FakePool([b"first", 0.05, b"padding frame", 10.0, b"never"])
    core, _, handle = _gateway(pool, RouteLimits(idle_seconds=0.3))
    reader = Reader(core, _continue(handle))
    answer = await reader.answer()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.DEBUG, logger="privproc.events"), pytest.raises(UnavailableError):
        async with contextlib.aclosing(answer):
            async for piece in answer:
                reader.take(piece)
    assert reader.content() == b"firstpadding frame"  # short silences are fine
    assert 0.3 <= loop.time() - started < 2.0
    assert pool.outcome == "cancelled"
    assert '"outcome":"idle"' in caplog.text


async def test_a_reader_that_goes_away_cancels_the_predictor_call() -> None:
    never = asyncio.Event()
    pool = FakePool([b"first", never])
    core, table, handle = _gateway(pool)
    reader = Reader(core, _continue(handle))
    answer = await reader.answer()
    reader.take(await anext(answer))
    reader.take(await anext(answer))
    await answer.aclose()
    assert pool.outcome == "cancelled"
    assert len(table) == 0


@given(st.integers(min_value=1, max_value=10**9 - 1))
def test_a_timeout_field_reads_back_what_was_written(millis: int) -> None:
    assert parse_timeout(format_timeout(millis / 1000)) == millis / 1000


@given(st.text(max_size=12))
def test_the_timeout_parser_takes_one_to_nine_ascii_digits_only(value: str) -> None:
    valid = 0 < len(value) <= 9 and all(c in "0123456789" for c in value) and int(value) > 0
    if valid:
        assert parse_timeout(value) == int(value) / 1000
    else:
        with pytest.raises(TimeoutFieldError):
            parse_timeout(value)


def test_format_timeout_stays_within_the_field() -> None:
    assert format_timeout(0) == "1" and format_timeout(-3) == "1"
    assert format_timeout(1e12) == "999999999"
    assert format_timeout(2.5) == "2500"
