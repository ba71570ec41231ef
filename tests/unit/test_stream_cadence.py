"""The cadence of streamed frames, on a fake clock: text per tick, padding in silences."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privproc.predictor.cadence import Cadence


def test_the_first_text_goes_out_at_once_then_at_most_once_per_tick() -> None:
    cadence = Cadence(start=0.0, tick=0.1, keepalive=1.0)
    assert cadence.due(0.0) is None
    cadence.add("Hello")
    assert cadence.due(0.02) == "Hello"
    cadence.add(" there")
    cadence.add(",")
    assert cadence.due(0.05) is None and cadence.next_due(0.05) == pytest.approx(0.12)
    cadence.add(" friend")
    assert cadence.due(0.125) == " there, friend"  # a tick's text coalesced into one frame
    assert cadence.due(0.3) is None and cadence.pending == ""


def test_padding_fills_silences_counted_from_the_request() -> None:
    cadence = Cadence(start=10.0, tick=0.1, keepalive=1.0)
    assert cadence.due(10.99) is None and cadence.next_due(10.5) == 11.0
    assert cadence.due(11.0) == ""  # queueing and prompt processing are covered
    assert cadence.due(11.5) is None
    cadence.add("a")
    assert cadence.due(11.6) == "a"
    assert cadence.due(12.59) is None  # a text frame resets the silence
    assert cadence.due(12.6) == ""


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Cadence(start=0.0, tick=0.0, keepalive=1.0)
    with pytest.raises(ValueError):
        Cadence(start=0.0, tick=2.0, keepalive=1.0)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=0.5), st.text(max_size=5)),
        max_size=60,
    )
)
def test_frames_keep_the_rules_whatever_the_arrivals(arrivals: list[tuple[float, str]]) -> None:
    """Text is sent whole and in order; texts are a tick apart; no silence beyond the keepalive."""
    tick, keepalive = 0.1, 1.0
    cadence = Cadence(start=0.0, tick=tick, keepalive=keepalive)
    now, sent, text_times, frame_times = 0.0, [], [], [0.0]

    def drain(until: float) -> None:
        nonlocal now
        while True:
            wake = cadence.next_due(now)
            if wake > until:
                now = until
                return
            now = wake
            frame = cadence.due(now)
            if frame is None:
                continue
            frame_times.append(now)
            if frame:
                sent.append(frame)
                text_times.append(now)

    for gap, text in arrivals:
        drain(now + gap)
        cadence.add(text)
    drain(now + 2 * keepalive)
    assert "".join(sent) == "".join(text for _, text in arrivals)
    assert all(later - earlier >= tick - 1e-9 for earlier, later in itertools.pairwise(text_times))
    assert all(later - earlier <= keepalive + 1e-9 for earlier, later in itertools.pairwise(frame_times))
