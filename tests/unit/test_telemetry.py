"""The telemetry allow-list in front of every exporter, the endpoint rule, and ``privproc stats``'s table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LogRecordLimits, ReadableLogRecord
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanContext, Status, StatusCode

from privproc.cli import stats
from privproc.errors import ConfigError
from privproc.relay.server import RelayConfig
from privproc.runtime import settings, telemetry

#: What an instrumentation library would happily record about a client.
LEAKY = {
    "client.address": "198.51.100.7",
    "net.peer.ip": "198.51.100.7",
    "url.full": "https://privproc.local/v1/sessions?account=ana",
    "user_agent.original": "client-agent/9.9",
    "http.request.header.traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "enduser.id": "ana",
    "session.id": "handle-0123",
}


def _metrics(attributes: dict[str, Any], name: str = "rpc.server.duration") -> Any:
    """One export of a histogram and a counter recorded with ``attributes`` (no views: raw)."""
    reader = InMemoryMetricReader()
    resource = Resource({"service.name": "privproc-test", "host.name": "node-7", "process.pid": 42})
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    meter = provider.get_meter("test")
    meter.create_histogram(name, unit="s").record(0.01, attributes)
    meter.create_counter("privproc.server.errors").add(1, attributes)
    meter.create_counter("custom.leak").add(1, attributes)
    data = reader.get_metrics_data()
    assert data is not None
    return data


def _points(data: Any) -> list[tuple[str, dict[str, Any]]]:
    return [
        (metric.name, dict(point.attributes))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]


def test_metrics_keep_only_allowed_keys_values_names_and_resource() -> None:
    allowed = {
        "rpc.system": "grpc",
        "rpc.method": "Handle",
        "rpc.grpc.status_code": 0,
        "error.type": "rate_limited",
    }
    out_of_bounds = {
        "http.route": "no-leading-slash",
        "http.response.status_code": 9999,
        "privproc.reason": "Has Spaces",
    }
    data = telemetry.filter_metrics(_metrics({**allowed, **LEAKY, **out_of_bounds}))
    points = _points(data)
    assert {name for name, _ in points} == {"rpc.server.duration", "privproc.server.errors"}
    for _, attributes in points:
        assert attributes == allowed
    for resource in data.resource_metrics:
        assert set(resource.resource.attributes) == {"service.name"}


def test_the_views_drop_unknown_keys_before_aggregation() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=telemetry.views())
    counter = provider.get_meter("test").create_counter("privproc.server.errors")
    # Two clients, one reason: one series, not two.
    counter.add(1, {"error.type": "rate_limited", "client.address": "198.51.100.7"})
    counter.add(1, {"error.type": "rate_limited", "client.address": "198.51.100.8"})
    data = reader.get_metrics_data()
    assert data is not None
    [(_, attributes)] = _points(data)
    assert attributes == {"error.type": "rate_limited"}
    [point] = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert point.value == 2


def _span(name: str, attributes: dict[str, Any]) -> ReadableSpan:
    context = SpanContext(trace_id=1, span_id=2, is_remote=False)
    return ReadableSpan(
        name=name,
        context=context,
        resource=Resource({"service.name": "privproc-test", "host.name": "node-7"}),
        attributes=attributes,
        events=[Event("exception", {"exception.message": "secret text"})],
        links=[Link(SpanContext(trace_id=9, span_id=9, is_remote=True), {"peer": "x"})],
        kind=trace.SpanKind.SERVER,
        status=Status(StatusCode.ERROR, "ValueError: Dear Bob"),
        start_time=1,
        end_time=2,
    )


def test_spans_keep_only_allowed_attributes_and_no_events_links_or_texts() -> None:
    span = telemetry.filter_span(_span("privproc.v1.Gateway/Handle", {"rpc.method": "Handle", **LEAKY}))
    assert span.name == "privproc.v1.Gateway/Handle"
    assert dict(span.attributes or {}) == {"rpc.method": "Handle"}
    assert not span.events and not span.links
    assert span.status.status_code is StatusCode.ERROR and not span.status.description
    assert set(span.resource.attributes) == {"service.name"}


@pytest.mark.parametrize("name", ["GET /v1/sessions/abc\nInjected", "x" * 200, "POST /chat?text=Dear Bob"])
def test_a_span_name_that_is_not_a_fixed_shape_is_renamed(name: str) -> None:
    assert telemetry.filter_span(_span(name, {})).name == telemetry.OTHER_SPAN_NAME


def _log(body: object, attributes: dict[str, Any]) -> ReadableLogRecord:
    record = LogRecord(timestamp=60 * 10**9, body=body, attributes=attributes)  # type: ignore[arg-type]
    return ReadableLogRecord(
        record, Resource({"service.name": "privproc-log-sidecar", "host.name": "n"}), None, LogRecordLimits()
    )


def test_logs_pass_only_declared_events_within_their_bounds() -> None:
    kept = telemetry.allowed_log(_log("predictor.session_opened", {"sessions": 3}))
    assert kept is not None and set(kept.resource.attributes) == {"service.name"}
    assert telemetry.allowed_log(_log("predictor.session_opened", {"sessions": "Dear Bob"})) is None
    assert telemetry.allowed_log(_log("predictor.session_opened", {"sessions": 3, "text": "x"})) is None
    assert telemetry.allowed_log(_log("predictor.sessions_opened", {"sessions": 3})) is None
    assert telemetry.allowed_log(_log({"event": "predictor.session_opened"}, {"sessions": 3})) is None


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://collector:4318", ("http", "http://collector:4318", False)),
        ("https://collector:4318/", ("http", "https://collector:4318", True)),
        ("grpc://collector:4317", ("grpc", "collector:4317", False)),
        ("grpcs://collector:4317", ("grpc", "collector:4317", True)),
    ],
)
def test_the_endpoint_scheme_picks_the_protocol(endpoint: str, expected: tuple[str, str, bool]) -> None:
    assert telemetry.otlp_protocol(telemetry.parse_endpoint(endpoint)) == expected


@pytest.mark.parametrize("endpoint", ["collector:4317", "ftp://collector", "grpc://", "http:/x"])
def test_an_endpoint_without_a_known_scheme_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="OTLP endpoint"):
        telemetry.parse_endpoint(endpoint)
    with pytest.raises(ValueError, match="OTLP endpoint"):
        telemetry.TelemetryOptions(otlp_endpoint=endpoint)
    with pytest.raises(ConfigError):
        settings.load(RelayConfig, {}, {"PRIVPROC_RELAY_TELEMETRY_OTLP_ENDPOINT": endpoint})


def test_up_gives_children_the_collector_or_the_state_dir(tmp_path: Path) -> None:
    relay = RelayConfig(gateway_url="http://gateway/x")
    to_files = telemetry.with_options(relay, telemetry.for_stack(tmp_path, None))
    assert to_files.telemetry.directory == tmp_path / "telemetry" and to_files.telemetry.otlp_endpoint is None
    to_collector = telemetry.with_options(relay, telemetry.for_stack(tmp_path, "grpc://c:4317"))
    assert (
        to_collector.telemetry.otlp_endpoint == "grpc://c:4317" and to_collector.telemetry.directory is None
    )
    assert "--otlp-endpoint" in settings.to_argv(to_collector)


# --- privproc stats ----------------------------------------------------------------------------

BOUNDS = [0.005, 0.01, 0.025, 0.05]


def _export(ts: float, buckets: list[int], errors: dict[str, int]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [
        {
            "ts": ts,
            "service": "relay",
            "metric": "http.server.request.duration",
            "kind": "histogram",
            "unit": "s",
            "attributes": {"http.route": "/ohttp-relay"},
            "count": sum(buckets),
            "sum": 0.0,
            "bounds": BOUNDS,
            "buckets": buckets,
        }
    ]
    for reason, count in errors.items():
        records.append(
            {
                "ts": ts,
                "service": "relay",
                "metric": "privproc.server.errors",
                "kind": "sum",
                "unit": "",
                "attributes": {"error.type": reason},
                "value": count,
            }
        )
    return records


def test_quantile_is_the_upper_bound_of_its_bucket() -> None:
    assert stats.quantile(BOUNDS, [0, 10, 0, 0, 0], 0.5) == 0.01
    assert stats.quantile(BOUNDS, [98, 0, 0, 1, 1], 0.99) == 0.05
    assert stats.quantile(BOUNDS, [0, 0, 0, 0, 3], 0.5) == float("inf")
    assert stats.quantile(BOUNDS, [0, 0, 0, 0, 0], 0.5) is None


def test_stats_table_rates_latencies_errors_and_sidecar_drops(tmp_path: Path) -> None:
    directory = tmp_path / "telemetry"
    directory.mkdir()
    first = _export(100.0, [1, 1, 0, 0, 0], {"rate_limited": 1})
    # 10 s later: 20 more requests, all in the 10-25 ms bucket.
    second = _export(110.0, [1, 1, 20, 0, 0], {"rate_limited": 3, "too_large": 1})
    lines = [json.dumps(record) for record in first + second]
    (directory / "relay.metrics.jsonl").write_text("partial-line\n" + "\n".join(lines) + "\n")
    (directory / "predictor-events.jsonl").write_text(
        json.dumps(
            {
                "ts": 60,
                "event": "sidecar.dropped",
                "accepted": 9,
                "oversize": 1,
                "malformed": 0,
                "undeclared": 2,
                "fields": 0,
                "value": 0,
            }
        )
        + "\n"
    )
    table = stats.table(directory)
    [header, relay, sidecar] = table.splitlines()
    assert header.split()[:3] == ["service", "req/s", "requests"]
    assert relay.split() == ["relay", "2.00", "22", "25", "25", "rate_limited=3", "too_large=1"]
    assert sidecar == "log sidecar: accepted=9 drops: fields=0 malformed=0 oversize=1 undeclared=2 value=0"


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4318", "grpc://127.0.0.1:4317"])
def test_each_exporter_is_behind_its_filter(endpoint: str) -> None:
    options = telemetry.TelemetryOptions(otlp_endpoint=endpoint)
    metric_exporter = telemetry.metric_exporter("relay", options)
    span_exporter = telemetry.span_exporter("relay", options)
    assert isinstance(metric_exporter, telemetry.FilteringMetricExporter)
    assert isinstance(span_exporter, telemetry.FilteringSpanExporter)
    inner: Any = metric_exporter.inner
    if endpoint.startswith("http"):
        assert inner._endpoint == "http://127.0.0.1:4318/v1/metrics"
    assert type(inner).__module__.split(".")[4] == ("http" if endpoint.startswith("http") else "grpc")
    logs = telemetry.log_provider("log-sidecar", endpoint)
    logs.shutdown()
    metric_exporter.shutdown()
    span_exporter.shutdown()
