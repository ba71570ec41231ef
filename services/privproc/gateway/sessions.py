"""Sessions through the gateway: handle → predictor, and nothing else.

``POST /v1/sessions`` (token required) carries the client's ClientHello; the
gateway picks an admitted predictor, relays the TLS bytes over mutually
authenticated gRPC, and answers with the predictor's flight and an
unguessable handle. ``POST /v1/sessions/{handle}`` carries the next records.
The gateway cannot read any of it (RA-TLS ends inside the CVM); it keeps only
handle → (predictor, session id), for seconds.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from privproc.errors import NotFoundError, UnavailableError

HANDLE_BYTES = 32


class PredictorPool(Protocol):
    """Admitted predictors, reached over mutual TLS under the verifier's CA."""

    def admitted(self) -> Sequence[str]: ...

    async def open(self, target: str, records: bytes) -> tuple[bytes, bytes, bool]:
        """Start a session: ``(session_id, server_records, closed)``."""
        ...

    async def resume(self, target: str, session_id: bytes, records: bytes) -> tuple[bytes, bool]:
        """Carry records of a session: ``(server_records, closed)``."""
        ...


@dataclass
class _Route:
    target: str
    session_id: bytes
    expires: float


class SessionTable:
    """handle → (predictor, session id); bounded, expiring, nothing more."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 30.0,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._routes: OrderedDict[str, _Route] = OrderedDict()
        self._next = 0

    def _prune(self) -> None:
        now = self._clock()
        for handle in [h for h, r in self._routes.items() if r.expires <= now]:
            del self._routes[handle]

    def create(self, target: str, session_id: bytes) -> str:
        self._prune()
        if len(self._routes) >= self.max_sessions:
            raise UnavailableError("too many sessions")
        handle = secrets.token_urlsafe(HANDLE_BYTES)
        self._routes[handle] = _Route(target, session_id, self._clock() + self.ttl)
        return handle

    def lookup(self, handle: str) -> tuple[str, bytes]:
        self._prune()
        route = self._routes.get(handle)
        if route is None:
            raise NotFoundError("no such session")
        route.expires = self._clock() + self.ttl
        return route.target, route.session_id

    def drop(self, handle: str) -> None:
        self._routes.pop(handle, None)

    def pick(self, pool: PredictorPool) -> str:
        """Round robin over the admitted predictors (fail closed when there are none)."""
        targets = list(pool.admitted())
        if not targets:
            raise UnavailableError("no admitted predictor")
        self._next = (self._next + 1) % len(targets)
        return targets[self._next]

    def __len__(self) -> int:
        self._prune()
        return len(self._routes)
