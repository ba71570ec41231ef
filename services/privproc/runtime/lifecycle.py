"""Running one service as a process: ready line, signals, graceful shutdown.

A service process prints exactly one line to stdout once it serves — a JSON
object of its endpoints — so a supervisor (``privproc up``) learns the
ports it bound without racing for free ports. Everything else goes to
stderr as registry events.

A background task that cannot go on (see :mod:`privproc.runtime.tasks`)
stops the service as loudly as a signal does, and :func:`run` then returns
a non-zero exit status: the process never keeps serving with a dead task.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Protocol, TextIO

from privproc import events
from privproc.runtime import tasks

#: Exit status of a service stopped by a task that could not go on.
EXIT_TASK_FAILED = 1


class Service(Protocol):
    """What :func:`run` drives: start (returning endpoints) and stop."""

    name: str

    async def start(self) -> dict[str, object]: ...

    async def stop(self) -> None: ...


async def run(service: Service, *, ready_out: TextIO | None = None) -> int:
    """Start ``service``, announce it, serve until SIGTERM/SIGINT or a fatal task, then stop it.

    Returns the process exit status: 0 after a signal, :data:`EXIT_TASK_FAILED`
    when a supervised task could not go on.
    """
    out = ready_out if ready_out is not None else sys.stdout
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    failed: list[str] = []

    def on_fatal(task: str) -> None:
        failed.append(task)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Installed before start(): every task the service supervises copies this context.
    tasks.fatal_handler(on_fatal)
    endpoints = await service.start()
    out.write(json.dumps({"service": service.name, "ready": endpoints}) + "\n")
    out.flush()
    try:
        await stop.wait()
    finally:
        events.emit(events.ServiceStopping(service=service.name))
        await service.stop()
        events.emit(events.ServiceStopped(service=service.name))
    if failed:
        events.emit(events.ServiceFailed(service=service.name, task=failed[0]))
        return EXIT_TASK_FAILED
    return 0
