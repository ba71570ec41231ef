"""The log sidecar's filter: only the registry's events, within their bounds, get out; drops are counted.

The property test builds a stream of records, each made valid or broken in one known way
(injected newlines and control characters, oversized values and records, unknown or missing
fields, look-alike names, wrong types, nested values, malformed JSON, floods), cuts it at
random points, and checks that what comes out is exactly the valid records, in order, and that
the drop counters are exactly the broken ones, by reason.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privproc import events
from privproc.logsidecar.filter import DROP_REASONS, Accepted, StreamFilter, Totals, check
from privproc.wire import logrecord

IDENTIFIER = re.compile(r"[a-z0-9][a-z0-9_.:/-]{0,63}")
NAMES = sorted(events.REGISTRY)
#: Strings no field accepts: content, control characters, confusables, too long.
INJECTED = st.sampled_from(
    [
        "Summarise my chat with Bob",
        'ok\nFAKE {"event":"service.started"}',
        "a\rb",
        "tab\there",
        "nul\x00",
        "esc\x1b[31m",
        "x" * 65,
        "g\u0430teway",  # Cyrillic a
        "GATEWAY",
        "127.0.0.1 bob",
        "",
        "\u202eevil",
        "\ud800",
    ]
)


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def body_of(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8", errors="surrogatepass")


def valid_value(spec: events.FieldSpec) -> st.SearchStrategy[Any]:
    if spec.kind is bool:
        return st.booleans()
    if spec.kind is int:
        return st.integers(-spec.max_value, spec.max_value)
    if spec.choices is not None:
        return st.sampled_from(sorted(spec.choices))
    return st.from_regex(IDENTIFIER, fullmatch=True).filter(spec.accepts)


@st.composite
def valid_record(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(NAMES))
    fields = {field: draw(valid_value(spec)) for field, spec in events.REGISTRY[name].fields.items()}
    return name, fields


def wrong_value(spec: events.FieldSpec) -> st.SearchStrategy[Any]:
    if spec.kind is bool:
        return st.sampled_from([0, 1, "true", "yes"])
    if spec.kind is int:
        return st.one_of(
            st.integers(spec.max_value + 1, spec.max_value + 2**70),
            st.integers(-spec.max_value - 2**70, -spec.max_value - 1),
            st.booleans(),
            st.sampled_from(["3", "1e3"]),
            INJECTED,
        )
    return st.one_of(INJECTED, st.integers(), st.booleans())


def look_alikes(name: str) -> list[str]:
    return [
        name + " ",
        " " + name,
        name + "\n",
        name.upper(),
        name.replace(".", "_"),
        name.replace("e", "\u0435"),  # Cyrillic e
        name.replace("o", "\u043e"),  # Cyrillic o
        name + "\x00",
        name[:-1],
        "x" + name,
    ]


#: One case: its framed bytes, and what must come out of it (an Accepted, or a drop reason).
Case = tuple[bytes, "Accepted | str"]


@st.composite
def case(draw: st.DrawFn) -> Case:
    name, fields = draw(valid_record())
    spec = events.REGISTRY[name]
    kind = draw(
        st.sampled_from(
            ["valid", "value", "nested", "float", "extra", "missing", "lookalike", "oversize", "malformed"]
        )
    )
    if kind == "value" and spec.fields:
        field = draw(st.sampled_from(sorted(spec.fields)))
        value = draw(wrong_value(spec.fields[field]))
        return frame(body_of({"event": name, "fields": {**fields, field: value}})), "value"
    if kind == "nested" and spec.fields:
        field = draw(st.sampled_from(sorted(spec.fields)))
        value = draw(st.sampled_from([[1], {"a": 1}, None, [fields[field]], {"event": name}]))
        return frame(body_of({"event": name, "fields": {**fields, field: value}})), "malformed"
    if kind == "float" and any(s.kind is int for s in spec.fields.values()):
        field = draw(st.sampled_from(sorted(f for f, s in spec.fields.items() if s.kind is int)))
        return frame(body_of({"event": name, "fields": {**fields, field: 1.5}})), "malformed"
    if kind == "extra":
        extra = draw(st.sampled_from(["message", "ts", "event", "client_address", "token", "Key_id"]))
        if extra not in fields:
            value = draw(st.one_of(INJECTED, st.integers(0, 3)))
            return frame(body_of({"event": name, "fields": {**fields, extra: value}})), "fields"
    if kind == "missing" and fields:
        dropped = draw(st.sampled_from(sorted(fields)))
        rest = {k: v for k, v in fields.items() if k != dropped}
        return frame(body_of({"event": name, "fields": rest})), "fields"
    if kind == "lookalike":
        other = draw(st.sampled_from(look_alikes(name)))
        if other not in events.REGISTRY:
            return frame(body_of({"event": other, "fields": fields})), "undeclared"
    if kind == "oversize":
        padding = draw(st.integers(logrecord.MAX_RECORD_BYTES, 3 * logrecord.MAX_RECORD_BYTES))
        document = {"event": name, "fields": {**fields, "pad": "x" * padding}}
        return frame(body_of(document)), "oversize"
    if kind == "malformed":
        broken = draw(
            st.sampled_from(
                [
                    b"",
                    b"\xff\xfe",
                    b"[1,2]",
                    b'"event"',
                    b"null",
                    b'{"event":"%s","event":"%s","fields":{}}' % (name.encode(), name.encode()),
                    b'{"event":"%s","fields":{"a":1,"a":2}}' % name.encode(),
                    b'{"event":"%s","fields":{"x":NaN}}' % name.encode(),
                    b'{"event":"%s","fields":{"x":Infinity}}' % name.encode(),
                    b'{"event":3,"fields":{}}',
                    b'{"event":"%s","fields":[]}' % name.encode(),
                    b'{"event":"%s"}' % name.encode(),
                    b'{"ts":1,"event":"%s","fields":{}}' % name.encode(),
                    body_of({"event": name, "fields": fields})[:-1],
                ]
            )
        )
        return frame(broken), "malformed"
    return frame(body_of({"event": name, "fields": fields})), Accepted(name, fields)


@st.composite
def stream(draw: st.DrawFn) -> list[Case]:
    cases = draw(st.lists(case(), max_size=40))
    if draw(st.booleans()) and cases:
        # A flood: one case (valid or not) many times over.
        cases += [cases[0]] * draw(st.integers(1, 300))
    return cases


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream(), st.lists(st.integers(1, 5000), max_size=30))
def test_only_declared_events_within_bounds_get_out_and_every_drop_is_counted(
    cases: list[Case], cuts: list[int]
) -> None:
    data = b"".join(bytes_ for bytes_, _ in cases)
    totals = Totals()
    stream_filter = StreamFilter(totals)
    out: list[Accepted] = []
    at = 0
    for cut in [*cuts, len(data)]:
        out += stream_filter.feed(data[at : at + cut])
        at += cut
    out += stream_filter.feed(data[at:])
    expected_out = [outcome for _, outcome in cases if isinstance(outcome, Accepted)]
    expected_drops = Counter(outcome for _, outcome in cases if isinstance(outcome, str))
    assert out == expected_out
    assert totals.accepted == len(expected_out)
    assert dict(totals.dropped) == dict(expected_drops)
    assert set(totals.dropped) <= set(DROP_REASONS)
    for accepted in out:
        assert events.rejection(accepted.name, accepted.fields) is None
        text = json.dumps(accepted.fields)
        assert "\n" not in text and "\\u" not in text


def test_a_length_far_over_the_bound_breaks_the_stream_and_is_counted() -> None:
    totals = Totals()
    stream_filter = StreamFilter(totals)
    good = logrecord.encode("gateway.key_retired", {"key_id": 1})
    assert stream_filter.feed(good + (logrecord.MAX_SKIP_BYTES + 1).to_bytes(4, "big") + good) == [
        Accepted("gateway.key_retired", {"key_id": 1})
    ]
    assert stream_filter.broken
    assert totals.dropped == Counter({"oversize": 1})
    assert stream_filter.feed(good) == []  # nothing more is read from a broken stream


def test_an_oversized_record_is_skipped_without_being_held() -> None:
    decoder = logrecord.Decoder()
    length = logrecord.MAX_SKIP_BYTES
    assert decoder.feed(length.to_bytes(4, "big")) == [logrecord.Skipped(length)]
    for _ in range(length // 65536):
        assert decoder.feed(b"\n" * 65536) == []
        assert decoder.buffered == 0
    good = logrecord.encode("gateway.key_retired", {"key_id": 1})
    assert decoder.feed(good[:3]) == [] and decoder.buffered == 3
    assert decoder.feed(good[3:]) == [good[4:]]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"event":"gateway.key_retired","fields":{"key_id":1}}',
            Accepted("gateway.key_retired", {"key_id": 1}),
        ),
        (b'{"event":"gateway.key_retired","fields":{"key_id":true}}', "value"),
        (b'{"event":"gateway.key_retired","fields":{"key_id":1.0}}', "malformed"),
        (b'{"event":"gateway.key_retired","fields":{"key_id":1,"key_id":1}}', "malformed"),
        (b'{"event":"Gateway.key_retired","fields":{"key_id":1}}', "undeclared"),
        (b'{"event":"gateway.key_retired","fields":{}}', "fields"),
        (b'{"event":"gateway.key_retired","fields":{"key_id":-Infinity}}', "malformed"),
        (
            b'{"event":"gateway.key_retired","fields":{"key_id":1}} ',
            Accepted("gateway.key_retired", {"key_id": 1}),
        ),
    ],
)
def test_check_names_the_reason(body: bytes, expected: object) -> None:
    assert check(body) == expected


def test_the_encoder_refuses_a_record_over_the_bound() -> None:
    with pytest.raises(logrecord.LogRecordError):
        logrecord.encode("request.failed", {"reason": "x" * logrecord.MAX_RECORD_BYTES})


def test_the_allowlist_digest_is_stable_and_changes_with_any_bound() -> None:
    digest = events.allowlist_digest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert events.allowlist_digest() == digest
    spec = events.REGISTRY["gateway.key_retired"]
    changes = [
        {**spec.fields, "key_id": events.Int(256)},
        {**spec.fields, "key_id": events.Choice("a")},
        {**spec.fields, "key_id": events.BOOL},
        {**spec.fields, "extra": events.IDENT},
    ]
    try:
        for fields in changes:
            events.REGISTRY[spec.name] = events.EventSpec(spec.name, spec.level, spec.description, fields)
            assert events.allowlist_digest() != digest, fields
        events.REGISTRY[spec.name] = events.EventSpec(
            spec.name, events.Level.ERROR, spec.description, spec.fields
        )
        assert events.allowlist_digest() != digest
        # The description is documentation, not the allow-list.
        events.REGISTRY[spec.name] = events.EventSpec(spec.name, spec.level, "other words", spec.fields)
        assert events.allowlist_digest() == digest
        del events.REGISTRY[spec.name]
        assert events.allowlist_digest() != digest
    finally:
        events.REGISTRY[spec.name] = spec
    assert events.allowlist_digest() == digest


def test_an_installed_sink_takes_the_events_and_can_leave_one_to_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    taken: list[tuple[str, dict[str, object]]] = []

    def sink(spec: events.EventSpec, values: Any) -> bool:
        taken.append((spec.name, dict(values)))
        return spec.name != "gateway.key_rotated"

    events.install_sink(sink)
    try:
        with caplog.at_level("DEBUG", logger="privproc.events"):
            assert events.emit(events.GatewayKeyRetired(key_id=4))
            assert not events.emit(events.GatewayKeyRetired(key_id=400))  # refused before the sink
            assert events.emit(events.GatewayKeyRotated(key_id=5, accepted_keys=1))
    finally:
        events.install_sink(None)
    assert taken == [
        ("gateway.key_retired", {"key_id": 4}),
        ("gateway.key_rotated", {"key_id": 5, "accepted_keys": 1}),
    ]
    assert "gateway.key_retired" not in caplog.text and "gateway.key_rotated" in caplog.text
