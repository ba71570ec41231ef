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
from privproc.runtime.http import HttpServer
from privproc.runtime.rpc import GrpcServer

#: Exit status of a service stopped by a task that could not go on.
EXIT_TASK_FAILED = 1


class Service(Protocol):
    """What :func:`run` drives: start (returning endpoints) and stop."""

    name: str

    async def start(self) -> dict[str, object]: ...

    async def stop(self) -> None: ...


class FrontsConfig(Protocol):
    """Where a service with a gRPC and an HTTP front listens."""

    @property
    def host(self) -> str: ...
    @property
    def grpc_port(self) -> int: ...
    @property
    def http_port(self) -> int: ...


async def start_fronts(
    service: str, config: FrontsConfig, grpc: GrpcServer, http: HttpServer
) -> tuple[int, int]:
    """Start ``service``'s gRPC then HTTP front, announcing each; return the ports they bound."""
    grpc_port = await grpc.start(config.host, config.grpc_port)
    http_port = await http.start(config.host, config.http_port)
    events.emit(events.ServiceStarted(service=service, transport="grpc", port=grpc_port))
    events.emit(events.ServiceStarted(service=service, transport="http", port=http_port))
    return grpc_port, http_port


async def run(service: Service, *, ready_out: TextIO | None = None) -> int:
    """Start ``service``, announce it, serve until SIGTERM/SIGINT or a fatal task, then stop it.

    A service with a ``finished`` :class:`asyncio.Event` also stops, exit 0, once it is set.

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
    # A one-shot service (an init container's) sets its ``finished`` event when its work is done.
    finished: asyncio.Event | None = getattr(service, "finished", None)
    waits = [asyncio.ensure_future(stop.wait())]
    if finished is not None:
        waits.append(asyncio.ensure_future(finished.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        events.emit(events.ServiceStopping(service=service.name))
        await service.stop()
        events.emit(events.ServiceStopped(service=service.name))
    if failed:
        events.emit(events.ServiceFailed(service=service.name, task=failed[0]))
        return EXIT_TASK_FAILED
    return 0
