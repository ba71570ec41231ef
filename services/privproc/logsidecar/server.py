"""``privproc serve log-sidecar``: the CVM's only log path, a thin adapter around the filter.

It listens on a Unix socket (a memory-backed volume the predictor's container shares), runs
each connection's bytes through :class:`~privproc.logsidecar.filter.StreamFilter`, and writes
what passes as JSON lines (coarse timestamps, stamped here) to a file or stderr. Its own events —
the drop totals every interval, its start and stop — take the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from privproc import events
from privproc.errors import ConfigError
from privproc.logsidecar.filter import StreamFilter, Totals
from privproc.runtime import settings, tasks
from privproc.runtime.telemetry import TelemetryOptions

#: Bytes read from a connection at a time (the filter holds at most one record beyond it).
_READ_BYTES = 64 * 1024


@settings.declared("log-sidecar")
class LogSidecarConfig:
    """``privproc serve log-sidecar``: lets out only the registry's events, within their bounds."""

    socket_path: Path = settings.option(help="Unix socket the CVM's processes write their events to")
    output: Path | None = settings.option(
        default=None, help="file the allowed events are appended to as JSON lines (default: stderr)"
    )
    interval_seconds: float = settings.option(
        default=60.0, help="seconds between two reports of the drop totals"
    )
    allowlist_digest: str | None = settings.option(
        default=None,
        metavar="HEX",
        help="SHA-256 of the allow-list it was built with: it refuses to start with another",
    )
    max_connections: int = settings.option(default=16, help="local connections served at once")
    telemetry: TelemetryOptions = settings.group(
        help="where its metrics and traces go", default_factory=TelemetryOptions
    )


class JsonLinesExporter:
    """Writes allowed events as JSON lines: ``{"ts": COARSE, "event": NAME, FIELD: VALUE, ...}``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, name: str, fields: Mapping[str, object]) -> None:
        spec = events.REGISTRY[name]
        record = {"ts": events.timestamp(events.timestamp_resolution(spec)), "event": name, **fields}
        self.out.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")

    def flush(self) -> None:
        self.out.flush()

    def sink(self, spec: events.EventSpec, values: Mapping[str, object]) -> bool:
        """The sidecar's own events (installed with :func:`privproc.events.install_sink`)."""
        self.write(spec.name, values)
        self.flush()
        return True


class LogSidecarService:
    name = "log-sidecar"

    def __init__(self, config: LogSidecarConfig) -> None:
        if config.interval_seconds <= 0:
            raise ConfigError("--interval-seconds must be positive")
        if (
            config.allowlist_digest is not None
            and config.allowlist_digest.lower() != events.allowlist_digest()
        ):
            raise ConfigError(
                "the event allow-list differs from the one this sidecar was built with "
                "(--allowlist-digest): refusing to start"
            )
        self.config = config
        self.totals = Totals()
        try:
            self._out: TextIO = (
                open(config.output, "a", encoding="utf-8") if config.output is not None else sys.stderr  # noqa: SIM115
            )
        except OSError as err:
            raise ConfigError("--output is not a writable file") from err
        self.exporter = JsonLinesExporter(self._out)
        self._slots = asyncio.Semaphore(config.max_connections)
        self._server: asyncio.Server | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> dict[str, object]:
        events.install_sink(self.exporter.sink)
        path = self.config.socket_path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket left by a previous run
        self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=_READ_BYTES)
        path.chmod(0o600)
        self._reporter = tasks.supervise("sidecar.report", self._report_every_interval)
        return {"socket": str(path)}

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in [*self._connections, *([self._reporter] if self._reporter else [])]:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._reporter is not None:
            await asyncio.gather(self._reporter, return_exceptions=True)
        events.emit(events.SidecarDropped(**self.totals.counts()))
        self.exporter.flush()
        events.install_sink(None)
        with contextlib.suppress(FileNotFoundError):
            self.config.socket_path.unlink()
        if self._out is not sys.stderr:
            self._out.close()

    async def _report_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_seconds)
            events.emit(events.SidecarDropped(**self.totals.counts()))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            async with self._slots:
                stream = StreamFilter(self.totals)
                while not stream.broken:
                    data = await reader.read(_READ_BYTES)
                    if not data:
                        break
                    for event in stream.feed(data):
                        self.exporter.write(event.name, event.fields)
                    self.exporter.flush()
        except ConnectionError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()


def build(config: LogSidecarConfig) -> LogSidecarService:
    """The service ``privproc serve log-sidecar`` runs."""
    return LogSidecarService(config)
