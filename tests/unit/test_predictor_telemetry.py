"""The CVM's aggregates: coarse latency buckets, tokens, the threshold, and nothing per request."""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from privproc import events
from privproc.errors import NotFoundError
from privproc.predictor.server import PredictorServicer
from privproc.predictor.telemetry import LATENCY_BUCKETS, PredictorTelemetry, latency_field
from privproc.runtime import logsink
from privproc.runtime.logsink import SinkCounts
from privproc.v1 import predictor_pb2
from privproc.wire.refusal import RefusalCode


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (0.0, "latency_under_1s"),
        (0.999, "latency_under_1s"),
        (1.0, "latency_under_5s"),
        (4.999, "latency_under_5s"),
        (5.0, "latency_under_30s"),
        (29.999, "latency_under_30s"),
        (30.0, "latency_30s_or_more"),
        (10.0**6, "latency_30s_or_more"),
        (float("nan"), "latency_30s_or_more"),
    ],
)
def test_latency_buckets_are_few_and_wide(seconds: float, bucket: str) -> None:
    assert latency_field(seconds) == bucket


def test_the_event_counts_exactly_the_buckets() -> None:
    fields = set(events.PredictorGenerationTotals.spec.fields)
    assert fields == {"requests", "tokens_generated", *(name for name, _ in LATENCY_BUCKETS)}


def _emitted(caplog: pytest.LogCaptureFixture, counters: PredictorTelemetry) -> dict[str, dict[str, Any]]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        counters.emit()
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    return {line.pop("event"): line for line in lines}


def test_generation_totals_wait_for_the_threshold_then_reset(caplog: pytest.LogCaptureFixture) -> None:
    counters = PredictorTelemetry(min_requests=3)
    counters.count_request("summarize", None, tokens_generated=40, seconds=0.2)
    counters.count_request("suggest_rewrite", RefusalCode.MALWARE, tokens_generated=0, seconds=2.5)
    # Two requests: one user's refusal and its time would stand alone. Carried over, not emitted.
    assert _emitted(caplog, counters) == {}
    counters.count_request("summarize", None, tokens_generated=60, seconds=45.0)
    emitted = _emitted(caplog, counters)
    assert set(emitted) == {"predictor.task_totals", "predictor.generation_totals"}
    generation = emitted["predictor.generation_totals"]
    del generation["ts"]
    assert generation == {
        "requests": 3,
        "tokens_generated": 100,
        "latency_under_1s": 1,
        "latency_under_5s": 1,
        "latency_under_30s": 0,
        "latency_30s_or_more": 1,
    }
    assert emitted["predictor.task_totals"]["refused_malware"] == 1
    assert _emitted(caplog, counters) == {}  # reset: nothing is counted twice
    assert events.rejection("predictor.generation_totals", generation) is None


@given(st.lists(st.tuples(st.integers(0, 4096), st.floats(0, 10**4, allow_nan=False)), max_size=60))
def test_the_buckets_and_tokens_add_up(requests: list[tuple[int, float]]) -> None:
    counters = PredictorTelemetry(min_requests=1)
    for tokens, seconds in requests:
        counters.count_request("other", None, tokens_generated=tokens, seconds=seconds)
    totals = counters.take_task_totals()
    if not requests:
        assert totals is None
        return
    assert totals is not None
    fields = totals.generation_fields()
    assert sum(fields[name] for name, _ in LATENCY_BUCKETS) == fields["requests"] == len(requests)
    assert fields["tokens_generated"] == sum(tokens for tokens, _ in requests)
    assert events.rejection("predictor.generation_totals", fields) is None


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        PredictorTelemetry().count_request("other", None, tokens_generated=-1)


class _Sink:
    def counts(self) -> SinkCounts:
        return SinkCounts(offered=12, sent=7, dropped=3, lost=2, queued=0)


def test_a_process_logging_through_its_sidecar_reports_its_sink_counts(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        logsink.emit_totals()
        assert caplog.records == []  # no sink: nothing to report
        monkeypatch.setattr(logsink, "installed", _Sink)
        logsink.emit_totals()
    [totals] = [json.loads(record.getMessage()) for record in caplog.records]
    assert totals["event"] == "log_sink.totals"
    assert (totals["offered"], totals["sent"], totals["dropped"], totals["lost"]) == (12, 7, 3, 2)


class _FailingEngine:
    """A session engine whose processing hits an unexpected exception quoting the request."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def open(self, records: bytes) -> tuple[bytes, bytes, bool]:
        raise self.error

    async def resume(self, session_id: bytes, records: bytes) -> tuple[bytes, bool]:
        raise self.error


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.status = (code, details)
        raise _Aborted


async def test_an_unexpected_session_failure_is_answered_but_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    servicer = PredictorServicer(_FailingEngine(ValueError("CANARY in the request")), source=None)  # type: ignore[arg-type]
    context = _Context()
    before = events.STATS.emitted["request.internal_error"]
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        with pytest.raises(_Aborted):
            await servicer.ContinueSession(
                predictor_pb2.ContinueSessionRequest(session_id=b"s", tls_records=b"r"),
                context,  # type: ignore[arg-type]
            )
        with pytest.raises(_Aborted):
            await servicer.OpenSession(predictor_pb2.OpenSessionRequest(tls_records=b"r"), context)  # type: ignore[arg-type]
    # The gateway gets INTERNAL, without the text; no event names the exception's type.
    assert context.status is not None and context.status[0] is grpc.StatusCode.INTERNAL
    assert "CANARY" not in context.status[1]
    assert events.STATS.emitted["request.internal_error"] == before
    assert caplog.records == [] and "valueerror" not in caplog.text.lower()
    # A typed error is left to the front (its reason is the status the gateway sees anyway).
    typed = PredictorServicer(_FailingEngine(NotFoundError("no such session")), source=None)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await typed.ContinueSession(predictor_pb2.ContinueSessionRequest(), _Context())  # type: ignore[arg-type]
