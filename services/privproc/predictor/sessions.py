"""The predictor's sessions: RA-TLS ends here, one request answered per session, then dropped.

Transport-free: the gRPC adapter hands in the TLS records the gateway
relayed and sends back what this returns. A session lives in memory only,
answers one ``ProcessRequest`` with one ``ProcessResponse`` (or, when the
request asks to ``stream`` and comes through :meth:`SessionEngine.resume_stream`,
with ``ProcessChunk`` frames as the answer is generated, the last carrying the
``ProcessResponse``), then closes and is forgotten. Nothing of a request is kept in any structure that
outlives its session, and nothing is logged per request but that a session
opened or was answered (never how: see :mod:`.telemetry`).

Each session is a small state machine::

    HANDSHAKE --(TLS handshake complete)--> AWAITING_REQUEST
    AWAITING_REQUEST --(one whole request decoded)--> PROCESSING
    PROCESSING --(response sent, TLS closed)--> CLOSED (dropped)

The step into PROCESSING happens before the engine awaits anything, so of
several concurrent ``resume`` calls on one session exactly one runs the
model: the others find the session closed for input and are refused
(:class:`~privproc.errors.BadRequestError`). One token buys one model run.

Deadlines are absolute, fixed when the session opens and never extended by
any record: the handshake must complete within ``handshake_seconds`` and the
whole session (request included) within ``session_seconds``; a session in
PROCESSING is the model's and is not expired under it (a streamed answer's
own deadline, the call's, stops the model instead). Empty record batches
are refused. The engine holds at most ``max_sessions``; when it is full a
new session may evict the oldest session still in HANDSHAKE that is older
than ``min_handshake_age`` (a real client finishes the handshake in one
round trip), so handshake-only sessions cannot lock the predictor. Only when
nothing can be evicted is the new session refused as busy; and while the
processor's generation queue is full (:mod:`.scheduler`), new sessions are
refused at once, before the gateway spends a token here.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from privproc import events
from privproc.attestation.ratls_session import RaTlsServer
from privproc.attestation.sources import EvidenceSource, is_blocking
from privproc.errors import BadRequestError, NotFoundError, UnavailableError
from privproc.predictor import telemetry as telemetry_module
from privproc.predictor.cadence import DEFAULT_KEEPALIVE_SECONDS, DEFAULT_TICK_SECONDS, Cadence
from privproc.predictor.telemetry import PredictorTelemetry, SessionOutcome
from privproc.v1 import predictor_pb2
from privproc.wire.padding import STREAM_FRAME_BUCKETS
from privproc.wire.session import Decoder, frame

#: Answers one request (it runs off the event loop: models are slow).
Processor = Callable[[predictor_pb2.ProcessRequest], Awaitable[predictor_pb2.ProcessResponse]]


@runtime_checkable
class StreamingProcessor(Protocol):
    """A :data:`Processor` that can also stream its answer and say when it is saturated.

    :class:`~privproc.predictor.tasks.TaskProcessor` is one. With a plain
    :data:`Processor`, a streamed request's answer is one final chunk.
    """

    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        """The whole answer."""
        ...

    def stream(
        self, request: predictor_pb2.ProcessRequest, *, deadline: float | None = None
    ) -> AsyncGenerator[predictor_pb2.ProcessChunk, None]:
        """Text deltas, then the chunk with the whole response; stops the model when closed early."""
        ...

    @property
    def saturated(self) -> bool:
        """Whether a new request would be refused now (new sessions are refused early then)."""
        ...


DEFAULT_HANDSHAKE_SECONDS = 10.0
DEFAULT_SESSION_SECONDS = 120.0
DEFAULT_MAX_SESSIONS = 64
DEFAULT_MIN_HANDSHAKE_AGE = 1.0


class SessionState(enum.Enum):
    """Where a session is in its one exchange."""

    HANDSHAKE = "handshake"
    AWAITING_REQUEST = "awaiting_request"
    PROCESSING = "processing"
    CLOSED = "closed"


@dataclass
class _Session:
    tls: RaTlsServer
    opened: float
    handshake_deadline: float
    deadline: float
    state: SessionState = SessionState.HANDSHAKE
    decoder: Decoder[predictor_pb2.ProcessRequest] = field(
        default_factory=lambda: Decoder(predictor_pb2.ProcessRequest)
    )

    def expired(self, now: float) -> bool:
        if self.state is SessionState.PROCESSING:
            return False  # the model is running; the session ends when it answers
        if self.state is SessionState.HANDSHAKE and now >= self.handshake_deadline:
            return True
        return now >= self.deadline


class SessionEngine:
    """RA-TLS sessions of one predictor: bounded, deadline-limited, one model run each."""

    def __init__(
        self,
        source: EvidenceSource,
        processor: Processor,
        *,
        handshake_seconds: float = DEFAULT_HANDSHAKE_SECONDS,
        session_seconds: float = DEFAULT_SESSION_SECONDS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        min_handshake_age: float = DEFAULT_MIN_HANDSHAKE_AGE,
        clock: Callable[[], float] = time.monotonic,
        telemetry: PredictorTelemetry | None = None,
        stream_tick_seconds: float = DEFAULT_TICK_SECONDS,
        stream_keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> None:
        if not 0 < stream_tick_seconds <= stream_keepalive_seconds:
            raise ValueError("the stream tick must be positive and at most the keepalive")
        if not 0 < handshake_seconds <= session_seconds:
            raise ValueError("deadlines must be positive, the handshake's within the session's")
        if max_sessions < 1 or min_handshake_age < 0:
            raise ValueError("max_sessions must be positive and min_handshake_age not negative")
        self._source = source
        self._processor = processor
        self._handshake_seconds = handshake_seconds
        self._session_seconds = session_seconds
        self._max = max_sessions
        self._min_handshake_age = min_handshake_age
        self._clock = clock
        self._telemetry = telemetry
        self._tick = stream_tick_seconds
        self._keepalive = stream_keepalive_seconds
        self._sessions: dict[bytes, _Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def state(self, session_id: bytes) -> SessionState | None:
        """The state of a live session, or ``None`` if there is no such session."""
        session = self._sessions.get(session_id)
        return session.state if session is not None else None

    def _count(self, outcome: SessionOutcome, n: int = 1) -> None:
        counters = self._telemetry if self._telemetry is not None else telemetry_module.DEFAULT
        counters.count_session(outcome, n)

    def _prune(self) -> None:
        now = self._clock()
        expired = [sid for sid, session in self._sessions.items() if session.expired(now)]
        for sid in expired:
            self._drop(sid)
        if expired:
            self._count("expired", len(expired))

    def _drop(self, session_id: bytes) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.state = SessionState.CLOSED
            del session  # the TLS keys and buffers go with it

    def _evictable(self) -> bytes | None:
        """The oldest session still in HANDSHAKE and older than a real client's round trip."""
        now = self._clock()
        candidates = [
            (session.opened, sid)
            for sid, session in self._sessions.items()
            if session.state is SessionState.HANDSHAKE and now - session.opened >= self._min_handshake_age
        ]
        return min(candidates)[1] if candidates else None

    def _make_room(self, *, evict: bool) -> None:
        """Refuse as busy unless there is a free slot or a session to evict (evicted if ``evict``)."""
        if len(self._sessions) < self._max:
            return
        victim = self._evictable()
        if victim is None:
            self._count("busy")
            raise UnavailableError("predictor busy")
        if evict:
            self._drop(victim)
            self._count("evicted")

    async def open(self, records: bytes) -> tuple[bytes, bytes, bool]:
        """A ClientHello: ``(session_id, server_flight, closed)``."""
        if not records:
            raise BadRequestError("no records")
        self._prune()
        # Before the evidence, which may be expensive: refuse early when full. Nothing is evicted
        # yet, so a ClientHello that turns out malformed costs no one their session.
        self._make_room(evict=False)
        if isinstance(self._processor, StreamingProcessor) and self._processor.saturated:
            # Before the gateway spends the client's token here: it can try another predictor.
            self._count("busy")
            raise UnavailableError("generation queue full")
        tls = RaTlsServer(self._source)
        try:
            if is_blocking(self._source):
                # Evidence is produced in the SNI callback: keep the loop free while the firmware works.
                flight = await asyncio.to_thread(tls.receive, records)
            else:
                # ~1.5 ms of CPU, most of it holding the GIL anyway: a thread hop would cost as much.
                flight = tls.receive(records)
        except Exception:
            self._count("failed")
            raise
        # Other opens may have filled the engine while the firmware worked: check again (and
        # evict now), with no await between this check and the insertion.
        self._prune()
        self._make_room(evict=True)
        now = self._clock()
        session_id = secrets.token_bytes(16)
        self._sessions[session_id] = _Session(
            tls,
            opened=now,
            handshake_deadline=now + self._handshake_seconds,
            deadline=now + self._session_seconds,
        )
        self._count("opened")
        events.emit(events.PredictorSessionOpened(sessions=len(self._sessions)))
        return session_id, flight, False

    async def resume(self, session_id: bytes, records: bytes) -> tuple[bytes, bool]:
        """The client's next records: ``(server_records, closed)``.

        Refused: an unknown or expired session (:class:`NotFoundError`), an empty
        batch, or records for a session that already has its request
        (:class:`BadRequestError`). Nothing here extends a deadline.
        """
        session = self._session(session_id, records)
        try:
            out, request = self._receive(session, records)
            if request is None:
                return out, False
            response = await self._processor(request)
            out += session.tls.send_application_data(frame(response))
            out += session.tls.close()
        except BaseException:
            self._fail(session_id)
            raise
        self._answered(session_id)
        return out, True

    async def resume_stream(
        self, session_id: bytes, records: bytes, *, deadline: float | None = None
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        """The client's next records: the server's records as they are produced, ``(records, closed)``.

        As :meth:`resume` (same refusals, same one request per session), but
        a request with ``stream`` set is answered as it is generated: one
        item per ``ProcessChunk`` frame (padded to the stream buckets, paced by
        :class:`~privproc.predictor.cadence.Cadence`), the last carrying the
        whole response, TLS close_notify and ``closed``. A request without
        ``stream`` gets its one ``ProcessResponse`` frame, as from :meth:`resume`.
        ``deadline`` (the engine clock's seconds; ``None``: the session's) bounds the
        model's work: when it passes, the model stops and this raises
        :class:`~privproc.errors.DeadlineExceededError`. Closing the iterator
        early (the caller went away) stops the model too. Either way the
        session is dropped and counted as failed.
        """
        session = self._session(session_id, records)
        received = self._clock()  # padding is due counted from here: queueing is covered too
        try:
            out, request = self._receive(session, records)
            if request is None:
                yield out, False
                return
            until = deadline if deadline is not None else session.deadline
            answer = self._answer(request, until)
            try:
                if not request.stream:
                    response = await _final(answer)
                    yield out + session.tls.send_application_data(frame(response)) + session.tls.close(), True
                else:
                    async with contextlib.aclosing(self._paced(answer, received)) as paced:
                        async for chunk in paced:
                            last = chunk.HasField("response")
                            out += session.tls.send_application_data(_stream_frame(chunk))
                            if last:
                                out += session.tls.close()
                            yield out, last
                            out = b""
            finally:
                await answer.aclose()  # stops the model if the answer is not complete
        except BaseException:
            self._fail(session_id)
            raise
        self._answered(session_id)

    # -- shared by resume and resume_stream --

    def _session(self, session_id: bytes, records: bytes) -> _Session:
        self._prune()
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFoundError("no such session")
        if session.state in (SessionState.PROCESSING, SessionState.CLOSED):
            # Not dropped: the request in flight is the session's one and goes on.
            raise BadRequestError("session closed for input")
        if not records:
            raise BadRequestError("no records")
        return session

    def _receive(
        self, session: _Session, records: bytes
    ) -> tuple[bytes, predictor_pb2.ProcessRequest | None]:
        """Feed ``records``: the server's records, and the session's request once it is whole.

        Called with no await before it in the caller, so of concurrent resumes one gets the request.
        """
        try:
            out = session.tls.receive(records)
            if not session.tls.handshake_complete:
                return out, None
            session.state = SessionState.AWAITING_REQUEST
            requests = session.decoder.feed(session.tls.read_application_data())
            if not requests:
                return out, None
            if len(requests) > 1 or session.decoder.pending:
                raise BadRequestError("one request per session")
        except BaseException:
            session.state = SessionState.CLOSED  # dropped by the caller
            raise
        # Closed for input before the first await: a concurrent resume now finds PROCESSING.
        session.state = SessionState.PROCESSING
        return out, requests[0]

    def _answer(
        self, request: predictor_pb2.ProcessRequest, deadline: float
    ) -> AsyncGenerator[predictor_pb2.ProcessChunk, None]:
        if isinstance(self._processor, StreamingProcessor):
            # The processor's deadline is time.monotonic's: convert from the engine's clock.
            return self._processor.stream(request, deadline=time.monotonic() + (deadline - self._clock()))
        return _whole(self._processor, request)

    async def _paced(
        self, answer: AsyncGenerator[predictor_pb2.ProcessChunk, None], received: float
    ) -> AsyncGenerator[predictor_pb2.ProcessChunk, None]:
        """``answer``'s text coalesced per tick, padding in silences, the final chunk at once."""
        cadence = Cadence(start=received, tick=self._tick, keepalive=self._keepalive)
        upcoming: asyncio.Task[predictor_pb2.ProcessChunk] | None = None
        try:
            while True:
                if upcoming is None:
                    upcoming = asyncio.ensure_future(anext(answer))
                now = self._clock()
                text = cadence.due(now)
                if text is not None:
                    yield predictor_pb2.ProcessChunk(text=text)
                    continue
                await asyncio.wait({upcoming}, timeout=cadence.next_due(now) - now)
                if not upcoming.done():
                    continue
                try:
                    chunk = upcoming.result()
                except StopAsyncIteration:
                    raise RuntimeError("the answer ended without its response") from None
                upcoming = None
                if chunk.HasField("response"):
                    # Text still pending is in the response, which is authoritative.
                    yield predictor_pb2.ProcessChunk(response=chunk.response)
                    return
                cadence.add(chunk.text)
        finally:
            if upcoming is not None and not upcoming.done():
                upcoming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await upcoming

    def _fail(self, session_id: bytes) -> None:
        self._drop(session_id)
        self._count("failed")

    def _answered(self, session_id: bytes) -> None:
        self._drop(session_id)  # one request per session; nothing of it outlives this call
        self._count("completed")
        events.emit(events.PredictorSessionAnswered())


async def _whole(
    processor: Processor, request: predictor_pb2.ProcessRequest
) -> AsyncGenerator[predictor_pb2.ProcessChunk, None]:
    """A plain processor's answer as a stream: one final chunk."""
    yield predictor_pb2.ProcessChunk(response=await processor(request))


async def _final(answer: AsyncGenerator[predictor_pb2.ProcessChunk, None]) -> predictor_pb2.ProcessResponse:
    """The response at the end of ``answer`` (its text deltas are not needed)."""
    async for chunk in answer:
        if chunk.HasField("response"):
            return chunk.response
    raise RuntimeError("the answer ended without its response")


def _stream_frame(chunk: predictor_pb2.ProcessChunk) -> bytes:
    """``chunk`` framed in the stream buckets; the last one (the answer) at least a whole answer's floor.

    Text and padding frames are 256 bytes (a tick's text fits), but a short
    answer in a 256-byte last frame would tell the relay and the gateway that
    it is short, which a whole answer's 1 KiB floor hides: its ``padding``
    field lifts it past the smallest stream bucket.
    """
    if chunk.HasField("response"):
        floor = STREAM_FRAME_BUCKETS[0] - 3  # past it, with the 4-byte length: the next bucket
        short = floor - chunk.ByteSize()
        if short > 0:
            chunk.padding = bytes(short)
    return frame(chunk, buckets=STREAM_FRAME_BUCKETS)


__all__ = [
    "DEFAULT_HANDSHAKE_SECONDS",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MIN_HANDSHAKE_AGE",
    "DEFAULT_SESSION_SECONDS",
    "Processor",
    "SessionEngine",
    "SessionState",
    "StreamingProcessor",
]
