"""Running one service as a process: ready line, signals, graceful shutdown.

A service process prints exactly one line to stdout once it serves — a JSON
object of its endpoints — so a supervisor (``privproc up``) learns the
ports it bound without racing for free ports. Everything else goes to
stderr as registry events.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Protocol, TextIO

from privproc import events


class Service(Protocol):
    """What :func:`run` drives: start (returning endpoints) and stop."""

    name: str

    async def start(self) -> dict[str, object]: ...

    async def stop(self) -> None: ...


async def run(service: Service, *, ready_out: TextIO | None = None) -> None:
    """Start ``service``, announce it, serve until SIGTERM/SIGINT, then stop it."""
    out = ready_out if ready_out is not None else sys.stdout
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    endpoints = await service.start()
    out.write(json.dumps({"service": service.name, "ready": endpoints}) + "\n")
    out.flush()
    try:
        await stop.wait()
    finally:
        events.emit("service.stopping", service=service.name)
        await service.stop()
        events.emit("service.stopped", service=service.name)
