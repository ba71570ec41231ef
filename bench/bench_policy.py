"""The safety policy on adversarial inputs: screening time against a plain word scan of the same text.

For each input of 20,000 characters built to be hard for a screen
(punctuation runs such as the ``"_@" * 10000`` that took the regex
version about 13 s, spaced-out and leetspeak obfuscation, one long word,
words that start many rules, the words of many rules never in matching
order, leetspeak mixed densely with spacing, harmless compounds such as
"glue gun" repeated, chat full of one-letter words that look like the start
of a spaced-out run, a script other than Latin, which makes every
character-table pass slower), ``SafetyPolicy.screen_input`` is measured
against a plain word scan of the same text: case-fold, split on
whitespace, one set lookup per word. The issue's goal is a ratio of at
most 5 (screening at most five times the plain scan); the ratio printed
is ops/s of the screen over ops/s of the scan, so the goal is a ratio of
at least 0.2.
"""

from __future__ import annotations

import string

from bench._common import Report, Result, Settings, compare
from privproc.predictor.policy import SafetyPolicy

GROUP = "policy"
LENGTH = 20_000


def _fit(unit: str) -> str:
    """``unit`` repeated to exactly :data:`LENGTH` characters."""
    return (unit * (LENGTH // len(unit) + 1))[:LENGTH]


#: Adversarial inputs, each exactly 20,000 characters.
INPUTS: dict[str, str] = {
    "punctuation _@": _fit("_@"),
    "spaced letters k.i.l.l": _fit("k.i.l.l "),
    "single letters a b": _fit("a b "),
    "one long word": _fit("a"),
    "leetspeak b0mb k1ll": _fit("b0mb k1ll "),
    "rule starts (how to kill)": _fit("how to kill "),
    "accents and zero-width": _fit("k\u00efll\u200b h\u00edm "),
    "ordinary chat": _fit("the offsite venue is booked, flights by friday "),
    "chat with one-letter words": _fit("i think a lot of us want a day off, so i am ok with plan a or b "),
    "rule words never completed": _fit(
        "that cop 3d print cook to automatic i intend order synthesizing a school shooting i should "
        "improvise assassins how hacking into order show me we must my girlfriends encrypt ransom anti "
        "virus trafficking how write card numbers we d break build installing where buy modify schematic "
        "hack banks this baby i ll gmail refine assemble killing spree how recipe traffic encrypt ransom "
    ),
    "leetspeak mixed with spacing, dense": _fit(
        "h 0 w t0 m 4 k 3 a n1c3 c.4.k.3 f0r th3 p4rty, 1 w1ll k.1.l.l t1m3, b.0.m.b "
    ),
    "harmless compounds": _fit("bring the glue gun, a bath bomb and the gun safe "),
    "another script": _fit(
        "\u043f\u0440\u0438\u0432\u0435\u0442, \u043a\u0430\u043a "
        "\u0434\u0435\u043b\u0430 \u0443 \u0442\u0435\u0431\u044f? "
    ),
}

#: The plain scan's vocabulary: a few hundred words, like the policy's.
_VOCABULARY = frozenset(
    [
        "how",
        "to",
        "kill",
        "make",
        "build",
        "bomb",
        "gun",
        "him",
        "her",
        "them",
        "someone",
        "my",
        "the",
        "a",
        "i",
        "we",
        "will",
        "want",
        "going",
    ]
)


_SEPARATORS = str.maketrans(dict.fromkeys(string.punctuation.replace("@", "").replace("$", ""), " "))


def plain_word_scan(text: str) -> int:
    """The baseline: case-fold, split into words (at whitespace and punctuation), one set lookup each.

    Words are what the policy reads as words too: punctuation other than ``@`` and ``$`` separates.
    """
    return sum(1 for word in text.casefold().translate(_SEPARATORS).split() if word in _VOCABULARY)


def run(settings: Settings) -> Report:
    policy = SafetyPolicy()
    results: list[Result] = []
    worst = ("", 0.0)
    for name, text in INPUTS.items():
        samples, baseline = compare(
            lambda t=text: policy.screen_input([t]), lambda t=text: plain_word_scan(t), settings
        )
        result = Result(GROUP, f"screen_input {name}", samples, "plain word scan (same text)", baseline)
        results.append(result)
        slowdown = 1 / result.ratio if result.ratio else float("inf")
        if slowdown > worst[1]:
            worst = (name, slowdown)
    notes = [
        f"{GROUP}: screening 20,000-character adversarial inputs takes at most {worst[1]:.1f}x a plain "
        f"word scan of the same text (worst: {worst[0]}; goal <= 5x)"
    ]
    return Report(results, notes)
