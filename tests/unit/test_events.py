"""The event registry refuses anything undeclared or unbounded; nothing free-form gets out."""

from __future__ import annotations

import ast
import inspect
import json
import logging
import re
from pathlib import Path
from typing import Annotated

import pytest

from privproc import events

SERVICES = Path(__file__).resolve().parents[2] / "services" / "privproc"


def _declared() -> list[type[events.Event]]:
    """The event classes of the registry module (not the ones tests define and reject)."""
    return [cls for cls in events.Event.__subclasses__() if cls.__module__ == events.__name__]


def test_declared_event_is_emitted_as_json(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        assert events.emit(events.GatewayKeyRotated(key_id=3, accepted_keys=2))
    assert '"event":"gateway.key_rotated"' in caplog.text and '"key_id":3' in caplog.text


@pytest.mark.parametrize(
    "event",
    [
        events.GatewayKeyRotated(key_id=300, accepted_keys=1),  # out of bound
        events.GatewayKeyRotated(key_id=-300, accepted_keys=1),  # out of bound
        events.GatewayKeyRotated(key_id="3", accepted_keys=1),  # type: ignore[arg-type]  # wrong type
        events.GatewayKeyRotated(key_id=True, accepted_keys=1),  # bool is not an int here
        events.RequestFailed(service="gateway", transport="http", reason="Summarise my chat with Bob"),
        events.RequestFailed(service="gateway", transport="http", reason="x" * 80),
        events.RequestFailed(service="attacker", transport="http", reason="ok"),  # not a choice
        events.RequestFailed(service="gateway", transport="http", reason="127.0.0.1 Bob"),
    ],
    ids=repr,
)
def test_refused_events_write_nothing(event: events.Event, caplog: pytest.LogCaptureFixture) -> None:
    before = events.STATS.refused[event.spec.name]
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        assert events.emit(event) is False
    assert caplog.text == ""
    assert events.STATS.refused[event.spec.name] == before + 1


@pytest.mark.parametrize(
    ("name", "fields", "reason"),
    [
        ("no.such.event", {}, "undeclared"),
        ("gateway.key_rotated", {"key_id": 3}, "fields"),  # missing field
        ("gateway.key_rotated", {"key_id": 3, "accepted_keys": 1, "extra": 1}, "fields"),
        ("gateway.key_rotated", {"key_id": 300, "accepted_keys": 1}, "value"),
        ("gateway.key_rotated", {"key_id": 3, "accepted_keys": 1}, None),
    ],
)
def test_records_are_checked_against_the_registry(
    name: str, fields: dict[str, object], reason: str | None
) -> None:
    # What a reader of records from another process (the log sidecar) applies.
    assert events.rejection(name, fields) == reason


def test_an_event_smuggling_a_field_past_the_type_checker_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = events.GatewayKeyRetired(key_id=4)
    object.__setattr__(event, "note", "Summarise my chat with Bob")
    before = events.STATS.refused["gateway.key_retired"]
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        assert events.emit(event) is False
    assert caplog.text == ""
    assert events.STATS.refused["gateway.key_retired"] == before + 1


def test_an_event_is_a_frozen_value_built_from_exactly_its_fields() -> None:
    event = events.GatewayKeyRotated(key_id=3, accepted_keys=2)
    assert event == events.GatewayKeyRotated(key_id=3, accepted_keys=2) != events.GatewayKeyRetired(key_id=3)
    assert hash(event) == hash(events.GatewayKeyRotated(key_id=3, accepted_keys=2))
    assert repr(event) == "GatewayKeyRotated(key_id=3, accepted_keys=2)"
    with pytest.raises(AttributeError):
        event.key_id = 4  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del event.key_id
    with pytest.raises(TypeError):
        events.GatewayKeyRotated(key_id=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        events.GatewayKeyRotated(key_id=3, accepted_keys=2, note="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        events.GatewayKeyRotated(3, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        events.CdnPublishRefused(note="x")  # type: ignore[call-arg]


def test_names_declared_once() -> None:
    with pytest.raises(ValueError, match="declared twice"):

        class Again(events.Event, name="gateway.key_rotated", level=events.Level.INFO):
            """Again."""

    assert events.REGISTRY["gateway.key_rotated"] is events.GatewayKeyRotated.spec


def test_every_field_is_declared_with_its_bound() -> None:
    with pytest.raises(TypeError, match="Annotated"):

        class Unbounded(events.Event, name="test.unbounded", level=events.Level.INFO):
            """A field without a FieldSpec."""

            text: str

    with pytest.raises(TypeError, match="Annotated"):

        class Mismatched(events.Event, name="test.mismatched", level=events.Level.INFO):
            """A str field with an int bound."""

            text: Annotated[str, events.Int(3)]

    with pytest.raises(TypeError, match="derives from Event only"):

        class Derived(events.GatewayKeyRetired, name="test.derived", level=events.Level.INFO):
            """An event extending another."""

    with pytest.raises(TypeError, match="docstring"):

        class Undescribed(events.Event, name="test.undescribed", level=events.Level.INFO):
            pass

    assert not any(name.startswith("test.") for name in events.REGISTRY)


def test_no_field_can_carry_free_text() -> None:
    # Every string field is either a closed choice, the identifier pattern (no spaces, no upper
    # case, at most 64 characters: sentences, base64 keys and IPv6 literals fail it) or a
    # predictor's host:port. Only those two patterns exist.
    for event in events.REGISTRY.values():
        for spec in event.fields.values():
            if spec.kind is str and spec.choices is None:
                assert spec.pattern in (events.IDENT.pattern, events.TARGET.pattern)
                for sample in ("hello world", "QUJD+/==", "x" * 65, "Bob", "[fd00::1]:1 x"):
                    assert not spec.accepts(sample)
    for good in ("10.1.2.3:8443", "[fd00::a:1]:8443", "predictor-0.predictor:50051"):
        assert events.TARGET.accepts(good)
    for bad in ("10.1.2.3", "fd00::1:8443", "[FD00::1]:1", "Bob:1", "10.1.2.3:8443\n", "[x]:1"):
        assert not events.TARGET.accepts(bad)


def test_the_registry_is_derived_from_the_event_classes() -> None:
    declared = _declared()
    assert {cls.spec.name: cls.spec for cls in declared} == events.REGISTRY
    assert len(declared) == len(events.REGISTRY)
    for cls in declared:
        name = cls.spec.name
        # One name, spelt once: the class is the event's name in CamelCase.
        assert cls.__name__ == "".join(part.capitalize() for part in re.split(r"[._]", name)), name
        assert list(inspect.get_annotations(cls)) == list(cls.spec.fields), name
        assert cls.spec.description == (cls.__doc__ or "").strip(), name
        assert cls.spec.time_resolution == (
            events.CVM_TIME_RESOLUTION if name.startswith("predictor.") else 0.001
        )


def _valid(spec: events.FieldSpec) -> object:
    if spec.kind is bool:
        return True
    if spec.kind is int:
        return spec.max_value
    if spec.choices is not None:
        return sorted(spec.choices)[0]
    return "10.0.0.1:8443" if spec.pattern is events.TARGET.pattern else "a_valid.identifier-1"


def _invalid(spec: events.FieldSpec) -> list[object]:
    """Values of the right Python type outside the bound, and values of another type."""
    if spec.kind is bool:
        return [1, "true", None]
    if spec.kind is int:
        return [spec.max_value + 1, -spec.max_value - 1, True, str(spec.max_value), 1.0]
    outside = ["not one of the choices"] if spec.choices is not None else ["Not an identifier", "x" * 65]
    return [*outside, "", 1, b"x", None]


@pytest.mark.parametrize("cls", _declared(), ids=lambda cls: cls.spec.name)
def test_runtime_check_enforces_the_declared_bounds(
    cls: type[events.Event], caplog: pytest.LogCaptureFixture
) -> None:
    """Each declared event passes at its bounds and is refused (and counted) one step outside."""
    name, fields = cls.spec.name, cls.spec.fields
    valid = {field: _valid(spec) for field, spec in fields.items()}
    emitted = events.STATS.emitted[name]
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        assert events.emit(cls(**valid))
    assert events.STATS.emitted[name] == emitted + 1
    [record] = [json.loads(r.getMessage()) for r in caplog.records]
    assert record == {"ts": record["ts"], "event": name, **valid}
    caplog.clear()
    for field, spec in fields.items():
        for value in _invalid(spec):
            values = {**valid, field: value}
            assert events.rejection(name, values) == "value", (field, value)
            refused = events.STATS.refused[name]
            with caplog.at_level(logging.DEBUG, logger="privproc.events"):
                assert events.emit(cls(**values)) is False, (field, value)
            assert events.STATS.refused[name] == refused + 1
            assert caplog.records == []
    assert events.STATS.emitted[name] == emitted + 1


def _emit_calls() -> tuple[list[str], dict[str, int]]:
    """Every call of ``events.emit`` in the services: the ones not given a declared event object
    built right there, and how often each declared event is emitted."""
    declared = {cls.__name__: cls.spec.name for cls in _declared()}
    wrong: list[str] = []
    uses = dict.fromkeys(declared.values(), 0)
    for path in sorted(SERVICES.rglob("*.py")):
        if path.parent.name == "v1" or path.name == "events.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        # Names under which this module reaches the registry module and its emit.
        modules = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "privproc"
            for alias in node.names
            if alias.name == "events"
        }
        imported = {
            alias.asname or alias.name: alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "privproc.events"
            for alias in node.names
        }
        assert not any(
            isinstance(n, ast.Import) and "privproc.events" in ast.unparse(n) for n in ast.walk(tree)
        )
        calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                is_emit = (
                    node.attr == "emit" and isinstance(node.value, ast.Name) and node.value.id in modules
                )
            elif isinstance(node, ast.Name):
                is_emit = imported.get(node.id) == "emit"
            else:
                continue
            if not is_emit:
                continue
            where = f"{path.relative_to(SERVICES)}:{node.lineno}"
            call = calls.get(id(node))
            if call is None or call.keywords or len(call.args) != 1 or not isinstance(call.args[0], ast.Call):
                wrong.append(where)
                continue
            made = call.args[0].func
            if (
                isinstance(made, ast.Attribute)
                and isinstance(made.value, ast.Name)
                and made.value.id in modules
            ):
                event = made.attr
            elif isinstance(made, ast.Name):
                event = imported.get(made.id, "")
            else:
                event = ""
            if event not in declared:
                wrong.append(where)
                continue
            uses[declared[event]] += 1
    return wrong, uses


def test_every_emit_in_the_services_passes_a_declared_event_object() -> None:
    wrong, uses = _emit_calls()
    assert wrong == []
    assert sum(uses.values()) > 50  # the walk found the call sites (the test is not vacuous)


def test_every_declared_event_is_emitted_somewhere() -> None:
    # A declaration no code emits widens the allow-list for nothing.
    _, uses = _emit_calls()
    assert [name for name, count in uses.items() if count == 0] == []


def test_counts_reach_opentelemetry_with_only_the_event_name(fresh_meter_provider: None) -> None:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)  # the module's proxy meter now records here
    try:
        events.emit(events.GatewayKeyRetired(key_id=4))
        events.emit(events.GatewayKeyRetired(key_id=999))  # refused
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
