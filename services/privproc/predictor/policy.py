"""A conservative, rule-based safety policy for the predictor's input and output.

What it is: a deterministic, word-level screen, one set of rules per harm
category (:class:`RefusalCode`), run over text after Unicode NFKC
normalisation, removal of accents and invisible format characters, case
folding, and a few cheap de-obfuscation views (spaced-out letters such as
``k i l l`` or ``k.i.l.l`` joined up; digits and ``@``/``$`` inside words
read as letters, ``b0mb``, ``k1ll``, ``ki11``). A rule is a short sequence of
word sets ("how"-words, a few arbitrary words, a violent verb, a person)
describing *requests and intents* (how to build a bomb, how to hurt someone,
suicide methods, sexual content involving minors, synthesising or buying
hard drugs, writing malware, eliminationist or dehumanising statements about
groups); the rules do not list slurs, and nothing here keeps lists of
offensive words.

How it runs, and why that way: screening must take time linear in the
text and close to a plain word scan of it, whatever the text (an earlier
regex version took about 13 s on ``"_@" * 10000`` while holding the GIL,
stalling every session of the predictor). So nothing is done per word in
Python: each reading is made by C-level passes (``str.translate``,
``split``, ``set``, ``map`` over word lists, one linear regular expression
for spaced-out runs, one for harmless compounds), a reading that cannot differ from another is not
made (no leetspeak reading without digits, ``@`` or ``$``), and a rule
whose words do not all occur in some reading is not looked at (for almost
every text, every rule). The remaining rules are matched on all positions
at once with bit masks. Texts longer than
:data:`MAX_SCREEN_CHARS` are refused whole.

What it is not: a classifier. It does not understand context, irony or
other languages, and a determined writer gets past it (unusual spellings,
paraphrase, runs of repeated letters such as ``kiiill``). It errs on the
side of refusing: a request refused in doubt costs one user a summary,
while an answer that should not have been given cannot be taken back.

Decided false positives and negatives (tests pin these down):

- Figurative speech about oneself passes: "this meeting is killing me",
  "my boss will kill me", "you killed it at the demo", "kill the process",
  "the talk bombed". Violence rules need a person as the object (him,
  her, them, someone, my neighbour...), and ``me`` is not one.
- Threats against someone else are refused even when they are jokes
  ("I'll kill him if he is late again"), and so is "I could kill myself"
  (self-harm). Conservative by design.
- Benign compounds are removed before matching (glue gun, nerf gun, bath
  bomb, photobomb...), so "make a bath bomb" passes; "send him an email"
  style objects (message, text, invite...) never count as violence.
- A chat that mentions children together with nudity or sexual words within
  a few words is refused as ``sexual_minors``, even when innocent ("the kids
  ran around naked in the garden"): there is no reliable cheap way to tell.
- The screen runs over all texts joined, so a request split across two
  messages is still seen; rarely, words from neighbouring messages combine.
- Punctuation (hyphens and apostrophes included, ``@`` and ``$`` not)
  separates words, so "how, exactly, do I build a bomb?" and "self-harm"
  read like "how exactly do i build a bomb" and "self harm".

An operator can replace this class: :class:`~privproc.predictor.tasks.TaskProcessor`
takes anything with ``screen_input`` and ``screen_output``
(:class:`ContentPolicy`). Refusals carry only a :class:`RefusalCode`, never
the text that matched: that text is message content.

Where it is: this module is the policy's public API (:class:`SafetyPolicy`,
:class:`ContentPolicy`, :data:`HARM_CATEGORIES`, :data:`MAX_SCREEN_CHARS`) and compiles the
rules; :mod:`privproc.predictor.readings` makes a text's readings,
:mod:`privproc.predictor.matching` matches rules over them, and
:mod:`privproc.predictor.rules` holds the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from privproc.errors import LimitExceededError
from privproc.predictor.matching import Codebook, Rule, Scan, Vocabulary, two_bytes
from privproc.predictor.readings import Readings
from privproc.predictor.rules import OUTPUT_ONLY, RULES, WrittenRule
from privproc.wire.refusal import RefusalCode

#: The categories :class:`SafetyPolicy` screens for (the others are processing outcomes).
HARM_CATEGORIES: tuple[RefusalCode, ...] = (
    RefusalCode.VIOLENCE,
    RefusalCode.WEAPONS,
    RefusalCode.SELF_HARM,
    RefusalCode.SEXUAL_MINORS,
    RefusalCode.ILLEGAL_DRUGS,
    RefusalCode.MALWARE,
    RefusalCode.HATE,
)


class ContentPolicy(Protocol):
    """What the task processor needs of a safety policy (an operator may supply their own)."""

    def screen_input(self, texts: Sequence[str]) -> RefusalCode | None:
        """The refusal code for a request's texts, or ``None`` to process them."""
        ...

    def screen_output(self, text: str) -> RefusalCode | None:
        """The refusal code for a model output, or ``None`` to return it."""
        ...


# --- bounds -------------------------------------------------------------------------

#: Longest text (characters, before normalisation) the policy screens; longer is refused whole.
#: Screening is linear in the text, so this bounds its time, not its complexity.
MAX_SCREEN_CHARS = 100_000


# --- the compiled rules ------------------------------------------------------------------

_VOCABULARY = Vocabulary()
_Compiled = list[tuple[RefusalCode, tuple[Rule, ...]]]


def _compile(rules: Iterable[tuple[RefusalCode, Sequence[WrittenRule]]]) -> _Compiled:
    return [
        (code, tuple(_VOCABULARY.rule(spec, unless_next=unless) for spec, unless in specs))
        for code, specs in rules
    ]


# Compiled once per process: expanding the elements, coding their words and building their
# automata takes a fraction of a second at import.
_INPUT_RULES = _compile(RULES)
_OUTPUT_RULES = _compile((code, [*specs, *OUTPUT_ONLY.get(code, [])]) for code, specs in RULES)
_BOOK = Codebook(_VOCABULARY)


def _possible(rules: _Compiled, elements: int) -> _Compiled:
    """The rules whose every element is among ``elements`` (bits)."""
    missing = ~elements
    return [(code, tuple(rule for rule in found if not rule.needs & missing)) for code, found in rules]


def _first_match(readings: Readings, rules: _Compiled) -> RefusalCode | None:
    """The first category (in order) with a rule that matches one of the readings, or ``None``."""
    present = _BOOK.present(readings.distinct)
    # Words matching a prefix ("porn...") are looked for only when a rule that could match reads one.
    elements = _BOOK.possible(present, any_prefix=True)
    if not elements:
        return None
    candidates = _possible(rules, elements)
    code_of = _BOOK.codes
    prefixed: dict[str, int] = {}
    if any(rule.reads & _BOOK.prefixed_elements for _, found in candidates for rule in found):
        prefixed = _BOOK.prefix_words(readings.distinct)
        if prefixed:
            code_of = {**code_of, **{word: two_bytes(code) for word, code in prefixed.items()}}
            present |= set(prefixed.values())
        candidates = _possible(candidates, _BOOK.possible(present))
    if not any(found for _, found in candidates):
        return None
    scans = [Scan(_BOOK, codes, _BOOK.present(words, prefixed)) for codes, words in readings.codes(code_of)]
    for code, found in candidates:
        for rule in found:
            if any(scan.matches(rule) for scan in scans):
                return code
    return None


class SafetyPolicy:
    """Rule-based screen of requests and outputs (see the module docstring for its limits).

    Categories are checked in a fixed order, most severe first, so the same
    text always yields the same code. Screening is linear in the text's
    length; texts longer than :data:`MAX_SCREEN_CHARS` are refused whole.
    """

    def __init__(self) -> None:
        self._rules = _INPUT_RULES
        self._output_rules = _OUTPUT_RULES

    def categorise(self, text: str, *, output: bool = False) -> RefusalCode | None:
        """The first harm category ``text`` matches in any of its views, or ``None``.

        ``output`` applies the stricter rules for model outputs. A text longer
        than :data:`MAX_SCREEN_CHARS` raises :class:`~privproc.errors.LimitExceededError`.
        """
        if len(text) > MAX_SCREEN_CHARS:
            raise LimitExceededError("text too large to screen")
        return _first_match(Readings(text), self._output_rules if output else self._rules)

    def screen_input(self, texts: Sequence[str]) -> RefusalCode | None:
        """The harm category of a request's texts (screened together), or ``None``.

        Texts longer together than :data:`MAX_SCREEN_CHARS` are ``INPUT_TOO_LARGE``.
        """
        # Joined, so a request split over several messages is still seen whole.
        joined = "\n".join(texts)
        if len(joined) > MAX_SCREEN_CHARS:
            return RefusalCode.INPUT_TOO_LARGE
        return self.categorise(joined)

    def screen_output(self, text: str) -> RefusalCode | None:
        """``OUTPUT_BLOCKED`` when a model output matches any harm category, else ``None``.

        Outputs are screened with the input rules and a few stricter ones: instructions
        such as "build a pipe bomb" or "stab him" are refused without any intent words.
        An output too long to screen is blocked.
        """
        if len(text) > MAX_SCREEN_CHARS:
            return RefusalCode.OUTPUT_BLOCKED
        return RefusalCode.OUTPUT_BLOCKED if self.categorise(text, output=True) is not None else None


__all__ = [
    "HARM_CATEGORIES",
    "MAX_SCREEN_CHARS",
    "ContentPolicy",
    "SafetyPolicy",
]
