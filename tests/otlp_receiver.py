"""A tiny OTLP/gRPC collector for tests: the ``opentelemetry-proto`` collector services on a real server.

:class:`OtlpReceiver` keeps every export request it gets (metrics, traces, logs) and offers
what tests assert on: the services that exported, metric names, spans, log records, every
attribute key seen (resources, data points, spans, span events, log records), and the raw
bytes of everything received (to search for a canary). ``endpoint`` is what
``privproc up --otlp-endpoint`` takes. The ``otlp_receiver`` fixture (tests/conftest.py)
starts one per test.

It is a plain (threaded) gRPC server, so both synchronous tests driving subprocesses and
asyncio tests can use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def attributes(values: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` list → dict of plain values."""
    out: dict[str, Any] = {}
    for item in values:
        value: common_pb2.AnyValue = item.value
        kind = value.WhichOneof("value")
        out[item.key] = getattr(value, kind) if kind is not None else None
    return out


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    span: trace_pb2.Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def is_root(self) -> bool:
        return not self.span.parent_span_id

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


@dataclass(frozen=True)
class ReceivedLog:
    service: str
    record: logs_pb2.LogRecord

    @property
    def body(self) -> str:
        return self.record.body.string_value

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.record.attributes)


class OtlpReceiver:
    """Collects OTLP/gRPC exports (plaintext, loopback)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        receiver = self

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                with receiver._lock:
                    receiver.metrics.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                with receiver._lock:
                    receiver.traces.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                with receiver._lock:
                    receiver.logs.append(request)
                return logs_service_pb2.ExportLogsServiceResponse()

        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)  # type: ignore[no-untyped-call]
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)  # type: ignore[no-untyped-call]
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        """``grpc://127.0.0.1:PORT``: OTLP/gRPC, as ``--otlp-endpoint`` takes it."""
        return f"grpc://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)

    # --- what arrived ---------------------------------------------------------------------

    def _resource_metrics(self) -> Iterator[Any]:
        with self._lock:
            requests = list(self.metrics)
        for request in requests:
            yield from request.resource_metrics

    def metric_points(self) -> Iterator[tuple[str, str, Any]]:
        """``(service.name, metric name, data point)`` of every data point received."""
        for resource in self._resource_metrics():
            service = attributes(resource.resource.attributes).get("service.name", "")
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    for point in getattr(metric, kind).data_points:
                        yield service, metric.name, point

    def metric_names(self, service: str | None = None) -> set[str]:
        return {name for who, name, _ in self.metric_points() if service is None or who == service}

    def services(self) -> set[str]:
        """``service.name`` of every resource that exported anything."""
        names = {attributes(r.resource.attributes).get("service.name", "") for r in self._resource_metrics()}
        names |= {span.service for span in self.spans()}
        names |= {log.service for log in self.log_records()}
        return names

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            requests = list(self.traces)
        found = []
        for request in requests:
            for resource in request.resource_spans:
                service = attributes(resource.resource.attributes).get("service.name", "")
                for scope in resource.scope_spans:
                    found += [ReceivedSpan(service, span) for span in scope.spans]
        return found

    def log_records(self) -> list[ReceivedLog]:
        with self._lock:
            requests = list(self.logs)
        found = []
        for request in requests:
            for resource in request.resource_logs:
                service = attributes(resource.resource.attributes).get("service.name", "")
                for scope in resource.scope_logs:
                    found += [ReceivedLog(service, record) for record in scope.log_records]
        return found

    def attribute_keys(self) -> set[str]:
        """Every attribute key of data points and spans (and their events and links).

        Log records (the CVM's events, from its log sidecar) carry their event's fields: check
        them against the event registry instead (:meth:`log_records`).
        """
        keys = {key for _, _, point in self.metric_points() for key in attributes(point.attributes)}
        for span in self.spans():
            keys |= set(span.attributes)
            for event in span.span.events:
                keys |= set(attributes(event.attributes))
            for link in span.span.links:
                keys |= set(attributes(link.attributes))
        return keys

    def resource_keys(self) -> set[str]:
        keys = {key for r in self._resource_metrics() for key in attributes(r.resource.attributes)}
        with self._lock:
            requests: list[Any] = [*self.traces, *self.logs]
        for request in requests:
            for resource in [*getattr(request, "resource_spans", ()), *getattr(request, "resource_logs", ())]:
                keys |= set(attributes(resource.resource.attributes))
        return keys

    def raw(self) -> bytes:
        """Every export request received, serialized: to search for bytes that must not be there."""
        with self._lock:
            requests: list[Any] = [*self.metrics, *self.traces, *self.logs]
        return b"".join(request.SerializeToString() for request in requests)

    def wait_for(self, condition: Callable[[OtlpReceiver], bool], seconds: float = 30.0) -> None:
        """Wait until ``condition(self)`` holds (AssertionError after ``seconds``)."""
        deadline = time.monotonic() + seconds
        while not condition(self):
            assert time.monotonic() < deadline, "the OTLP receiver did not get what was expected"
            time.sleep(0.1)
