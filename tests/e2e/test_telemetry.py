"""OpenTelemetry of the services: exported to a real OTLP receiver, allow-listed, and never linked
across the relay (no trace context crosses it, nor the OHTTP boundary)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
from grpc import aio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from privproc import events
from privproc.cli import stats
from privproc.runtime import telemetry, telemetry_files
from privproc.v1 import common_pb2, relay_pb2_grpc
from privproc.wire import bhttp, logrecord, ohttp
from tests.livestack import start_stack, stop_stack
from tests.otlp_receiver import OtlpReceiver

#: What a client might send to link its request to a trace of its own.
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_HEADERS = {
    "traceparent": f"00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01",
    "tracestate": "client=canary-tracestate",
    "baggage": "account=canary-baggage",
}
HEALTH = bhttp.Request("GET", "https", "privproc.local", "/v1/health")


class MemorySpans(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += spans
        return SpanExportResult.SUCCESS


class MemoryMetrics(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: object
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: object) -> None:
        pass


_IN_PROCESS: list[tuple[telemetry.Telemetry, MemorySpans]] = []


def in_process_spans() -> tuple[telemetry.Telemetry, MemorySpans]:
    """This test process's global providers (set once: OTel's globals cannot be replaced)."""
    if not _IN_PROCESS:
        spans = MemorySpans()
        installed = telemetry.providers(
            "test",
            telemetry.FilteringMetricExporter(MemoryMetrics()),
            telemetry.FilteringSpanExporter(spans),
            interval_seconds=3600,
        )
        assert installed.meter_provider is not None and installed.tracer_provider is not None
        metrics.set_meter_provider(installed.meter_provider)
        trace.set_tracer_provider(installed.tracer_provider)
        _IN_PROCESS.append((installed, spans))
    return _IN_PROCESS[0]


@pytest.mark.parametrize("relay_via_http", [False, True])
async def test_no_trace_context_crosses_the_relay(tmp_path: Path, relay_via_http: bool) -> None:
    installed, exported = in_process_spans()
    stack = await start_stack(tmp_path, relay_via_http=relay_via_http, with_acs=False, with_ledger=False)
    try:
        async with aiohttp.ClientSession() as session, session.get(stack.file.cdn.keys_url) as resp:
            config = ohttp.select_key_config(ohttp.decode_key_config_list(await resp.read()))[0]
        exported.spans.clear()
        # Over HTTP, with the trace headers ...
        payload, context = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
        headers = {**TRACE_HEADERS, "Content-Type": ohttp.MEDIA_TYPE_REQUEST}
        async with (
            aiohttp.ClientSession() as session,
            session.post(stack.file.relay.ohttp_url, data=payload, headers=headers) as resp,
        ):
            assert resp.status == 200
            answer = await resp.read()
        assert bhttp.decode_response(context.decapsulate_response(answer)).status == 200
        # ... and over gRPC, with them as metadata.
        payload, context = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
        async with aio.insecure_channel(stack.file.relay.grpc) as channel:
            reply = await relay_pb2_grpc.RelayStub(channel).Forward(
                common_pb2.EncapsulatedRequest(payload=payload), metadata=tuple(TRACE_HEADERS.items())
            )
        assert bhttp.decode_response(context.decapsulate_response(reply.payload)).status == 200

        # Nothing of them reached the gateway.
        assert len(stack.recorder.seen) == 2
        for seen in stack.recorder.seen:
            names = {name.lower() for name, _ in seen.metadata}
            assert not names & set(TRACE_HEADERS)
            everything = json.dumps(seen.metadata)
            assert CLIENT_TRACE_ID not in everything and "canary" not in everything

        assert installed.tracer_provider is not None
        installed.tracer_provider.force_flush()
        spans = exported.spans
        by_name = {span.name for span in spans}
        relay_names = {"POST /ohttp-relay", "privproc.v1.Relay/Forward"}
        gateway_names = {"POST /.well-known/ohttp-gateway", "privproc.v1.Gateway/Handle"}
        assert relay_names <= by_name
        assert by_name & gateway_names
        servers = [span for span in spans if span.name in relay_names | gateway_names]
        for span in servers:
            assert span.context is not None
            # Each front's span is a root: neither the client's trace nor the relay's continues.
            assert span.parent is None, span.name
            assert f"{span.context.trace_id:032x}" != CLIENT_TRACE_ID
        relay_traces = {s.context.trace_id for s in servers if s.name in relay_names and s.context}
        gateway_traces = {s.context.trace_id for s in servers if s.name in gateway_names and s.context}
        assert not relay_traces & gateway_traces
        forwards = [span for span in spans if span.name == "relay.forward"]
        assert len(forwards) == 2 and all(span.parent is not None for span in forwards)
        assert {span.context.trace_id for span in forwards if span.context} <= relay_traces
        # Inside the gateway, its steps are children of its own span: traces inside one service.
        steps = [span for span in spans if span.name == "gateway.decapsulate"]
        assert steps and all(span.parent is not None for span in steps)
        assert {span.context.trace_id for span in steps if span.context} <= gateway_traces
        for span in spans:
            assert set(span.attributes or {}) <= set(telemetry.ATTRIBUTES)
            assert not span.events and not span.links
    finally:
        await stop_stack(stack)


# --- the whole stack, exporting to a real OTLP receiver ---------------------------------------

PREDICTOR_START_SECONDS = 120
#: Every service that exports OTel itself (the predictor's only path out is its log sidecar).
EXPORTING = {"relay", "gateway", "acs", "cdn", "ledger", "witness", "verifier"}


def _up(state: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "privproc", "up", "--state-dir", str(state), "--model", "tiny-random", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )


def _wait_for(path: Path, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AssertionError("privproc up exited early: " + stderr[-2000:])
        assert time.monotonic() < deadline, "stack.json never appeared"
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_up_exports_every_service_to_an_otlp_collector(tmp_path: Path, otlp_receiver: OtlpReceiver) -> None:
    state = tmp_path / "state"
    up = _up(state, "--otlp-endpoint", otlp_receiver.endpoint)
    try:
        stack_path = state / "stack.json"
        _wait_for(stack_path, up, PREDICTOR_START_SECONDS)
        document = json.loads(stack_path.read_text())
        health = subprocess.run(
            [sys.executable, "-m", "privproc", "health", "--stack", str(stack_path), "--transport", "http"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert health.returncode == 0, health.stderr
        # A client that sends its trace context to the relay (and, to be thorough, to the gateway).
        for url in (document["relay"]["ohttp_url"], document["gateway"]["ohttp_url"]):
            request = urllib.request.Request(
                url,
                data=b"\x00" * 64,
                headers={**TRACE_HEADERS, "Content-Type": ohttp.MEDIA_TYPE_REQUEST},
                method="POST",
            )
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(request, timeout=10)
    finally:
        _stop(up)
    assert up.returncode == 0, up.stderr.read() if up.stderr else b""
    # Each service exports what is left when it stops: everything has arrived by now.
    exported = {f"privproc-{name}" for name in EXPORTING}
    otlp_receiver.wait_for(lambda r: exported <= r.services(), seconds=30)
    assert "privproc-predictor" not in otlp_receiver.services()
    for service in exported:
        names = otlp_receiver.metric_names(service)
        assert "rpc.server.duration" in names, service
    # The HTTP fronts this run used: the client's and the relay's path, the witness and the tiles.
    for service in ("relay", "gateway", "witness", "ledger"):
        assert "http.server.request.duration" in otlp_receiver.metric_names(f"privproc-{service}")
    assert {"privproc.ledger.size", "privproc.ledger.cosignature.lag"} <= otlp_receiver.metric_names(
        "privproc-ledger"
    )
    assert "privproc.relay.forward.duration" in otlp_receiver.metric_names("privproc-relay")
    assert "privproc.server.errors" in otlp_receiver.metric_names("privproc-gateway")
    spans = otlp_receiver.spans()
    assert {"privproc-relay", "privproc-gateway"} <= {span.service for span in spans}
    for span in spans:
        assert span.trace_id != CLIENT_TRACE_ID
        if span.span.kind == span.span.SPAN_KIND_SERVER:
            assert span.is_root, (span.service, span.name)
    # Nothing outside the allow-list arrived, anywhere.
    assert otlp_receiver.attribute_keys() <= set(telemetry.ATTRIBUTES)
    for log in otlp_receiver.log_records():  # the CVM's events, through its sidecar
        assert events.rejection(log.body, log.attributes) is None
    assert otlp_receiver.resource_keys() <= telemetry.RESOURCE_KEYS
    raw = otlp_receiver.raw()
    credential = str(document["demo_account"]["credential"]).encode()
    for forbidden in (b"127.0.0.1", b"canary", CLIENT_TRACE_ID.encode(), credential):
        assert forbidden not in raw


# --- the log sidecar's export ----------------------------------------------------------------


def _totals(**counts: int) -> dict[str, int]:
    return {name: counts.get(name, 0) for name in events.PredictorTaskTotals.spec.fields}


def test_the_sidecar_exports_allowed_events_as_otlp_logs_and_aggregates_as_metrics(
    otlp_receiver: OtlpReceiver,
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="ppo"))  # a Unix socket's path is short
    socket_path = directory / "events.sock"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privproc",
            "serve",
            "log-sidecar",
            "--socket-path",
            str(socket_path),
            "--interval-seconds",
            "0.3",
            "--otlp-endpoint",
            otlp_receiver.endpoint,
            "--telemetry-interval",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["service"] == "log-sidecar"
        records = [
            logrecord.encode("predictor.session_opened", {"sessions": 3}),
            logrecord.encode("predictor.task_totals", _totals(requests=5, answered=4, refused_violence=1)),
            logrecord.encode("predictor.session_opened", {"sessions": "canary-content"}),  # value
            logrecord.encode("predictor.canary", {"sessions": 3}),  # undeclared
        ]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(str(socket_path))
            connection.sendall(b"".join(records))
        otlp_receiver.wait_for(
            lambda r: (
                any(log.body == "predictor.task_totals" for log in r.log_records())
                and "privproc.predictor.task_totals" in r.metric_names()
            )
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    assert process.returncode == 0, stderr
    # Nothing on stderr: the events left through the collector only.
    assert b"predictor." not in stderr
    logs = otlp_receiver.log_records()
    bodies = {log.body for log in logs}
    assert {"predictor.session_opened", "predictor.task_totals", "sidecar.dropped"} <= bodies
    for log in logs:
        assert log.service == "privproc-log-sidecar"
        assert events.rejection(log.body, log.attributes) is None
        # Coarse time, and no trace context.
        assert log.record.time_unix_nano % (60 * 10**9) == 0
        assert log.record.observed_time_unix_nano % (60 * 10**9) == 0
        assert not log.record.trace_id and not log.record.span_id
    assert b"canary" not in otlp_receiver.raw()
    totals = {
        point.attributes[0].value.string_value: point.as_int
        for service, name, point in otlp_receiver.metric_points()
        if name == "privproc.predictor.task_totals"
    }
    assert totals["requests"] == 5 and totals["answered"] == 4 and totals["refused_violence"] == 1
    records_by_outcome: dict[str, int] = {}
    for _, name, point in otlp_receiver.metric_points():
        if name == "privproc.sidecar.records":
            records_by_outcome[point.attributes[0].value.string_value] = point.as_int
    assert records_by_outcome["accepted"] >= 2
    assert records_by_outcome["value"] == 1 and records_by_outcome["undeclared"] == 1
    assert otlp_receiver.attribute_keys() <= set(telemetry.ATTRIBUTES)


# --- without a collector: the files, and privproc stats --------------------------------------


def test_a_service_writes_its_files_and_privproc_stats_reads_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    directory = state / telemetry_files.STATE_SUBDIR
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privproc",
            "serve",
            "relay",
            # Nothing listens there: each forwarded request fails upstream.
            "--gateway-url",
            "http://127.0.0.1:9/.well-known/ohttp-gateway",
            "--telemetry-dir",
            str(directory),
            "--telemetry-interval",
            "0.3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert relay.stdout is not None
        url = json.loads(relay.stdout.readline())["ready"]["ohttp_url"]
        for content_type in ["text/plain"] * 5 + [ohttp.MEDIA_TYPE_REQUEST] * 3:
            request = urllib.request.Request(
                url, data=b"\x00" * 64, headers={**TRACE_HEADERS, "Content-Type": content_type}
            )
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(request, timeout=10)

        def counted() -> bool:
            rows = [line.split() for line in stats.table(directory).splitlines()]
            return any(row[:1] == ["relay"] and row[2] == "8" for row in rows)

        deadline = time.monotonic() + 30
        while not counted():
            assert time.monotonic() < deadline, stats.table(directory)
            time.sleep(0.2)
        shown = subprocess.run(
            [sys.executable, "-m", "privproc", "stats", "--state-dir", str(state), "--once"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        _stop(relay)
    assert relay.returncode == 0
    [header, row, *_] = shown.stdout.splitlines()
    assert header.split()[:5] == ["service", "req/s", "requests", "p50", "ms"]
    fields = row.split()
    assert fields[0] == "relay" and fields[2] == "8"
    assert fields[-2:] == ["unsupported_media_type=5", "upstream=3"]
    assert float(fields[3]) > 0 and float(fields[4]) >= float(fields[3])  # p50 <= p99, in ms
    # The layout: <service>.metrics.jsonl and <service>.spans.jsonl, nothing else, owner-only.
    assert sorted(path.name for path in directory.iterdir()) == ["relay.metrics.jsonl", "relay.spans.jsonl"]
    assert all(path.stat().st_mode & 0o077 == 0 for path in directory.iterdir())
    spans = [json.loads(line) for line in (directory / "relay.spans.jsonl").read_text().splitlines()]
    ingress = [span for span in spans if span["name"] == "POST /ohttp-relay"]
    assert len(ingress) == 8
    for span in spans:
        assert set(span["attributes"]) <= set(telemetry.ATTRIBUTES)
        assert span["trace_id"] != CLIENT_TRACE_ID
    assert all(span["parent_span_id"] is None for span in ingress)
    text = (directory / "relay.metrics.jsonl").read_text() + (directory / "relay.spans.jsonl").read_text()
    assert "127.0.0.1" not in text and "canary" not in text
