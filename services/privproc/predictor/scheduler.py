"""The generation scheduler: all of the predictor's model work on one thread, fed by a bounded queue.

Every piece of work that touches the models (a request's whole
:meth:`~privproc.predictor.tasks.TaskProcessor.process`: embeddings,
generation, and the cheap screening around them) is a :class:`Job` run by
one worker thread, one job at a time, in arrival order. At most
``max_queued`` jobs wait; beyond that new work is refused with
:class:`~privproc.errors.UnavailableError` (and the session engine refuses
new sessions early while the queue is full, before the gateway spends a
token on this predictor). The default of 8 is a few answers' worth of
waiting: with the default models a generation takes 0.1 s (tiny) to a few
seconds (SmolLM2-135M on 2 cores), so a request queued behind 8 others
still answers well inside the default 60 s deadline, and a deeper queue
would only turn overload into timeouts instead of an early, clear refusal
another predictor can take.

Why one sequence at a time rather than continuous batching: greedy outputs
of a batched run differ from the unbatched ones (padding and batched
kernels change the floating-point sums), and an answer must not depend on
who else was asking; and on the 2 CPU cores this runs on, the tiny model
and SmolLM2-135M are bound by per-token overhead and memory bandwidth, so a
batch gains little while it delays every first token. What the cores
cannot do is run several generations at once: before this scheduler each
request had a thread of its own, and they fought over the GIL and the
intra-op threads (OpenMP workers spin-waiting between ops while Python
holds the GIL elsewhere). With a GPU, where a batch costs about what one
sequence does, continuous batching would be the better choice, behind the
same interface.

The event loop never waits for a job: jobs run on the worker thread (torch
releases the GIL in its kernels) and their results come back through
``call_soon_threadsafe``; TLS and handshakes stay on the loop.

Each job has a stop flag and, optionally, a deadline (``time.monotonic``
seconds). The model loop reads :attr:`Job.stop_reason` at every token (a
:class:`~privproc.predictor.language.GenerationControl`) and stops; a job
stopped while queued is taken out of the queue and never runs. Either way
``predictor.generation_stopped`` (reason ``deadline`` or ``cancelled``,
stage ``queued`` or ``generating``) is emitted, and the caller gets
:class:`~privproc.errors.DeadlineExceededError` (deadline) or its
cancellation. A failure of the worker thread outside any job (a bug) emits
``predictor.generation_worker_failed`` and a new worker is started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

from privproc import events
from privproc.errors import DeadlineExceededError, UnavailableError, exception_token

T = TypeVar("T")

#: Why a job stopped unfinished.
StopReason = Literal["deadline", "cancelled"]
#: Where it was when it stopped.
StopStage = Literal["queued", "generating"]

#: Jobs that may wait for the worker (see the module docstring for the choice).
DEFAULT_MAX_QUEUED = 8


class GenerationStopped(Exception):
    """Raised by a job's work when it sees its stop flag: the job ends without a result."""


class Job(Generic[T]):
    """One unit of model work, with a stop flag and an optional deadline.

    ``work`` runs on the worker thread and gets the job itself, to read
    :attr:`stop_reason` (per token) or call :meth:`check` (between steps).
    """

    def __init__(
        self,
        work: Callable[[Job[T]], T],
        *,
        deadline: float | None,
        clock: Callable[[], float],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[T],
    ) -> None:
        self._work = work
        self.deadline = deadline
        self._clock = clock
        self._loop = loop
        self._future = future
        self._reason: StopReason | None = None
        #: Set when the job ended (ran, failed, or was stopped); for tests and shutdown.
        self.finished = threading.Event()

    def stop(self, reason: StopReason = "cancelled") -> None:
        """Ask the job to stop (thread-safe; the first reason given is kept)."""
        if self._reason is None:
            self._reason = reason

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the job must stop, or ``None`` to go on; a passed deadline counts."""
        if self._reason is None and self.deadline is not None and self._clock() >= self.deadline:
            self._reason = "deadline"
        return self._reason

    def check(self) -> None:
        """Raise :class:`GenerationStopped` if the job must stop."""
        if self.stop_reason is not None:
            raise GenerationStopped

    # -- the worker's side --

    def _run(self) -> T:
        return self._work(self)

    def _settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Hand the outcome to the job's event loop (from any thread)."""

        def deliver() -> None:
            if self._future.done():
                return  # the caller went away
            if error is not None:
                self._future.set_exception(error)
            else:
                self._future.set_result(result)

        self.finished.set()
        with contextlib.suppress(RuntimeError):  # a closed loop: no one is waiting
            self._loop.call_soon_threadsafe(deliver)

    def _stopped(self, stage: StopStage) -> None:
        reason = self._reason or "cancelled"
        events.emit(events.PredictorGenerationStopped(reason=reason, stage=stage))
        error: BaseException = (
            DeadlineExceededError("deadline exceeded") if reason == "deadline" else GenerationStopped()
        )
        self._settle(error=error)


class GenerationScheduler:
    """One worker thread, a queue of at most ``max_queued`` jobs (see the module docstring)."""

    def __init__(
        self, *, max_queued: int = DEFAULT_MAX_QUEUED, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be positive")
        self.max_queued = max_queued
        self._clock = clock
        self._queue: collections.deque[Job[Any]] = collections.deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._current: Job[Any] | None = None
        self._restarts = 0
        self._closed = False

    @property
    def queued(self) -> int:
        """Jobs waiting for the worker (not the one running)."""
        return len(self._queue)

    @property
    def full(self) -> bool:
        """Whether new work would be refused now."""
        return len(self._queue) >= self.max_queued

    async def run(self, work: Callable[[Job[T]], T], *, deadline: float | None = None) -> T:
        """Queue ``work``, wait for its result.

        Refused with :class:`UnavailableError` when the queue is full. When
        ``deadline`` passes first, the job stops (queued: it never runs) and
        this raises :class:`DeadlineExceededError`; when the awaiting task is
        cancelled, the job stops too. A stop requested by no one else ends
        in :class:`GenerationStopped`.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = Job(work, deadline=deadline, clock=self._clock, loop=loop, future=future)
        with self._ready:
            if self._closed:
                raise UnavailableError("generation scheduler closed")
            if len(self._queue) >= self.max_queued:
                raise UnavailableError("generation queue full")
            self._queue.append(job)
            self._ensure_worker()
            self._ready.notify()
        timer = None
        if deadline is not None:
            timer = loop.call_later(max(0.0, deadline - self._clock()), self._expire, job)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # A caller whose deadline ran out is cancelled by its transport at that moment too.
            late = deadline is not None and self._clock() >= deadline
            self._cancel(job, "deadline" if late else "cancelled")
            future.add_done_callback(_retrieved)  # no one is left to read how it ended
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, job: Job[Any]) -> None:
        self._cancel(job, "deadline")

    def _cancel(self, job: Job[Any], reason: StopReason) -> None:
        """Stop ``job``: out of the queue at once if it is still there, else at its next token."""
        job.stop(reason)
        with self._ready:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # running (it sees the flag) or finished
        job._stopped("queued")

    def close(self) -> None:
        """Stop taking work; queued jobs are stopped, the running one finishes; the worker ends."""
        with self._ready:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            self._ready.notify_all()
        for job in waiting:
            job.stop("cancelled")
            job._stopped("queued")

    # -- the worker thread --

    def _ensure_worker(self) -> None:
        """Start the worker if there is none (called holding ``_ready``)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._supervised, name="privproc-generation", daemon=True)
            self._thread.start()

    def _supervised(self) -> None:
        try:
            self._work_forever()
        except BaseException as exc:  # a bug in the loop itself: logged, and a new worker takes over
            self._restarts += 1
            events.emit(
                events.PredictorGenerationWorkerFailed(
                    exception=exception_token(exc), restarts=min(self._restarts, 10**6)
                )
            )
            lost, self._current = self._current, None
            if lost is not None:
                lost._settle(error=UnavailableError("generation failed"))
            with self._ready:
                self._thread = None
                if self._queue and not self._closed:
                    self._ensure_worker()

    def _work_forever(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if self._closed and not self._queue:
                    return
                job = self._queue.popleft()
            self._current = job
            self._execute(job)
            self._current = None

    def _execute(self, job: Job[Any]) -> None:
        if job.stop_reason is not None:  # its deadline passed while it waited
            job._stopped("queued")
            return
        try:
            result = job._run()
        except GenerationStopped:
            job._stopped("generating")
        except BaseException as exc:  # the work's own error: the caller's to handle
            job._settle(error=exc)
        else:
            job._settle(result=result)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


__all__ = [
    "DEFAULT_MAX_QUEUED",
    "GenerationScheduler",
    "GenerationStopped",
    "Job",
    "StopReason",
    "StopStage",
]
