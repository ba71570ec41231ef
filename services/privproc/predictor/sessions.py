"""The predictor's sessions: RA-TLS ends here, one request answered per session, then dropped.

Transport-free: the gRPC adapter hands in the TLS records the gateway
relayed and sends back what this returns. A session lives in memory only,
answers one ``ProcessRequest`` with one ``ProcessResponse``, then closes
and is forgotten; idle sessions are dropped after ``ttl_seconds``. Nothing
of a request is kept in any structure that outlives its session, and
nothing is logged but event names and counts.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from privproc import events
from privproc.attestation.ratls import RaTlsServer
from privproc.attestation.sources import EvidenceSource, is_blocking
from privproc.errors import NotFoundError, UnavailableError
from privproc.predictor.protocol import Decoder, frame
from privproc.v1 import predictor_pb2

#: Answers one request (it runs off the event loop: models are slow).
Processor = Callable[[predictor_pb2.ProcessRequest], Awaitable[predictor_pb2.ProcessResponse]]


@dataclass
class _Session:
    tls: RaTlsServer
    decoder: Decoder[predictor_pb2.ProcessRequest] = field(
        default_factory=lambda: Decoder(predictor_pb2.ProcessRequest)
    )
    expires: float = 0.0


class SessionEngine:
    def __init__(
        self,
        source: EvidenceSource,
        processor: Processor,
        *,
        ttl_seconds: float = 60.0,
        max_sessions: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._processor = processor
        self._ttl = ttl_seconds
        self._max = max_sessions
        self._clock = clock
        self._sessions: dict[bytes, _Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self) -> None:
        now = self._clock()
        for sid in [s for s, session in self._sessions.items() if session.expires <= now]:
            self._drop(sid)

    def _drop(self, session_id: bytes) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            del session  # the TLS keys and buffers go with it

    async def open(self, records: bytes) -> tuple[bytes, bytes, bool]:
        """A ClientHello: ``(session_id, server_flight, closed)``."""
        self._prune()
        if len(self._sessions) >= self._max:
            raise UnavailableError("predictor busy")
        tls = RaTlsServer(self._source)
        if is_blocking(self._source):
            # Evidence is produced in the SNI callback: keep the loop free while the firmware works.
            flight = await asyncio.to_thread(tls.receive, records)
        else:
            # ~1.5 ms of CPU, most of it holding the GIL anyway: a thread hop would cost as much.
            flight = tls.receive(records)
        session_id = secrets.token_bytes(16)
        self._sessions[session_id] = _Session(tls, expires=self._clock() + self._ttl)
        events.emit("predictor.session_opened", sessions=len(self._sessions))
        return session_id, flight, False

    async def resume(self, session_id: bytes, records: bytes) -> tuple[bytes, bool]:
        """The client's next records: ``(server_records, closed)``."""
        self._prune()
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFoundError("no such session")
        session.expires = self._clock() + self._ttl
        try:
            out = session.tls.receive(records)
            if not session.tls.handshake_complete:
                return out, False
            requests = session.decoder.feed(session.tls.read_application_data())
            if not requests:
                return out, False
            response = await self._processor(requests[0])
            out += session.tls.send_application_data(frame(response))
            out += session.tls.close()
        except BaseException:
            self._drop(session_id)
            raise
        self._drop(session_id)  # one request per session; nothing of it outlives this call
        events.emit("predictor.session_answered", refused=bool(response.refusal_reason))
        return out, True
