"""The event registry refuses anything undeclared or unbounded; nothing free-form gets out."""

from __future__ import annotations

import logging

import pytest

from privproc import events


def test_declared_event_is_emitted_as_json(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        assert events.emit("gateway.key_rotated", key_id=3, accepted_keys=2)
    assert '"event":"gateway.key_rotated"' in caplog.text and '"key_id":3' in caplog.text


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("no.such.event", {}),
        ("gateway.key_rotated", {"key_id": 3}),  # missing field
        ("gateway.key_rotated", {"key_id": 3, "accepted_keys": 1, "extra": 1}),  # undeclared field
        ("gateway.key_rotated", {"key_id": 300, "accepted_keys": 1}),  # out of bound
        ("gateway.key_rotated", {"key_id": "3", "accepted_keys": 1}),  # wrong type
        ("gateway.key_rotated", {"key_id": True, "accepted_keys": 1}),  # bool is not an int here
        (
            "request.failed",
            {"service": "gateway", "transport": "http", "reason": "Summarise my chat with Bob"},
        ),
        ("request.failed", {"service": "gateway", "transport": "http", "reason": "x" * 80}),
        ("request.failed", {"service": "attacker", "transport": "http", "reason": "ok"}),  # not a choice
        ("request.failed", {"service": "gateway", "transport": "http", "reason": "127.0.0.1 Bob"}),
    ],
)
def test_refused_events_write_nothing(
    name: str, fields: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    before = sum(events.STATS.refused.values())
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        assert events.emit(name, **fields) is False
    assert caplog.text == ""
    assert sum(events.STATS.refused.values()) == before + 1


def test_names_declared_once() -> None:
    with pytest.raises(ValueError):
        events.declare("gateway.key_rotated", events.Level.INFO, "again")


def test_no_field_can_carry_free_text() -> None:
    # Every string field is either a closed choice or the identifier pattern: no spaces, no
    # upper case, at most 64 characters. Sentences, base64 keys and IPv6 literals fail it.
    for event in events.REGISTRY.values():
        for spec in event.fields.values():
            if spec.kind is str and spec.choices is None:
                for sample in ("hello world", "QUJD+/==", "x" * 65, "Bob"):
                    assert not spec.accepts(sample)


def test_counts_reach_opentelemetry_with_only_the_event_name() -> None:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)  # the module's proxy meter now records here
    try:
        events.emit("gateway.key_retired", key_id=4)
        events.emit("gateway.key_retired", key_id=999)  # refused
        data = reader.get_metrics_data()
        assert data is not None
        points = {
            metric.name: [(dict(p.attributes or {}), p.value) for p in metric.data.data_points]  # type: ignore[union-attr]
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }
        assert ({"event": "gateway.key_retired"}, 1) in points["privproc.events.emitted"]
        assert ({"event": "gateway.key_retired"}, 1) in points["privproc.events.refused"]
    finally:
        provider.shutdown()
