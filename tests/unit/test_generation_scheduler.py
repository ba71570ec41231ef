"""The generation scheduler: one worker thread, a bounded queue, jobs that stop on cancel or deadline."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import pytest

from privproc import events
from privproc.errors import DeadlineExceededError, UnavailableError, exception_token
from privproc.predictor.scheduler import GenerationScheduler, GenerationStopped, Job


@pytest.fixture
def stopped_events(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, object]]]:
    """The ``predictor.generation_*`` events emitted during the test (taken from the log)."""
    caplog.set_level(logging.DEBUG, logger="privproc.events")
    seen: list[dict[str, object]] = []

    def sink(spec: events.EventSpec, values: Mapping[str, object]) -> bool:
        if spec.name.startswith("predictor.generation_"):
            seen.append({"event": spec.name, **values})
            return True
        return False

    events.install_sink(sink)
    try:
        yield seen
    finally:
        events.install_sink(None)


def _blocker(release: threading.Event, started: threading.Event) -> Callable[[Job[str]], str]:
    """Work that holds the worker until ``release`` is set."""

    def work(job: Job[str]) -> str:
        started.set()
        release.wait(10)
        return "released"

    return work


async def _until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_jobs_run_one_at_a_time_on_one_thread_in_order() -> None:
    scheduler = GenerationScheduler(max_queued=8)
    running, most, threads, order = [0], [0], set(), []
    lock = threading.Lock()

    def work(n: int) -> Callable[[Job[int]], int]:
        def run(job: Job[int]) -> int:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            threads.add(threading.get_ident())
            time.sleep(0.01)
            order.append(n)
            with lock:
                running[0] -= 1
            return n * n

        return run

    results = await asyncio.gather(*(scheduler.run(work(n)) for n in range(6)))
    assert results == [n * n for n in range(6)]
    assert most == [1] and len(threads) == 1 and threading.get_ident() not in threads
    assert order == list(range(6))
    scheduler.close()


async def test_a_full_queue_refuses_and_a_slot_frees_when_a_job_starts() -> None:
    scheduler = GenerationScheduler(max_queued=2)
    release, started = threading.Event(), threading.Event()
    first = asyncio.ensure_future(scheduler.run(_blocker(release, started)))
    await _until(started.is_set)
    queued = [asyncio.ensure_future(scheduler.run(lambda job: "queued")) for _ in range(2)]
    await asyncio.sleep(0)
    assert scheduler.full and scheduler.queued == 2
    with pytest.raises(UnavailableError, match="generation queue full"):
        await scheduler.run(lambda job: "refused")
    release.set()
    assert await first == "released"
    assert await asyncio.gather(*queued) == ["queued", "queued"]
    assert not scheduler.full
    scheduler.close()


async def test_a_job_cancelled_while_queued_never_runs(stopped_events: list[dict[str, object]]) -> None:
    scheduler = GenerationScheduler()
    release, started = threading.Event(), threading.Event()
    first = asyncio.ensure_future(scheduler.run(_blocker(release, started)))
    await _until(started.is_set)
    ran: list[str] = []
    waiting = asyncio.ensure_future(scheduler.run(lambda job: ran.append("ran")))
    await asyncio.sleep(0)
    assert scheduler.queued == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert scheduler.queued == 0  # out of the queue at once, not when the worker gets to it
    release.set()
    await first
    assert await scheduler.run(lambda job: "after") == "after"
    assert ran == []
    assert stopped_events == [
        {"event": "predictor.generation_stopped", "reason": "cancelled", "stage": "queued"}
    ]
    scheduler.close()


async def test_a_deadline_passing_in_the_queue_stops_the_job_unrun(
    stopped_events: list[dict[str, object]],
) -> None:
    scheduler = GenerationScheduler()
    release, started = threading.Event(), threading.Event()
    first = asyncio.ensure_future(scheduler.run(_blocker(release, started)))
    await _until(started.is_set)
    ran: list[str] = []
    with pytest.raises(DeadlineExceededError):
        await scheduler.run(lambda job: ran.append("ran"), deadline=time.monotonic() + 0.05)
    release.set()
    await first
    assert ran == []
    assert stopped_events == [
        {"event": "predictor.generation_stopped", "reason": "deadline", "stage": "queued"}
    ]
    scheduler.close()


def _steps(done: list[int], budget: int = 1000) -> Callable[[Job[int]], int]:
    """Work that takes ``budget`` steps of 1 ms, checking its stop flag at each (a model loop)."""

    def work(job: Job[int]) -> int:
        for step in range(budget):
            if job.stop_reason is not None:
                done.append(step)
                raise GenerationStopped
            time.sleep(0.001)
        done.append(budget)
        return budget

    return work


async def test_a_running_job_stops_at_its_deadline(stopped_events: list[dict[str, object]]) -> None:
    scheduler = GenerationScheduler()
    done: list[int] = []
    with pytest.raises(DeadlineExceededError):
        await scheduler.run(_steps(done), deadline=time.monotonic() + 0.05)
    await _until(lambda: bool(done))
    assert 0 < done[0] < 1000  # stopped early, not at the end of its budget
    assert stopped_events == [
        {"event": "predictor.generation_stopped", "reason": "deadline", "stage": "generating"}
    ]
    scheduler.close()


async def test_cancelling_the_caller_stops_a_running_job(stopped_events: list[dict[str, object]]) -> None:
    scheduler = GenerationScheduler()
    done: list[int] = []
    call = asyncio.ensure_future(scheduler.run(_steps(done)))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _until(lambda: bool(stopped_events))
    assert 0 < done[0] < 1000
    assert stopped_events == [
        {"event": "predictor.generation_stopped", "reason": "cancelled", "stage": "generating"}
    ]
    scheduler.close()


async def test_work_errors_reach_the_caller_and_the_worker_goes_on() -> None:
    scheduler = GenerationScheduler()

    def broken(job: Job[None]) -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await scheduler.run(broken)
    assert await scheduler.run(lambda job: 7) == 7
    scheduler.close()


async def test_a_crashed_worker_is_an_event_and_a_new_worker_takes_over(
    stopped_events: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = GenerationScheduler()
    real = scheduler._execute
    crashes = [1]

    def execute(job: Job[object]) -> None:
        if crashes:
            crashes.pop()
            raise RuntimeError("a bug in the loop")
        real(job)

    monkeypatch.setattr(scheduler, "_execute", execute)
    with pytest.raises(UnavailableError):
        await scheduler.run(lambda job: 1)  # the job it was running fails, it does not hang
    assert await scheduler.run(lambda job: 2) == 2
    assert stopped_events == [
        {
            "event": "predictor.generation_worker_failed",
            "exception": exception_token(RuntimeError()),
            "restarts": 1,
        }
    ]
    scheduler.close()


async def test_closing_stops_what_is_queued() -> None:
    scheduler = GenerationScheduler()
    release, started = threading.Event(), threading.Event()
    first = asyncio.ensure_future(scheduler.run(_blocker(release, started)))
    await _until(started.is_set)
    waiting = asyncio.ensure_future(scheduler.run(lambda job: "never"))
    await asyncio.sleep(0)
    scheduler.close()
    with pytest.raises(GenerationStopped):
        await waiting
    with pytest.raises(UnavailableError):
        await scheduler.run(lambda job: "refused")
    release.set()
    assert await first == "released"
