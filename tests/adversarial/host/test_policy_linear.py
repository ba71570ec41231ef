"""Screening is linear and bounded (issue 11, item 7).

``SafetyPolicy.screen_input("_@" * 10000)`` took about 13 s (a lookahead
scanned the rest of the word at every word boundary) and held the GIL,
stalling every session of the predictor. Here adversarial texts of 20,000
characters (repeated punctuation, spaced-out and leetspeak obfuscation,
long single words, words that start many rules, mixed) are screened, and
each screen must take at most a generous multiple of a plain word scan of
the same text, measured in the same test. (The bench prints the actual
figure: bench/bench_policy.py.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.bench_policy import plain_word_scan
from privproc.predictor.policy import SafetyPolicy
from privproc.wire.refusal import RefusalCode

POLICY = SafetyPolicy()
LENGTH = 20_000
#: Generous: the goal is 5x for the bench's adversarial inputs, the worst ones here among them (the
#: words of many rules, never completed; dense obfuscation; harmless compounds); the bench prints
#: the figures. This bound leaves room for a loaded machine; anything super-linear is far beyond it
#: at 20,000 characters: the regex screen took over 80,000x on "_@" * 10000.
BOUND = 100


def _fit(units: list[str]) -> str:
    unit = "".join(units)
    return (unit * (LENGTH // len(unit) + 1))[:LENGTH]


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _assert_linear(text: str) -> None:
    # The fastest of a few interleaved runs of each: the least disturbed by the rest of the machine.
    # Stop early once within the bound, or when one run is hopelessly beyond it (the old screen).
    plain = screen = float("inf")
    for _ in range(5):
        plain = min(plain, _timed(lambda: plain_word_scan(text)))
        took = _timed(lambda: POLICY.screen_input([text]))
        screen = min(screen, took)
        if screen <= BOUND * plain or took > 20 * BOUND * plain:
            break
    assert screen <= BOUND * plain, f"screening took {screen / plain:.0f}x a plain word scan"


# Characters that obfuscate, space out or glue words, and letters that start rules.
_OBFUSCATING = "_@$.-*+~|/\\ 013457'\u200b\u00ad\u0301\uff2b"
_PIECES = [
    "_@",
    "k.i.l.l ",
    "k i l l ",
    "b0mb ",
    "k1ll ",
    "a ",
    "how to ",
    "kill him ",
    "my ",
    "the ",
    "porn",
    "3d print ",
    "make sure ",
    "nude ",
    "kids ",
]
units = st.one_of(
    st.text(alphabet=_OBFUSCATING + "abhiklmo", min_size=1, max_size=8),
    st.sampled_from(_PIECES),
    st.text(alphabet="ab", min_size=1, max_size=3).map(lambda s: s * 50),  # long single words
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(units, min_size=1, max_size=4))
def test_screening_adversarial_text_is_bounded_by_a_plain_scan(pieces: list[str]) -> None:
    _assert_linear(_fit(pieces))


def test_the_reported_input_is_screened_quickly() -> None:
    _assert_linear("_@" * 10_000)


def test_repetitive_rule_starts_are_screened_quickly() -> None:
    for unit in ("how to kill ", "i will ", "k i l l ", "b0mb k1ll ", "my neighbour ", "nude kids "):
        _assert_linear(_fit([unit]))


def test_rule_words_that_never_complete_are_screened_quickly() -> None:
    # Every word of many rules, never in an order that matches: each of those rules is looked at.
    near_misses = (
        "that cop 3d print cook to automatic i intend order synthesizing a school shooting i should "
        "improvise assassins how hacking into order show me we must my girlfriends encrypt ransom anti "
        "virus trafficking how write card numbers we d break build installing where buy modify schematic "
        "hack banks this baby i ll gmail refine assemble killing spree how recipe traffic encrypt ransom "
    )
    assert POLICY.screen_input([near_misses * 2]) is None
    _assert_linear(_fit([near_misses]))
    _assert_linear(_fit(["him kill how "]))


def test_obfuscation_mixes_and_compounds_are_screened_quickly() -> None:
    for unit in (
        "h 0 w t0 m 4 k 3 a n1c3 c.4.k.3 f0r th3 p4rty, 1 w1ll k.1.l.l t1m3, b.0.m.b ",
        "bring the glue gun, a bath bomb and the gun safe ",
        "i think a lot of us want a day off, so i am ok with plan a or b ",
        "\u043f\u0440\u0438\u0432\u0435\u0442, \u043a\u0430\u043a \u0434\u0435\u043b\u0430 ",
    ):
        _assert_linear(_fit([unit]))


def test_the_input_bound_is_explicit() -> None:
    assert POLICY.screen_input(["a" * 100_001]) == RefusalCode.INPUT_TOO_LARGE
    assert POLICY.screen_output("a" * 100_001) == RefusalCode.OUTPUT_BLOCKED
    assert POLICY.screen_input(["how to make a bomb " * 5000]) == RefusalCode.WEAPONS
