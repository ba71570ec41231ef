"""``privproc serve log-sidecar``: the CVM's only log path, a thin adapter around the filter.

It listens on a Unix socket (a memory-backed volume the predictor's container shares), runs
each connection's bytes through :class:`~privproc.logsidecar.filter.StreamFilter`, and exports
what passes (coarse timestamps, stamped here): with an OTLP endpoint (``--otlp-endpoint``), as
OpenTelemetry log records (:class:`OtlpEventExporter`), and the CVM's aggregate totals
events also as counters; otherwise as JSON lines to a file or stderr. Its own events — the drop
totals every interval, its start and stop — take the same path, and its drop totals are also
the ``privproc.sidecar.records`` counter (by outcome) wherever its metrics go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO, cast

from opentelemetry import context as otel_context
from opentelemetry import metrics
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider

from privproc import events
from privproc.errors import ConfigError
from privproc.logsidecar.filter import StreamFilter, Totals
from privproc.runtime import settings, tasks, telemetry_files
from privproc.runtime.telemetry import TelemetryOptions, log_provider

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


def is_aggregate(spec: events.EventSpec) -> bool:
    """A CVM's periodic totals event: every field a count since the last report (``Total``)."""
    return (
        spec.name.startswith("predictor.")
        and bool(spec.fields)
        and all(field.kind is int and field.max_value == 1 << 32 for field in spec.fields.values())
    )


class OtlpEventExporter:
    """Exports allowed events as OpenTelemetry: each a log record, aggregates also as counters.

    A log record's body is the event's name, its attributes exactly the event's fields, its
    timestamps the event's coarse one, and it carries no trace context; the log exporter
    checks each against the registry again (:class:`~privproc.runtime.telemetry.FilteringLogExporter`).
    Each field of an aggregate event (:func:`is_aggregate`) is added to the counter
    ``privproc.<event name>`` with the attribute ``privproc.field=<field>``.
    """

    def __init__(self, provider: LoggerProvider) -> None:
        self.provider = provider
        self._logger = provider.get_logger("privproc.logsidecar")
        self._counters: dict[str, metrics.Counter] = {}

    def write(self, name: str, fields: Mapping[str, object]) -> None:
        spec = events.REGISTRY[name]
        stamp = int(events.timestamp(events.timestamp_resolution(spec)) * 1_000_000_000)
        self._logger.emit(
            timestamp=stamp,
            observed_timestamp=stamp,
            context=otel_context.Context(),
            severity_number=_SEVERITY[spec.level],
            severity_text=spec.level.name,
            body=name,
            attributes=cast(Mapping[str, Any], fields),
            event_name=name,
        )
        if is_aggregate(spec):
            counter = self._counters.get(name)
            if counter is None:
                counter = _METER.create_counter(f"privproc.{name}", unit="{count}")
                self._counters[name] = counter
            for field, value in fields.items():
                if isinstance(value, int) and value > 0:
                    counter.add(value, {"privproc.field": field})

    def flush(self) -> None:
        """Nothing to do per batch: records leave on the processor's schedule (and at close)."""

    def sink(self, spec: events.EventSpec, values: Mapping[str, object]) -> bool:
        """The sidecar's own events (installed with :func:`privproc.events.install_sink`)."""
        self.write(spec.name, values)
        return True

    def close(self) -> None:
        self.provider.shutdown()


_METER = metrics.get_meter("privproc.logsidecar")
_SEVERITY = {
    events.Level.DEBUG: SeverityNumber.DEBUG,
    events.Level.INFO: SeverityNumber.INFO,
    events.Level.WARNING: SeverityNumber.WARN,
    events.Level.ERROR: SeverityNumber.ERROR,
}


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
        self.exporter: JsonLinesExporter | OtlpEventExporter
        self._out: TextIO | None = None
        if config.telemetry.otlp_endpoint is not None:
            self.exporter = OtlpEventExporter(log_provider("log-sidecar", config.telemetry.otlp_endpoint))
        else:
            try:
                self._out = (
                    open(config.output, "a", encoding="utf-8") if config.output is not None else sys.stderr  # noqa: SIM115
                )
            except OSError as err:
                raise ConfigError("--output is not a writable file") from err
            self.exporter = JsonLinesExporter(self._out)
        totals = self.totals
        _METER.create_observable_counter(
            telemetry_files.SIDECAR_RECORDS,
            callbacks=[
                lambda _: [
                    metrics.Observation(count, {"privproc.field": outcome})
                    for outcome, count in totals.counts().items()
                ]
            ],
            unit="{record}",
            description="Records let out (accepted) and dropped, by reason, since the sidecar started",
        )
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
        if isinstance(self.exporter, OtlpEventExporter):
            self.exporter.close()
        elif self._out is not None and self._out is not sys.stderr:
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
