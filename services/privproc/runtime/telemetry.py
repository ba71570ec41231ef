"""OpenTelemetry for one service process: metrics and traces, private by construction.

:func:`install` sets up a ``MeterProvider`` and a ``TracerProvider`` (``opentelemetry-sdk``)
for one service, resource ``service.name=privproc-<service>``, from the
:class:`TelemetryOptions` group every service's Config holds:

- ``--otlp-endpoint URL``: OTLP to a collector. The URL's scheme picks the protocol:
  ``http://`` or ``https://`` is OTLP/HTTP (protobuf; ``/v1/metrics``, ``/v1/traces`` and
  ``/v1/logs`` are appended to the URL, usually ``http://host:4318``); ``grpc://host:port`` is
  OTLP/gRPC in plaintext and ``grpcs://host:port`` OTLP/gRPC over TLS (usually port 4317).
- otherwise ``--telemetry-dir DIR``: JSON-lines files, one pair per service,
  ``DIR/<service>.metrics.jsonl`` (one line per data point per export, cumulative) and
  ``DIR/<service>.spans.jsonl`` (one line per span); ``privproc stats`` reads them.
- neither: nothing is set up (the API's no-ops; instruments cost nothing).

Privacy by construction: whatever the code records, every exporter sits behind a filter
(:class:`FilteringMetricExporter`, :class:`FilteringSpanExporter`) that lets out only the
attribute keys of :data:`ATTRIBUTES`, each with a value inside its bound (as events' fields
are bounded, :class:`privproc.events.FieldSpec`), a resource of :data:`RESOURCE_KEYS` only,
metric names of our own namespaces, span names that look like the fixed strings the code
uses, and no span events, links or status descriptions (they carry exception texts).
Metric views drop every other attribute key before aggregation too. No OTel
auto-instrumentation is used, and no context is ever propagated: a server span starts from
an empty context (:func:`server_span`), so a client's ``traceparent`` is never continued, and
nothing injects one into an outgoing call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status

from privproc import __version__, events
from privproc.events import FieldSpec
from privproc.runtime import settings, telemetry_files

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# The allow-list


class Pattern:
    """An attribute value that is a string matching ``regex`` (as :class:`FieldSpec`'s ``accepts``)."""

    def __init__(self, regex: str) -> None:
        self._regex = re.compile(regex)

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and bool(self._regex.fullmatch(value))


class EventName:
    """An attribute value that names an event of :data:`privproc.events.REGISTRY`."""

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and value in events.REGISTRY


AttributeSpec = FieldSpec | Pattern | EventName

#: Every attribute key telemetry may carry, with the bound of its value. Nothing else leaves a
#: process: no address, user agent, URL, header, token, key, account or session handle.
ATTRIBUTES: Mapping[str, AttributeSpec] = {
    # OpenTelemetry semantic conventions (rpc.*, http.*, error.type).
    "rpc.system": events.Choice("grpc"),
    "rpc.service": Pattern(r"[A-Za-z][A-Za-z0-9_.]{0,95}"),
    "rpc.method": Pattern(r"[A-Za-z][A-Za-z0-9_]{0,63}"),
    "rpc.grpc.status_code": events.Int(16),
    "http.request.method": events.Choice(
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "_OTHER"
    ),
    # The route a handler was registered under (a fixed string of the code), never the path.
    "http.route": Pattern(r"/[A-Za-z0-9_./{}:~-]{0,127}"),
    "http.response.status_code": events.Int(599),
    "error.type": events.IDENT,
    # privproc's own, declared here.
    "event": EventName(),
    "privproc.service": events.SERVICES,
    "privproc.transport": events.TRANSPORTS,
    "privproc.reason": events.IDENT,
    "privproc.route": events.IDENT,
    "privproc.document": events.IDENT,
    "privproc.token_type": events.Int(0xFFFF),
    "privproc.change": events.Choice("created", "retired", "rotated"),
    "privproc.verified": events.BOOL,
    "privproc.field": events.IDENT,
}

#: The only resource attributes exported (the SDK's own name and version, and ours).
RESOURCE_KEYS = frozenset(
    {
        "service.name",
        "service.version",
        "telemetry.sdk.name",
        "telemetry.sdk.language",
        "telemetry.sdk.version",
    }
)

#: Metric names: OTel's rpc./http. conventions and privproc's own namespace.
_METRIC_NAME = re.compile(r"(rpc|http|privproc)\.[a-z0-9_.]{1,96}")
#: Span names: the fixed strings of the code (an RPC's full method name, METHOD /route, a dotted name).
_SPAN_NAME = re.compile(r"[A-Za-z0-9_./{}: -]{1,128}")
#: What a span whose name is not of that shape is renamed to.
OTHER_SPAN_NAME = "privproc.span"

#: Bucket bounds (seconds) of every duration histogram: OTel's recommended ones.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0)


def allowed_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """``attributes`` without any key outside :data:`ATTRIBUTES` or value outside its bound."""
    if not attributes:
        return {}
    return {
        key: value
        for key, value in attributes.items()
        if key in ATTRIBUTES and ATTRIBUTES[key].accepts(value)
    }


def allowed_resource(resource: Resource) -> Resource:
    return Resource({key: value for key, value in resource.attributes.items() if key in RESOURCE_KEYS})


# ---------------------------------------------------------------------------------------------
# The declared options


def parse_endpoint(value: str) -> str:
    """``value`` if it is an OTLP endpoint URL of a scheme :func:`otlp_protocol` knows."""
    scheme = urlsplit(value).scheme
    if scheme not in ("http", "https", "grpc", "grpcs") or not urlsplit(value).netloc:
        raise ValueError("an OTLP endpoint is http(s)://host:port (OTLP/HTTP) or grpc(s)://host:port")
    return value


@settings.declared(frozen=True)
class TelemetryOptions:
    """Where a service's metrics and traces go (see :mod:`privproc.runtime.telemetry`)."""

    otlp_endpoint: str | None = settings.option(
        default=None,
        parse=parse_endpoint,
        metavar="URL",
        help="OTLP collector: http(s)://host:4318 (OTLP/HTTP) or grpc(s)://host:4317 (OTLP/gRPC)",
    )
    directory: Path | None = settings.option(
        default=None,
        flag="--telemetry-dir",
        help="without an endpoint: write <service>.metrics.jsonl and <service>.spans.jsonl here",
    )
    export_interval_seconds: float = settings.option(
        default=10.0, flag="--telemetry-interval", help="seconds between two metric exports"
    )

    def __post_init__(self) -> None:
        if self.otlp_endpoint is not None:
            parse_endpoint(self.otlp_endpoint)
        if self.export_interval_seconds <= 0:
            raise ValueError("--telemetry-interval must be positive")

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None or self.directory is not None


def otlp_protocol(endpoint: str) -> tuple[str, str, bool]:
    """``(protocol, target, tls)`` of an endpoint: ``("http", URL, _)`` or ``("grpc", host:port, tls)``."""
    parts = urlsplit(endpoint)
    if parts.scheme in ("grpc", "grpcs"):
        return "grpc", parts.netloc, parts.scheme == "grpcs"
    return "http", endpoint.rstrip("/"), parts.scheme == "https"


def for_stack(state_dir: Path, otlp_endpoint: str | None) -> TelemetryOptions:
    """What ``privproc up`` gives each child: the collector, or files in ``STATE_DIR/telemetry``."""
    if otlp_endpoint is not None:
        return TelemetryOptions(otlp_endpoint=otlp_endpoint)
    return TelemetryOptions(directory=state_dir / telemetry_files.STATE_SUBDIR)


def with_options(config: T, options: TelemetryOptions) -> T:
    """``config`` (a service's Config) with its telemetry group set to ``options``, if it has one."""
    if not any(item.name == "telemetry" for item in dataclasses.fields(config)):  # type: ignore[arg-type]
        return config
    return dataclasses.replace(config, telemetry=options)  # type: ignore[type-var]


def metrics_path(directory: Path, service: str) -> Path:
    return directory / f"{service}{telemetry_files.METRICS_SUFFIX}"


def spans_path(directory: Path, service: str) -> Path:
    return directory / f"{service}{telemetry_files.SPANS_SUFFIX}"


# ---------------------------------------------------------------------------------------------
# The filters in front of every exporter


def _filter_point(point: Any) -> Any:
    return dataclasses.replace(point, attributes=allowed_attributes(point.attributes))


def filter_metrics(data: MetricsData) -> MetricsData:
    """``data`` with only allowed metric names, attributes and resource keys."""
    resource_metrics = []
    for resource in data.resource_metrics:
        scopes = []
        for scope in resource.scope_metrics:
            kept: list[Metric] = []
            for metric in scope.metrics:
                if not _METRIC_NAME.fullmatch(metric.name):
                    continue
                points_of: Any = metric.data
                points = [_filter_point(point) for point in points_of.data_points]
                kept.append(
                    dataclasses.replace(metric, data=dataclasses.replace(points_of, data_points=points))
                )
            scopes.append(dataclasses.replace(scope, metrics=kept))
        resource_metrics.append(
            dataclasses.replace(resource, resource=allowed_resource(resource.resource), scope_metrics=scopes)
        )
    return MetricsData(resource_metrics=resource_metrics)


class _Outage:
    """Reports an exporter's failures once per outage (``telemetry.export_failed``), not per export.

    The SDK's own log lines (free text, with the collector's address) are silenced by
    :func:`install`; this event is what an operator sees instead.
    """

    def __init__(self, signal: str) -> None:
        self._signal = signal
        self._failing = False

    def record(self, ok: bool) -> None:
        if not ok and not self._failing:
            events.emit(events.TelemetryExportFailed(signal=self._signal))
        self._failing = not ok


class FilteringMetricExporter(MetricExporter):
    """Exports through ``inner`` only what the allow-list lets out (:func:`filter_metrics`)."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self._outage = _Outage("metrics")

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        result = self.inner.export(filter_metrics(metrics_data), timeout_millis=timeout_millis, **kwargs)
        self._outage.record(result is MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def filter_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` with a fixed-shape name, allowed attributes, no events, links or texts."""
    name = span.name if _SPAN_NAME.fullmatch(span.name) else OTHER_SPAN_NAME
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=allowed_resource(span.resource),
        attributes=allowed_attributes(span.attributes),
        kind=span.kind,
        instrumentation_scope=span.instrumentation_scope,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
    )


class FilteringSpanExporter(SpanExporter):
    """Exports through ``inner`` only filtered copies of spans (:func:`filter_span`)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._outage = _Outage("spans")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export([filter_span(span) for span in spans])
        self._outage.record(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def allowed_log(record: ReadableLogRecord) -> ReadableLogRecord | None:
    """``record`` if it is a declared event within its bounds (:func:`privproc.events.rejection`):
    its body the event's name, its attributes exactly the event's fields; else ``None``.

    The copy carries no trace context and only the allowed resource keys.
    """
    log = record.log_record
    name = log.body
    if not isinstance(name, str) or events.rejection(name, dict(log.attributes or {})) is not None:
        return None
    log.trace_id, log.span_id = 0, 0
    return dataclasses.replace(record, resource=allowed_resource(record.resource))


class FilteringLogExporter(LogRecordExporter):
    """Exports through ``inner`` only the log records :func:`allowed_log` lets out (the CVM's events)."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self._outage = _Outage("logs")

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        allowed = [kept for kept in map(allowed_log, batch) if kept is not None]
        if not allowed:
            return LogRecordExportResult.SUCCESS
        result = self.inner.export(allowed)
        self._outage.record(result is LogRecordExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


# ---------------------------------------------------------------------------------------------
# JSON-lines exporters (no collector configured)


class JsonLinesFile:
    """An append-only file (0600) written one whole line at a time, shared by threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._out: IO[str] = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, records: Iterator[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n" for record in records)
        if not text:
            return
        with self._lock:
            self._out.write(text)
            self._out.flush()

    def close(self) -> None:
        with self._lock:
            self._out.close()


def metric_records(service: str, data: MetricsData) -> Iterator[dict[str, Any]]:
    """One JSON-lines record per data point of ``data`` (the layout ``privproc stats`` reads)."""
    now = round(time.time(), 3)
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    record: dict[str, Any] = {
                        "ts": now,
                        "service": service,
                        "metric": metric.name,
                        "unit": metric.unit or "",
                        "attributes": dict(point.attributes or {}),
                    }
                    if isinstance(point, HistogramDataPoint):
                        record.update(
                            kind="histogram",
                            count=point.count,
                            sum=point.sum,
                            bounds=list(point.explicit_bounds),
                            buckets=list(point.bucket_counts),
                        )
                    elif isinstance(point, NumberDataPoint):
                        kind = "sum" if isinstance(metric.data, Sum) else "gauge"
                        record.update(kind=kind, value=point.value)
                    else:
                        continue
                    yield record


class JsonLinesMetricExporter(MetricExporter):
    """Appends each export to ``<service>.metrics.jsonl`` (cumulative values)."""

    def __init__(self, service: str, path: Path) -> None:
        super().__init__(preferred_temporality={})
        self._service = service
        self._file = JsonLinesFile(path)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            self._file.write(metric_records(self._service, metrics_data))
        except OSError:
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._file.close()


def span_record(service: str, span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    parent = span.parent
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "ts": round(end / 1e9, 3),
        "service": service,
        "name": span.name,
        "kind": span.kind.name.lower(),
        "trace_id": f"{context.trace_id:032x}" if context is not None else None,
        "span_id": f"{context.span_id:016x}" if context is not None else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "duration_ms": round((end - start) / 1e6, 3),
        "status": span.status.status_code.name.lower(),
        "attributes": dict(span.attributes or {}),
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span to ``<service>.spans.jsonl``."""

    def __init__(self, service: str, path: Path) -> None:
        self._service = service
        self._file = JsonLinesFile(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._file.write(span_record(self._service, span) for span in spans)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------------------
# Setting it up


def resource(service: str) -> Resource:
    """``service.name=privproc-<service>`` (built directly: no OTEL_RESOURCE_ATTRIBUTES, no detectors)."""
    return Resource(
        {
            "service.name": f"privproc-{service}",
            "service.version": __version__,
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.language": "python",
        }
    )


#: Per signal: the OTLP/gRPC exporter class, the OTLP/HTTP one (``module:Class``), and the
#: OTLP/HTTP path appended to the endpoint.
_OTLP_EXPORTERS = {
    "metrics": (
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter:OTLPMetricExporter",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter",
        "/v1/metrics",
    ),
    "traces": (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter",
        "/v1/traces",
    ),
    "logs": (
        "opentelemetry.exporter.otlp.proto.grpc._log_exporter:OTLPLogExporter",
        "opentelemetry.exporter.otlp.proto.http._log_exporter:OTLPLogExporter",
        "/v1/logs",
    ),
}


def _otlp_exporter(signal: str, endpoint: str) -> Any:
    """The OTLP exporter of ``signal`` for ``endpoint``, by its scheme (see :func:`otlp_protocol`).

    The exporters' modules (grpc, requests) are imported only by a process that exports to one.
    """
    grpc_class, http_class, http_path = _OTLP_EXPORTERS[signal]
    protocol, target, tls = otlp_protocol(endpoint)
    module_name, _, class_name = (grpc_class if protocol == "grpc" else http_class).partition(":")
    exporter_class = getattr(importlib.import_module(module_name), class_name)
    if protocol == "grpc":
        return exporter_class(endpoint=target, insecure=not tls)
    return exporter_class(endpoint=target + http_path)


def metric_exporter(service: str, options: TelemetryOptions) -> MetricExporter:
    """The exporter ``options`` name, behind :class:`FilteringMetricExporter`."""
    inner: MetricExporter
    if options.otlp_endpoint is not None:
        inner = _otlp_exporter("metrics", options.otlp_endpoint)
    else:
        assert options.directory is not None
        inner = JsonLinesMetricExporter(service, metrics_path(options.directory, service))
    return FilteringMetricExporter(inner)


def span_exporter(service: str, options: TelemetryOptions) -> SpanExporter:
    """The exporter ``options`` name, behind :class:`FilteringSpanExporter`."""
    inner: SpanExporter
    if options.otlp_endpoint is not None:
        inner = _otlp_exporter("traces", options.otlp_endpoint)
    else:
        assert options.directory is not None
        inner = JsonLinesSpanExporter(service, spans_path(options.directory, service))
    return FilteringSpanExporter(inner)


def log_provider(service: str, otlp_endpoint: str) -> LoggerProvider:
    """A LoggerProvider exporting to the collector at ``otlp_endpoint`` through :class:`FilteringLogExporter`.

    Only the log sidecar exports logs (the CVM's allowed events); other services' events stay
    in their own log.
    """
    inner: LogRecordExporter = _otlp_exporter("logs", otlp_endpoint)
    provider = LoggerProvider(resource=resource(service))
    provider.add_log_record_processor(BatchLogRecordProcessor(FilteringLogExporter(inner)))
    return provider


def views() -> list[View]:
    """One view for every instrument: only allow-listed attribute keys are aggregated."""
    return [View(instrument_name="*", attribute_keys=set(ATTRIBUTES))]


@dataclasses.dataclass
class Telemetry:
    """The providers :func:`install` set up (``None``: telemetry is off)."""

    meter_provider: MeterProvider | None = None
    tracer_provider: TracerProvider | None = None

    def shutdown(self) -> None:
        """Export what is left and stop (the process is about to exit)."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def providers(
    service: str, metric_exporter: MetricExporter, span_exporter: SpanExporter, interval_seconds: float
) -> Telemetry:
    """A MeterProvider and a TracerProvider for ``service`` exporting to the (filtering) exporters."""
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval_seconds * 1000)
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource(service), views=views())
    tracer_provider = TracerProvider(resource=resource(service))
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, schedule_delay_millis=1000))
    return Telemetry(meter_provider, tracer_provider)


def install(service: str, options: TelemetryOptions | None) -> Telemetry:
    """Set this process's global providers for ``service`` from ``options`` (off: nothing is set)."""
    if options is None or not options.enabled:
        return Telemetry()
    # The SDK and its exporters log free text (the collector's address, exception texts): quiet,
    # like the other libraries (events.configure_logging); failures are telemetry.export_failed.
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    installed = providers(
        service,
        metric_exporter(service, options),
        span_exporter(service, options),
        options.export_interval_seconds,
    )
    assert installed.meter_provider is not None and installed.tracer_provider is not None
    metrics.set_meter_provider(installed.meter_provider)
    trace.set_tracer_provider(installed.tracer_provider)
    return installed


# ---------------------------------------------------------------------------------------------
# What the adapters record

_METER = metrics.get_meter("privproc")
_TRACER = trace.get_tracer("privproc")

RPC_SERVER_DURATION = _METER.create_histogram(
    telemetry_files.RPC_SERVER_DURATION,
    unit="s",
    description="gRPC calls served, by service, method and status code",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
)
HTTP_SERVER_DURATION = _METER.create_histogram(
    telemetry_files.HTTP_SERVER_DURATION,
    unit="s",
    description="HTTP requests served, by method, route and status",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
)
ACTIVE_REQUESTS = _METER.create_up_down_counter(
    "privproc.server.active_requests", unit="{request}", description="Requests being served now"
)
REQUEST_ERRORS = _METER.create_counter(
    telemetry_files.REQUEST_ERRORS, unit="{request}", description="Requests refused or failed, by reason"
)


def meter(name: str) -> metrics.Meter:
    """A meter for a service's domain instruments (``privproc.<service>``)."""
    return metrics.get_meter(name)


def record_error(service: str, transport: str, reason: str) -> None:
    """Count a refused or failed request by its reason (a typed error's reason or an exception's type)."""
    REQUEST_ERRORS.add(
        1, {"privproc.service": service, "privproc.transport": transport, "error.type": reason}
    )


@contextlib.contextmanager
def server_span(name: str, attributes: Mapping[str, Any]) -> Iterator[trace.Span]:
    """A SERVER span for one request, always a root: it never continues a caller's trace.

    The span starts from an empty context (nothing is extracted from the request) and is
    current inside the block, so spans the service starts there are its children. An
    exception's text is never recorded: the adapter sets the span's status itself.
    """
    with _TRACER.start_as_current_span(
        name,
        context=otel_context.Context(),
        kind=SpanKind.SERVER,
        attributes=allowed_attributes(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


@contextlib.contextmanager
def span(name: str) -> Iterator[trace.Span]:
    """An INTERNAL span inside the current one (a step of one service's work); a fixed ``name``."""
    with _TRACER.start_as_current_span(
        name, record_exception=False, set_status_on_exception=False
    ) as current:
        yield current


def elapsed(started: float) -> float:
    return time.perf_counter() - started
