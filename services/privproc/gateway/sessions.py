"""Sessions through the gateway: handle → predictor, and nothing else.

``POST /v1/sessions`` (token required) carries the client's ClientHello; the
gateway picks an admitted predictor, relays the TLS bytes over mutually
authenticated gRPC, and answers with the predictor's flight and an
unguessable handle. ``POST /v1/sessions/{handle}`` carries the next records.
The gateway cannot read any of it (RA-TLS ends inside the CVM); it keeps only
handle → (predictor, session id), for seconds.

Deadlines are absolute, counted from creation, and nothing a client sends
extends them: the first continuation must arrive within ``handshake_seconds``
and the route ends ``session_seconds`` after it was created. A client cannot
hold a slot by talking.

Admission is per predictor and fair: a slot is reserved *before* the
predictor is asked (so that a full table is known before a token is spent),
on the admitted predictor with the fewest sessions. When every predictor is at
its bound, the oldest idle route older than ``evict_after_seconds`` gives its
slot up (a genuine session uses its handle once, within moments; one that sits
idle is holding a slot), as the predictor's own engine does.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from privproc.errors import NotFoundError, UnavailableError

HANDLE_BYTES = 32


class Admission(Protocol):
    """Which predictors may take sessions now."""

    def admitted(self) -> Sequence[str]: ...


class PredictorPool(Admission, Protocol):
    """Admitted predictors, reached over mutual TLS under the verifier's CA."""

    async def open(self, target: str, records: bytes, *, timeout_seconds: float) -> tuple[bytes, bytes, bool]:
        """Start a session within ``timeout_seconds``: ``(session_id, server_records, closed)``.

        Raises :class:`~privproc.errors.UnavailableError` (the predictor is busy or down: try
        another) or :class:`~privproc.errors.DeadlineExceededError`.
        """
        ...

    def stream(
        self, target: str, session_id: bytes, records: bytes, *, timeout_seconds: float
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        """Carry records of a session; the predictor's records as it produces them, each batch
        ``(server_records, closed)``, the last one closed. The call ends after ``timeout_seconds``
        (:class:`~privproc.errors.DeadlineExceededError`); closing the generator cancels it."""
        ...


@dataclass
class _Route:
    target: str
    created: float
    handshake_deadline: float
    deadline: float
    session_id: bytes | None = None  # None: reserved, the predictor not asked yet
    continued: bool = False
    in_flight: int = 0

    def expired(self, now: float) -> bool:
        return now >= self.deadline or (not self.continued and now >= self.handshake_deadline)


@dataclass(frozen=True)
class Reservation:
    """A slot held for a session being opened: commit it or release it."""

    key: str
    target: str


class SessionTable:
    """handle → (predictor, session id); bounded per predictor, absolute deadlines, nothing more."""

    def __init__(
        self,
        *,
        handshake_seconds: float = 10.0,
        session_seconds: float = 120.0,
        max_sessions: int = 10_000,
        max_per_predictor: int = 64,
        evict_after_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(handshake_seconds, session_seconds, max_sessions, max_per_predictor) <= 0:
            raise ValueError("deadlines and bounds must be positive")
        self.handshake_seconds = handshake_seconds
        self.session_seconds = session_seconds
        self.max_sessions = max_sessions
        self.max_per_predictor = max_per_predictor
        self.evict_after_seconds = evict_after_seconds
        self._clock = clock
        self._routes: dict[str, _Route] = {}  # insertion order is creation order
        self._per_target: dict[str, int] = {}
        self._tiebreak = itertools.count()

    def _remove(self, key: str) -> None:
        route = self._routes.pop(key, None)
        if route is not None:
            left = self._per_target[route.target] - 1
            if left:
                self._per_target[route.target] = left
            else:
                del self._per_target[route.target]

    def _prune(self) -> None:
        now = self._clock()
        # A reserved slot is committed or released by its opener; its session deadline is a backstop.
        for key in [
            k
            for k, r in self._routes.items()
            if (r.expired(now) if r.session_id is not None else now >= r.deadline)
        ]:
            self._remove(key)

    def _evict_idle(self, targets: Collection[str] | None) -> str | None:
        """Drop the oldest idle route (on one of ``targets``, or anywhere) older than the eviction
        age; its predictor, or None if none could go."""
        now = self._clock()
        for key, route in self._routes.items():
            if now - route.created < self.evict_after_seconds:
                break  # creation order: every later route is younger
            if (
                route.session_id is not None
                and route.in_flight == 0
                and (targets is None or route.target in targets)
            ):
                self._remove(key)
                return route.target
        return None

    def reserve(self, pool: Admission, *, exclude: Collection[str] = ()) -> Reservation:
        """A slot on the least-loaded admitted predictor not in ``exclude`` (UnavailableError if none)."""
        self._prune()
        targets = [t for t in pool.admitted() if t not in exclude]
        if not targets:
            raise UnavailableError("no admitted predictor")
        if len(self._routes) >= self.max_sessions and self._evict_idle(None) is None:
            raise UnavailableError("too many sessions")
        order = self._by_load(targets)
        target = next((t for t in order if self._per_target.get(t, 0) < self.max_per_predictor), None)
        if target is None:
            target = self._evict_idle(set(targets))
            if target is None:
                raise UnavailableError("every predictor is at its session bound")
        now = self._clock()
        key = secrets.token_urlsafe(HANDLE_BYTES)
        self._routes[key] = _Route(target, now, now + self.handshake_seconds, now + self.session_seconds)
        self._per_target[target] = self._per_target.get(target, 0) + 1
        return Reservation(key, target)

    def _by_load(self, targets: Sequence[str]) -> list[str]:
        """Least loaded first; ties go round robin so that no predictor is always first."""
        turn = next(self._tiebreak)
        ranked = sorted(
            range(len(targets)),
            key=lambda i: (self._per_target.get(targets[i], 0), (i - turn) % len(targets)),
        )
        return [targets[i] for i in ranked]

    def pick(self, pool: Admission) -> str:
        """The admitted predictor a new session would go to (UnavailableError when there is none)."""
        self._prune()
        targets = list(pool.admitted())
        if not targets:
            raise UnavailableError("no admitted predictor")
        return self._by_load(targets)[0]

    def commit(self, reservation: Reservation, session_id: bytes) -> str:
        """The handle of a reserved slot whose predictor opened ``session_id``.

        Deadlines run from the reservation. If the slot was lost meanwhile
        (it cannot be evicted while pending), NotFoundError.
        """
        route = self._routes.get(reservation.key)
        if route is None:
            raise NotFoundError("no such session")
        route.session_id = session_id
        return reservation.key

    def release(self, reservation: Reservation) -> None:
        self._remove(reservation.key)

    def create(self, target: str, session_id: bytes) -> str:
        """Reserve on ``target`` and commit at once (UnavailableError if its bound is reached)."""

        class _One:
            def admitted(self) -> Sequence[str]:
                return (target,)

        return self.commit(self.reserve(_One()), session_id)

    def lookup(self, handle: str) -> tuple[str, bytes]:
        """The route of ``handle``; it never extends the route's deadlines."""
        self._prune()
        route = self._routes.get(handle)
        if route is None or route.session_id is None:
            raise NotFoundError("no such session")
        return route.target, route.session_id

    def begin(self, handle: str) -> tuple[str, bytes]:
        """Like :meth:`lookup`, for a continuation about to be relayed; pair with :meth:`end`."""
        target, session_id = self.lookup(handle)
        route = self._routes[handle]
        route.continued = True  # the handshake deadline is met; the session deadline still holds
        route.in_flight += 1
        return target, session_id

    def end(self, handle: str) -> None:
        route = self._routes.get(handle)
        if route is not None:
            route.in_flight -= 1

    def drop(self, handle: str) -> None:
        self._remove(handle)

    def load(self, target: str) -> int:
        """Sessions (open or being opened) on ``target``."""
        self._prune()
        return self._per_target.get(target, 0)

    def __len__(self) -> int:
        self._prune()
        return len(self._routes)
