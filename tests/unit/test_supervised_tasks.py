"""Supervised background tasks: a failing body is logged and restarted, a fatal one stops the service."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from privproc import events
from privproc.errors import ConfigError, UpstreamError, exception_token
from privproc.runtime import lifecycle, tasks


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    found = []
    for record in caplog.records:
        line = json.loads(record.getMessage())
        if line["event"] == name:
            found.append(line)
    return found


async def test_failing_body_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    done = asyncio.Event()

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise UpstreamError("cdn unreachable")
        if calls == 2:
            raise KeyError("internal")
        done.set()
        await asyncio.Event().wait()  # a healthy loop runs until cancelled

    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        task = tasks.supervise("test.loop", body, backoff_seconds=0.01, max_backoff_seconds=0.05)
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    failed = _events(caplog, "task.failed")
    assert [(e["task"], e["reason"], e["exception"], e["attempt"]) for e in failed] == [
        ("test.loop", "upstream", "upstreamerror", 1),
        ("test.loop", "internal", "keyerror", 2),
    ]
    assert failed[1]["backoff_millis"] == 2 * int(failed[0]["backoff_millis"])  # type: ignore[call-overload]
    # The error's text never reaches the log.
    assert "unreachable" not in caplog.text


async def test_backoff_is_capped() -> None:
    calls = 0
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls < 6:
            raise UpstreamError("down")

    mp = pytest.MonkeyPatch()
    mp.setattr(asyncio, "sleep", fake_sleep)
    try:
        await tasks.supervise("test.capped", body, backoff_seconds=1.0, max_backoff_seconds=4.0)
    finally:
        mp.undo()
    assert sleeps == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert calls == 6


async def test_body_that_returns_ends_the_task() -> None:
    async def body() -> None:
        return None

    task = tasks.supervise("test.once", body)
    await task
    assert task.done() and task.exception() is None


async def test_fatal_error_without_handler_ends_the_task_with_it(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        raise ConfigError("credential refused")

    with caplog.at_level(logging.DEBUG, logger="privproc.events"), pytest.raises(ConfigError):
        await tasks.supervise("test.fatal", body)
    assert [e["task"] for e in _events(caplog, "task.fatal")] == ["test.fatal"]
    assert _events(caplog, "task.failed") == []


class _ServiceWithFatalTask:
    name = "gateway"

    def __init__(self) -> None:
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, object]:
        async def body() -> None:
            await asyncio.sleep(0)
            raise ConfigError("cannot go on")

        self.task = tasks.supervise("gateway.rotation", body)
        return {"grpc": "127.0.0.1:1"}

    async def stop(self) -> None:
        self.stopped = True


async def test_fatal_task_stops_the_service_with_a_nonzero_status(caplog: pytest.LogCaptureFixture) -> None:
    service = _ServiceWithFatalTask()
    out = io.StringIO()
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        status = await asyncio.wait_for(lifecycle.run(service, ready_out=out), 10)
    assert status == lifecycle.EXIT_TASK_FAILED
    assert service.stopped
    assert json.loads(out.getvalue())["ready"] == {"grpc": "127.0.0.1:1"}
    assert [e["task"] for e in _events(caplog, "service.failed")] == ["gateway.rotation"]


def test_names_and_backoff_are_checked() -> None:
    async def body() -> None:
        return None

    for bad in ("Rotation", "with space", "", "x" * 65, "_private"):
        with pytest.raises(ValueError):
            tasks.supervise(bad, body)
    with pytest.raises(ValueError):
        tasks.supervise("ok", body, backoff_seconds=0)
    with pytest.raises(ValueError):
        tasks.supervise("ok", body, backoff_seconds=2, max_backoff_seconds=1)


def test_exception_names_fit_the_event_pattern() -> None:
    class _InactiveRpcError(Exception):
        pass

    name = exception_token(_InactiveRpcError())
    assert name == "inactiverpcerror"
    assert events.REGISTRY["task.failed"].fields["exception"].accepts(name)
