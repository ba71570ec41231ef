"""What the CVM reports about its work: aggregate counters, emitted on a timer — sans-I/O core.

Nothing about one request may leave the CVM: not its refusal category, not
whether it was refused, not its size, token counts or timing. A per-request
event, even one carrying only a refusal code, lines up (by its timestamp)
with the gateway's and relay's events for the same request and so tells the
operator what one user asked about. So the task processor and the session
engine only *count* here, and :func:`report_forever` emits the counts since
the last emission on a timer:

- ``predictor.session_totals``: sessions opened, completed, expired,
  evicted, refused as busy, failed. None of these depends on content (a
  refused request completes its session like an answered one), so they are
  emitted at every tick that has any.
- ``predictor.task_totals``: requests by task and by outcome (answered, or
  each refusal code), and ``predictor.generation_totals``: tokens generated
  and a latency histogram with coarse buckets (under 1 s, 5 s, 30 s, and
  30 s or more: :data:`LATENCY_BUCKETS`). These depend on content, so they
  are emitted only once at least ``min_requests`` requests have been
  counted since the last emission; until then the counts carry over to the
  next tick. A window with a single request would otherwise be that
  request's outcome, length and time. (An operator who sends
  ``min_requests - 1`` requests of its own in a window still learns the
  last one's outcome: aggregation with a threshold raises the cost of
  singling out a request, it does not make it impossible.) The threshold is
  not an option: an operator could set it to one.

The predictor emits ``log_sink.totals`` at the same ticks
(:func:`privproc.runtime.logsink.emit_totals`): what its sink offered, sent,
dropped and lost, and what was silenced, since it started (content-independent).

The events a session emits itself (``predictor.session_opened`` and
``predictor.session_answered``) carry nothing of the request: a count of
open sessions at the open, and nothing at the answer; their moments (coarse)
are those of gRPC calls the host relays and sees anyway.

Predictor events also carry coarse time (see
:func:`privproc.events.time_resolution`), so even the tick cannot be placed
to the millisecond. The counters are plain integers under a lock: the task
processor counts from a worker thread.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from privproc import events
from privproc.wire.refusal import RefusalCode

#: Session outcomes the engine counts.
SessionOutcome = Literal["opened", "completed", "expired", "evicted", "busy", "failed"]
SESSION_OUTCOMES: tuple[SessionOutcome, ...] = ("opened", "completed", "expired", "evicted", "busy", "failed")
#: Tasks the processor counts.
TaskName = Literal["summarize", "suggest_rewrite", "other"]
TASKS: tuple[TaskName, ...] = ("summarize", "suggest_rewrite", "other")

#: Requests that must have been counted before their totals are emitted.
DEFAULT_MIN_REQUESTS = 10
#: Seconds between two emissions.
DEFAULT_INTERVAL_SECONDS = 60.0
#: The latency histogram: each bucket's ``predictor.generation_totals`` field and its exclusive
#: upper bound (seconds). Few and wide on purpose: a fine histogram of a small window is close
#: to a list of its requests' times.
LATENCY_BUCKETS: tuple[tuple[str, float], ...] = (
    ("latency_under_1s", 1.0),
    ("latency_under_5s", 5.0),
    ("latency_under_30s", 30.0),
    ("latency_30s_or_more", math.inf),
)

if {f for f in events.PredictorGenerationTotals.spec.fields if f.startswith("latency_")} != {
    name for name, _ in LATENCY_BUCKETS
}:
    raise TypeError("predictor.generation_totals must count each latency bucket in its own field")


def latency_field(seconds: float) -> str:
    """The ``predictor.generation_totals`` field that counts a request processed in ``seconds``."""
    for name, bound in LATENCY_BUCKETS:
        if seconds < bound:
            return name
    return LATENCY_BUCKETS[-1][0]  # NaN: the open bucket (a clock never gives one)


def refusal_field(code: RefusalCode) -> str:
    """The ``predictor.task_totals`` field that counts refusals with ``code``."""
    return f"refused_{code.value}"


@dataclass(frozen=True)
class TaskTotals:
    """Requests counted since the last emission."""

    requests: int
    answered: int
    by_task: Mapping[str, int]
    by_refusal: Mapping[RefusalCode, int]
    #: Tokens the model generated for these requests, in all.
    tokens_generated: int = 0
    #: Requests by :func:`latency_field`.
    by_latency: Mapping[str, int] = field(default_factory=dict)

    def fields(self) -> dict[str, int]:
        """The ``predictor.task_totals`` event's fields."""
        values = {"requests": self.requests, "answered": self.answered}
        values.update({task: self.by_task.get(task, 0) for task in TASKS})
        values.update({refusal_field(code): self.by_refusal.get(code, 0) for code in RefusalCode})
        return values

    def generation_fields(self) -> dict[str, int]:
        """The ``predictor.generation_totals`` event's fields."""
        values = {"requests": self.requests, "tokens_generated": self.tokens_generated}
        values.update({name: self.by_latency.get(name, 0) for name, _ in LATENCY_BUCKETS})
        return values


class PredictorTelemetry:
    """Aggregate counters of one predictor; thread-safe.

    ``min_requests`` is the threshold below which task totals are held back
    (see the module docstring).
    """

    def __init__(self, *, min_requests: int = DEFAULT_MIN_REQUESTS) -> None:
        if min_requests < 1:
            raise ValueError("min_requests must be positive")
        self.min_requests = min_requests
        self._lock = threading.Lock()
        self._sessions: Counter[str] = Counter()
        self._tasks: Counter[str] = Counter()
        self._refusals: Counter[RefusalCode] = Counter()
        self._latency: Counter[str] = Counter()
        self._answered = 0
        self._tokens_generated = 0

    def count_session(self, outcome: SessionOutcome, n: int = 1) -> None:
        """Count ``n`` sessions that ended (or began) with ``outcome``."""
        with self._lock:
            self._sessions[outcome] += n

    def count_request(
        self, task: TaskName, refusal: RefusalCode | None, *, tokens_generated: int = 0, seconds: float = 0.0
    ) -> None:
        """Count one processed request: its task, its outcome, the tokens generated, its time."""
        if tokens_generated < 0:
            raise ValueError("tokens_generated must not be negative")
        with self._lock:
            self._tasks[task] += 1
            if refusal is None:
                self._answered += 1
            else:
                self._refusals[refusal] += 1
            self._tokens_generated += tokens_generated
            self._latency[latency_field(seconds)] += 1

    def take_session_totals(self) -> dict[str, int] | None:
        """The session counts since the last take (reset), or ``None`` if there were none."""
        with self._lock:
            if not any(self._sessions.values()):
                return None
            totals: dict[str, int] = {outcome: self._sessions.get(outcome, 0) for outcome in SESSION_OUTCOMES}
            self._sessions.clear()
        return totals

    def take_task_totals(self) -> TaskTotals | None:
        """The request counts (reset) once at least ``min_requests`` were counted, else ``None``."""
        with self._lock:
            requests = sum(self._tasks.values())
            if requests < self.min_requests:
                return None  # carried over: too few to be an aggregate
            totals = TaskTotals(
                requests,
                self._answered,
                dict(self._tasks),
                dict(self._refusals),
                self._tokens_generated,
                dict(self._latency),
            )
            self._tasks.clear()
            self._refusals.clear()
            self._latency.clear()
            self._answered = 0
            self._tokens_generated = 0
        return totals

    def emit(self) -> None:
        """Emit whatever totals are due now (called by the timer, and once at shutdown)."""
        sessions = self.take_session_totals()
        if sessions is not None:
            events.emit(events.PredictorSessionTotals(**sessions))
        tasks = self.take_task_totals()
        if tasks is not None:
            events.emit(events.PredictorTaskTotals(**tasks.fields()))
            events.emit(events.PredictorGenerationTotals(**tasks.generation_fields()))


#: The process's counters: the task processor and the session engine count here unless given others.
DEFAULT = PredictorTelemetry()


async def report_forever(telemetry: PredictorTelemetry, interval_seconds: float) -> None:
    """Emit ``telemetry``'s due totals every ``interval_seconds`` (run it under ``supervise``)."""
    while True:
        await asyncio.sleep(interval_seconds)
        telemetry.emit()


__all__ = [
    "DEFAULT",
    "DEFAULT_INTERVAL_SECONDS",
    "DEFAULT_MIN_REQUESTS",
    "LATENCY_BUCKETS",
    "SESSION_OUTCOMES",
    "TASKS",
    "PredictorTelemetry",
    "SessionOutcome",
    "TaskName",
    "TaskTotals",
    "latency_field",
    "refusal_field",
]
