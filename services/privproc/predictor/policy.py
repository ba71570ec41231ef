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

How it runs, and why that way: each view is split into words once; one
trie of every rule's phrases is walked from each word (a dictionary lookup
for almost every word), and each rule is then checked over the positions
where its word sets occurred, with bounded gaps. The work is linear in the
text's length, and no regular expression is tried at every position of the
input with lookarounds or unbounded backtracking: an earlier version that
did took about 13 s on ``"_@" * 10000`` while holding the GIL, stalling
every session of the predictor. Texts longer than :data:`MAX_SCREEN_CHARS`
are refused whole.

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
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from privproc.errors import LimitExceededError
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


# --- normalisation ------------------------------------------------------------

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u2010": "-", "\u2011": "-"})
_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
# Spacing punctuation between single characters: "k i l l", "k.i.l.l", "b-o-m-b". Possessive, so
# a run of it is never re-read: the scan is linear. Only ASCII letters, digits, "@" and "$" are
# joined: every word of every rule is ASCII, so a joined run of other letters could match nothing.
_SPACED = re.compile(r"[a-z0-9@$](?:[ .\-_*+~|/\\]++[a-z0-9@$]){2,}")
# Where a run starts: three single characters, each alone between spacing (or the text's ends).
# Tried where the text has a non-word character, so ordinary words cost nothing.
_SPACED_START = re.compile(
    r"(?:^|[^\w@$])([a-z0-9@$])[ .\-_*+~|/\\]++[a-z0-9@$][ .\-_*+~|/\\]++[a-z0-9@$](?:[^\w@$]|_|$)"
)
_SPACING_CHARS = frozenset(" .-_*+~|/\\")
_NO_SPACING = str.maketrans(dict.fromkeys(_SPACING_CHARS))
_SPACING_TO_SPACE = str.maketrans(dict.fromkeys(_SPACING_CHARS, " "))
_GLUED = re.compile(r"[^\W_]|[@$]")  # a character that continues a word ("_" spaces letters out)
_RUN = re.compile(r"(?:[^\W_]|[@$])+")  # a word as the matcher splits them: "_" separates
_LEET_CHARS = "0123456789@$"
_LETTER = re.compile(r"[a-z]")
_LEET_I = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_L = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# Punctuation that is not part of a word (trimmed from words; "@" and "$" are leetspeak letters).
_EDGE = "'\".,;:!?()[]{}<>*~|/\\_+=&%^#`\u00ab\u00bb\u2039\u203a\u201c\u201d\u2026"
# Between words for the matcher: that punctuation and hyphens (one C-level pass, no per-word work).
_SEPARATORS = str.maketrans(dict.fromkeys(_EDGE + "-", " "))

# Harmless compounds whose second word would otherwise look like a weapon ("glue gun", "bath bomb").
_GUN_BEFORE = frozenset(
    [
        "glue",
        "nerf",
        "water",
        "squirt",
        "staple",
        "nail",
        "heat",
        "spray",
        "toy",
        "paint",
        "bubble",
        "massage",
        "caulk",
        "radar",
        "laser",
        "price",
        "top",
        "big",
        "smoking",
        "starting",
        "grease",
    ]
)
_GUN_AFTER = frozenset(
    [
        "safe",
        "safes",
        "rack",
        "racks",
        "cabinet",
        "cabinets",
        "show",
        "shows",
        "control",
        "law",
        "laws",
        "violence",
    ]
)
_BOMB_BEFORE = frozenset(["bath", "seed", "glitter", "photo", "f", "da", "love", "cherry", "stink"])
_BOMB_WORD = re.compile(r"(?:bath|seed|glitter|photo|f|da|love|cherry|stink)-?bombs?")


def normalise(text: str) -> str:
    """NFKC, no accents or invisible format characters, case-folded, single spaces."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        # Accents and zero-width / bidi characters are a cheap way to break a word: drop them.
        decomposed = unicodedata.normalize("NFD", text)
        # One category lookup per distinct character, then one C-level pass.
        dropped = {ord(ch): None for ch in set(decomposed) if unicodedata.category(ch) in _DROPPED_CATEGORIES}
        text = unicodedata.normalize("NFC", decomposed.translate(dropped) if dropped else decomposed)
    return " ".join(text.casefold().translate(_QUOTES).split())


def _benign(text: str) -> str:
    """``text`` with harmless gun and bomb compounds replaced by ``thing`` (word by word)."""
    if "gun" not in text and "bomb" not in text:
        return text
    words = text.split(" ")
    keys = [word.strip(_EDGE) for word in words]
    last = len(keys) - 1
    spans: list[tuple[int, int]] = []
    for i, key in enumerate(keys):
        if key in ("gun", "guns"):
            if i >= 1 and keys[i - 1] in _GUN_BEFORE:
                spans.append(
                    (i - 2 if i >= 2 and keys[i - 2] == "hot" and keys[i - 1] == "glue" else i - 1, i)
                )
            if i < last and keys[i + 1] in _GUN_AFTER:
                spans.append((i, i + 1))
        elif "bomb" in key:
            if key.startswith("photobomb") or _BOMB_WORD.fullmatch(key):
                spans.append((i, i))
            elif key.lstrip("-") in ("bomb", "bombs") and i >= 1 and keys[i - 1] in _BOMB_BEFORE:
                spans.append((i - 2 if i >= 2 and keys[i - 2] == "the" and keys[i - 1] == "da" else i - 1, i))
    if not spans:
        return text
    out: list[str] = []
    position = 0
    for start, end in sorted(spans):
        if start < position:  # overlapping compounds: the first one took these words
            continue
        out.extend(words[position:start])
        out.append("thing")
        position = end + 1
    out.extend(words[position:])
    return " ".join(out)


def _spaced(text: str) -> tuple[str, str]:
    """Runs of three or more spaced-out single characters joined up ("k i l l" -> "kill").

    Two readings: the runs joined, and the runs joined with a leading ``a`` or
    ``i`` kept as a word of its own ("make a b o m b" -> "make a bomb").
    """
    # Every run has a middle character with spacing on both sides, a word of one character once
    # spacing separates words: without one (most texts), there is nothing to join.
    pieces = text.translate(_SPACING_TO_SPACE).split()
    if not pieces or min(map(len, pieces)) > 1:
        return text, text
    joined: list[str] = []
    split: list[str] = []
    position = 0
    hint = _SPACED_START.search(text)
    while hint is not None:
        start = hint.start(1)
        match = _SPACED.match(text, start)
        assert match is not None  # the start pattern is a prefix of the run pattern
        run, end = match.group(0), match.end()
        if end < len(text) and _GLUED.match(text, end):
            # The last character is the start of a longer word: not part of the run.
            cut = len(run) - 1
            while run[cut - 1] in _SPACING_CHARS:
                cut -= 1
            run, end = run[:cut], start + cut
        hint = _SPACED_START.search(text, end)
        letters = run.translate(_NO_SPACING)
        if len(letters) < 3:  # cannot happen (the start pattern holds three); kept as a guard
            continue
        before = text[position:start]
        joined += (before, letters)
        if len(letters) > 3 and letters[0] in "ai":
            letters = letters[0] + " " + letters[1:]
        split += (before, letters)
        position = end
    if not position:
        return text, text
    joined.append(text[position:])
    split.append(text[position:])
    return "".join(joined), "".join(split)


def _has_leet(text: str) -> bool:
    # A dozen C-level substring searches: cheaper than one regex pass over a long text.
    return any(ch in text for ch in _LEET_CHARS)


def _deleet(text: str, table: dict[int, str]) -> str:
    """Words mixing letters with digits or ``@``/``$`` read as letters ("b0mb"); "14th" stays."""

    def word(match: re.Match[str]) -> str:
        run = match.group(0)
        return run.translate(table) if _LETTER.search(run) and _has_leet(run) else run

    seen: dict[str, str] = {}  # texts repeat their words: each distinct one is read once

    def token(text: str) -> str:
        read = seen.get(text)
        if read is None:
            # Letters (cased characters: the text is case-folded) and digits or @/$ in one word.
            mixed = not text.isalpha() and text != text.upper() and _has_leet(text)
            read = seen[text] = _RUN.sub(word, text) if mixed else text
        return read

    return " ".join([token(text) for text in text.split(" ")])


def views(text: str) -> list[str]:
    """The normalised text and its de-obfuscated readings (each screened on its own)."""
    base = _benign(normalise(text))
    # "make a b o m b" joins to "make abomb": also read a leading "a" or "i" as its own word.
    joined, split = _spaced(base)
    found = [base, joined, split]
    if _has_leet(joined):
        found += [_deleet(joined, _LEET_I), _deleet(joined, _LEET_L)]
    unique: list[str] = []
    for view in found:
        if view not in unique:
            unique.append(view)
    return unique


def _deleet_words(words: list[str], table: dict[int, str]) -> list[str]:
    """``words`` with each word mixing letters and digits or ``@``/``$`` read through ``table``."""
    # Texts repeat their words: each distinct one is read once, then the list is mapped in C.
    changed = {}
    for word in set(words):
        # Letters (cased characters: the text is case-folded) and digits or @/$ in one word.
        if not word.isalpha() and word != word.upper() and _has_leet(word):
            changed[word] = word.translate(table)
    if not changed:
        return words
    return list(map(changed.get, words, words))


def _readings(text: str) -> list[list[str]]:
    """The words of each of :func:`views`' readings, as the matcher reads them (distinct ones)."""
    base = _benign(normalise(text))
    joined, split = _spaced(base)
    readings = [_words(base)]
    if joined != base:
        readings.append(_words(joined))
        if split != joined:
            readings.append(_words(split))
    if _has_leet(joined):
        source = readings[1] if joined != base else readings[0]
        for table in (_LEET_I, _LEET_L):
            leet = _deleet_words(source, table)
            if leet not in readings:
                readings.append(leet)
    return readings


def _words(view: str) -> list[str]:
    """A view as the words the vocabulary is compared with: punctuation and hyphens separate words.

    Rule phrases are split the same way ("i'll" is "i ll", "co-worker" is "co worker").
    """
    # "make sure" is never making anything (the only exception any make-verb needs).
    if "make sure" in view:
        view = view.replace("make sure", "makesure")
    return view.translate(_SEPARATORS).split()


# --- the word-level matcher ----------------------------------------------------------
#
# Rules are sequences of *elements* (finite sets of phrases) with bounded gaps of arbitrary words
# between them. Each element is written as a small regular expression (literals, ``(?:a|b)``,
# ``[abc]``, ``?``, and ``\w*`` at the end of a word) that is expanded once, at import, into its
# phrases; every phrase goes into one trie of words. Screening a view walks the trie once from
# each word (a dictionary lookup per word, a few more where a phrase continues), recording where
# each element matched, then checks each rule's sequence over those positions. Nothing is
# matched character by character at every position, and nothing backtracks beyond a gap's bound:
# the work is linear in the number of words.

_WILD = "\x00"  # "\w*" at the end of a word: any continuation
_MAX_EXPANSIONS = 20_000


class _Expander:
    """Expands the regular-expression subset elements are written in into all their strings."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.pos = 0

    def expand(self) -> list[str]:
        result = self._alternation()
        if self.pos != len(self.pattern):
            raise ValueError(f"unsupported element syntax at {self.pos}: {self.pattern!r}")
        return result

    def _peek(self) -> str:
        return self.pattern[self.pos] if self.pos < len(self.pattern) else ""

    def _alternation(self) -> list[str]:
        options = self._sequence()
        while self._peek() == "|":
            self.pos += 1
            options = options + self._sequence()
        return options

    def _sequence(self) -> list[str]:
        strings = [""]
        while self._peek() not in ("", "|", ")"):
            atom = self._atom()
            if self._peek() == "?":
                self.pos += 1
                atom = ["", *atom]
            strings = [left + right for left in strings for right in atom]
            if len(strings) > _MAX_EXPANSIONS:
                raise ValueError("element expands to too many phrases")
        return strings

    def _atom(self) -> list[str]:
        ch = self._peek()
        if self.pattern.startswith("(?:", self.pos):
            self.pos += 3
            inner = self._alternation()
            if self._peek() != ")":
                raise ValueError(f"unclosed group: {self.pattern!r}")
            self.pos += 1
            return inner
        if ch == "[":
            end = self.pattern.index("]", self.pos + 1)
            body, self.pos = self.pattern[self.pos + 1 : end], end + 1
            chars: list[str] = []
            i = 0
            while i < len(body):
                if i + 2 < len(body) and body[i + 1] == "-":
                    chars += [chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1)]
                    i += 3
                else:
                    chars.append(body[i])
                    i += 1
            return chars
        if self.pattern.startswith(r"\w*", self.pos):
            self.pos += 3
            return [_WILD]
        if ch in "\\()*+{}.^$":
            raise ValueError(f"unsupported element syntax at {self.pos}: {self.pattern!r}")
        self.pos += 1
        return [ch]


def _phrases(pattern: str) -> set[tuple[str, ...]]:
    """The word sequences an element matches."""
    phrases: set[tuple[str, ...]] = set()
    for string in _Expander(pattern).expand():
        words = tuple(_words(string))
        if not words or not all(words) or any(_WILD in word[:-1] for word in words):
            raise ValueError(f"element {pattern!r} has an empty word or a wildcard inside a word")
        phrases.add(words)
    return phrases


class _Node:
    __slots__ = ("children", "ends", "prefixes")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.prefixes: dict[str, _Node] = {}  # word prefixes ("porn" for "porn\w*")
        self.ends: list[int] = []  # elements whose phrase ends here


@dataclass(frozen=True)
class Gap:
    """Up to ``words`` arbitrary words between two elements of a rule."""

    words: int


#: How a rule is written: element patterns, with :class:`Gap` between some of them.
RuleSpec = Sequence["str | Gap"]


@dataclass(frozen=True)
class _Rule:
    elements: tuple[int, ...]
    gaps: tuple[int, ...]  # gaps[k]: words allowed before elements[k] (gaps[0] unused)
    unless_next: int | None  # an element that must not start right after the match
    needed: frozenset[int]  # the elements, as a set: a rule is tried only if all of them occur


# Per element: the (start, end) word indices where it matched.
_Hits = dict[int, list[tuple[int, int]]]
# Per trie node with ends: the (start, end) word indices where a phrase ending there matched.
_NodeHits = defaultdict["_Node", list[tuple[int, int]]]


class _Vocabulary:
    """Every element of every rule, in one trie of words."""

    def __init__(self) -> None:
        self.root = _Node()
        self._ids: dict[str, int] = {}

    def element(self, pattern: str) -> int:
        known = self._ids.get(pattern)
        if known is not None:
            return known
        ident = len(self._ids)
        self._ids[pattern] = ident
        for phrase in _phrases(pattern):
            node = self.root
            for word in phrase:
                if word.endswith(_WILD):
                    node = node.prefixes.setdefault(word[:-1], _Node())
                else:
                    node = node.children.setdefault(word, _Node())
            if ident not in node.ends:
                node.ends.append(ident)
        return ident

    def rule(self, spec: RuleSpec, *, unless_next: str | None = None) -> _Rule:
        elements: list[int] = []
        gaps: list[int] = []
        pending = 0
        for part in spec:
            if isinstance(part, Gap):
                pending += part.words
                continue
            elements.append(self.element(part))
            gaps.append(pending)
            pending = 0
        if not elements or pending:
            raise ValueError("a rule starts and ends with an element")
        unless = self.element(unless_next) if unless_next is not None else None
        return _Rule(tuple(elements), tuple(gaps), unless, frozenset(elements))

    def scan(self, words: Sequence[str]) -> _Hits:
        """Where each element matches in ``words``."""
        node_hits: _NodeHits = defaultdict(list)
        starts, root_prefixes = self.root.children, self.root.prefixes
        first_prefixes = tuple(root_prefixes)
        # Where a phrase can start, decided once per distinct word (texts repeat their words).
        firsts: dict[str, list[_Node]] = {}
        for word in set(words):
            nodes = [starts[word]] if word in starts else []
            if first_prefixes and word.startswith(first_prefixes):  # rare: "porn...", "encrypt..."
                nodes += [wild for prefix, wild in root_prefixes.items() if word.startswith(prefix)]
            if nodes:
                firsts[word] = nodes
        if not firsts:
            return {}  # most texts' words mostly start nothing; some texts none at all
        # Each first word's positions, then each phrase's first step for all of them at once:
        # one-word phrases are recorded in bulk, and only positions whose next word continues a
        # phrase are walked further.
        groups: defaultdict[str, list[int]] = defaultdict(list)
        for position in [i for i, word in enumerate(words) if word in firsts]:
            groups[words[position]].append(position)
        last = len(words) - 1
        for word, positions in groups.items():
            for node in firsts[word]:
                if node.ends:
                    node_hits[node].extend([(i, i + 1) for i in positions])
                children, prefixes = node.children, node.prefixes
                if prefixes:
                    onward = [i for i in positions if i < last]
                elif children:
                    onward = [i for i in positions if i < last and words[i + 1] in children]
                else:
                    continue
                for i in onward:
                    following = words[i + 1]
                    child = children.get(following)
                    if child is not None:
                        _walk(child, words, i, i + 2, node_hits)
                    for prefix, wild in prefixes.items():
                        if following.startswith(prefix):
                            _walk(wild, words, i, i + 2, node_hits)
        hits: _Hits = {}
        for node, spans in node_hits.items():
            for ident in node.ends:
                hits.setdefault(ident, []).extend(spans)
        return hits


def _walk(node: _Node, words: Sequence[str], start: int, position: int, hits: _NodeHits) -> None:
    """Follow the trie from ``node`` (the words before ``position`` matched), recording every end."""
    count = len(words)
    while True:
        if node.ends:
            hits[node].append((start, position))
        if position == count:
            return
        current = words[position]
        if node.prefixes:
            for prefix, wild in node.prefixes.items():
                if current.startswith(prefix):
                    _walk(wild, words, start, position + 1, hits)
        child = node.children.get(current)
        if child is None:
            return
        node, position = child, position + 1


def _matches(rule: _Rule, hits: _Hits, index: dict[int, dict[int, list[int]]]) -> bool:
    """Whether the rule's elements occur in order, each within its gap of the one before.

    ``index`` caches, per element, its matches by start (built only for rules whose every
    element occurs at all).
    """
    if not rule.needed <= hits.keys():
        return False

    def by_start(element: int) -> dict[int, list[int]]:
        starts = index.get(element)
        if starts is None:
            starts = index[element] = {}
            for start, end in hits.get(element, ()):
                starts.setdefault(start, []).append(end)
        return starts

    forbidden = by_start(rule.unless_next) if rule.unless_next is not None else {}
    following = [by_start(element) for element in rule.elements]

    def extend(k: int, end: int) -> bool:
        if k == len(following):
            return end not in forbidden
        starts = following[k]
        for start in range(end, end + rule.gaps[k] + 1):
            for next_end in starts.get(start, ()):
                if extend(k + 1, next_end):
                    return True
        return False

    return any(extend(1, end) for _, end in hits[rule.elements[0]])


# --- vocabulary -------------------------------------------------------------------


def _any(*alternatives: str) -> str:
    return "(?:" + "|".join(alternatives) + ")"


# Asking how to do something, or planning it.
_HOWTO = _any(
    r"how",
    r"ways?",
    r"methods?",
    r"best way",
    r"easiest way",
    r"help me",
    r"teach me",
    r"show me",
    r"instructions?",
    r"steps?",
    r"guide",
    r"tutorial",
    r"recipe",
    r"plan(?:ning)?",
    r"let'?s",
    r"should i",
    r"can i",
    r"trying to",
    r"gonna",
    r"wanna",
)
# The writer (or their group) intending to do something: "I'll", "we are going to", "I want to".
_SELF_INTENT = (
    r"(?:i|we)(?:'ll|'d|'m|'re| will| would| shall| am| are| want| need| plan| intend| should| could| must"
    r"| might| have to| gotta| gonna| wanna)"
)
_INTENT = _any(_HOWTO, _SELF_INTENT, r"want", r"going", r"will", r"intend")
_PERSONAL_INTENT = _any(_HOWTO, _SELF_INTENT)

_VIOLENT_VERB = _any(
    r"kill",
    r"murder",
    r"stab",
    r"strangle",
    r"choke",
    r"shoot",
    r"poison",
    r"drown",
    r"suffocate",
    r"behead",
    r"decapitate",
    r"torture",
    r"kidnap",
    r"abduct",
    r"maim",
    r"beat up",
    r"beat the shit out of",
    r"assassinate",
    r"hurt",
    r"harm",
    r"assault",
    r"rape",
    r"run over",
    r"set fire to",
)
_RELATION = _any(
    r"wife",
    r"husband",
    r"boss",
    r"mom",
    r"mum",
    r"mother",
    r"dad",
    r"father",
    r"brother",
    r"sister",
    r"neighbou?r",
    r"teacher",
    r"ex",
    r"girlfriend",
    r"boyfriend",
    r"partner",
    r"family",
    r"co-?worker",
    r"colleague",
    r"roommate",
    r"flatmate",
    r"friend",
    r"son",
    r"daughter",
    r"kid",
    r"child",
    r"classmate",
    r"landlord",
    r"manager",
)
_PERSON = _any(
    r"someone",
    r"somebody",
    r"anyone",
    r"anybody",
    r"everyone",
    r"everybody",
    r"people",
    r"a person",
    r"him",
    r"her",
    r"them",
    r"you",
    r"u",
    r"ya",
    rf"(?:my|his|her|their|your|our) {_RELATION}s?",
    r"(?:a|the|that|this) (?:child|kid|baby|woman|man|girl|boy|guy|cop|police officer|officer|judge|senator)",
    r"the (?:president|prime minister|police|cops|pope)",
    r"(?:a|the|my|our) (?:school|class|crowd|church|mosque|synagogue|temple)",
)
# "shoot him an email", "hurt her feelings": the person is not the object of violence.
_NOT_VIOLENT_OBJECT = (
    "(?:an? |the |some )?"
    "(?:e-?mails?|messages?|texts?|notes?|lines?|dms?|invites?|invitations?|links?|reminders?|pings?|calls?|"
    "msgs?|feelings|chances|pride|ego|reputation|business|sales|numbers|score|career|vibe|buzz|mood|"
    "question|look|smile|photo|picture|video|shot)"
)

_MAKE = _any(
    r"make",
    r"making",
    r"build",
    r"building",
    r"assemble",
    r"construct",
    r"create",
    r"manufacture",
    r"produce",
    r"craft",
    r"rig",
    r"cook up",
    r"3d[- ]?print",
    r"print",
    r"convert",
    r"synthesi[sz]e",
    r"weaponi[sz]e",
    r"improvise",
    r"mix",
    r"brew",
)
_WEAPON = _any(
    r"(?:pipe |nail |car |dirty |letter |suicide |fertili[sz]er |homemade |home-made )?bombs?",
    r"explosives?",
    r"ieds?",
    r"grenades?",
    r"molotov(?: cocktails?)?",
    r"napalm",
    r"thermite",
    r"detonators?",
    r"landmines?",
    r"c-?4",
    r"semtex",
    r"tnt",
    r"anfo",
    r"tatp",
    r"gunpowder",
    r"black powder",
    r"(?:ghost |untraceable |unregistered |zip |homemade |home-made |3d[- ]printed |automatic )?guns?",
    r"firearms?",
    r"rifles?",
    r"pistols?",
    r"handguns?",
    r"shotguns?",
    r"silencers?",
    r"suppressors?",
    r"auto ?sears?",
    r"machine ?guns?",
    r"nerve (?:agents?|gas)",
    r"sarin",
    r"vx",
    r"ricin",
    r"anthrax",
    r"botulinum",
    r"mustard gas",
    r"chlorine gas",
    r"phosgene",
    r"(?:chemical|biological|bio|nuclear|radiological) ?-?weapons?",
    r"nuclear bombs?",
    r"nukes?",
)
_SEXUAL = _any(
    r"sex",
    r"sexual(?:ly)?",
    r"sexy",
    r"nudes?",
    r"naked",
    r"porn\w*",
    r"erotic\w*",
    r"nsfw",
    r"lewd",
    r"molest\w*",
    r"grope",
    r"groping",
    r"fondl\w*",
    r"rape",
    r"raping",
    r"seduc\w*",
    r"intercourse",
    r"orgasm\w*",
    r"masturbat\w*",
    r"genitals?",
    r"onlyfans",
    r"hentai",
)
_MINOR = _any(
    r"child",
    r"children",
    r"kids?",
    r"minors?",
    r"underage",
    r"under-age",
    r"pre-?teens?",
    r"toddlers?",
    r"infants?",
    r"little (?:girl|boy)s?",
    r"young (?:girl|boy)s?",
    r"school ?girls?",
    r"school ?boys?",
    r"(?:1[0-7]|[1-9])[- ]?(?:yo|y/o|years?[- ]old|year-olds?)",
    r"teen(?:age)?(?:rs?)?",
)
_DRUG = _any(
    r"meth",
    r"methamphetamines?",
    r"crystal meth",
    r"amphetamines?",
    r"heroin",
    r"cocaine",
    r"crack cocaine",
    r"fentanyl",
    r"carfentanil",
    r"lsd",
    r"mdma",
    r"ecstasy",
    r"ghb",
    r"pcp",
    r"ketamine",
    r"dmt",
    r"opium",
    r"psilocybin",
    r"mescaline",
    r"bath salts",
    r"krokodil",
    r"desomorphine",
    r"nitazenes?",
)
_DRUG_MAKE = _any(
    r"make",
    r"making",
    r"cook",
    r"cooking",
    r"synthesi[sz]e",
    r"synthesi[sz]ing",
    r"synthesis of",
    r"produce",
    r"producing",
    r"manufacture",
    r"manufacturing",
    r"extract",
    r"extracting",
    r"brew",
    r"refine",
    r"isolate",
)
_MALWARE_THING = _any(
    r"malware",
    r"ransomware",
    r"key ?loggers?",
    r"trojans?",
    r"rootkits?",
    r"botnets?",
    r"spyware",
    r"stalkerware",
    r"(?:computer|network|self-?replicating) (?:worms?|viruse?s?)",
    r"backdoors?",
    r"(?:credential|password|cookie|info) ?-?stealers?",
    r"infostealers?",
    r"crypto-?jackers?",
    r"(?:hidden|stealth) (?:crypto)?miners?",
    r"ddos (?:tools?|scripts?|bots?)",
    r"phishing (?:kits?|pages?|sites?|e-?mails?|links?|campaigns?)",
    r"(?:fork|zip) bombs?",
    r"shellcode",
    r"remote access trojans?",
)
# Not "spread" ("don't spread the virus") nor "code"/"program" (nouns in ordinary tech talk).
_MALWARE_MAKE = _any(
    r"write",
    r"writing",
    r"create",
    r"creating",
    r"build",
    r"building",
    r"make",
    r"making",
    r"develop",
    r"developing",
    r"generate",
    r"deploy",
    r"deploying",
    r"install",
    r"installing",
    r"plant",
    r"planting",
    r"hide",
    r"obfuscate",
    r"sell",
    r"buy",
)
_HACK_TARGET = _any(
    r"accounts?",
    r"phones?",
    r"e-?mails?",
    r"instagram",
    r"facebook",
    r"snapchat",
    r"whatsapp",
    r"wi-?fi",
    r"computers?",
    r"laptops?",
    r"servers?",
    r"networks?",
    r"banks?",
    r"databases?",
    r"websites?",
    r"icloud",
    r"gmail",
    r"webcams?",
    r"cameras?",
)
_GROUP = _any(
    r"jews",
    r"jewish people",
    r"muslims",
    r"christians",
    r"hindus",
    r"sikhs",
    r"buddhists",
    r"atheists",
    r"catholics",
    r"blacks",
    r"black people",
    r"whites",
    r"white people",
    r"asians",
    r"asian people",
    r"arabs",
    r"africans",
    r"mexicans",
    r"latinos",
    r"latinas",
    r"hispanics",
    r"immigrants",
    r"migrants",
    r"refugees",
    r"foreigners",
    r"gays",
    r"gay people",
    r"lesbians",
    r"homosexuals",
    r"trans people",
    r"transgender people",
    r"trans (?:women|men)",
    r"bisexuals",
    r"queers",
    r"women",
    r"men",
    r"disabled people",
    r"the disabled",
    r"gypsies",
    r"chinese people",
    r"indians",
    r"pakistanis",
    r"palestinians",
    r"israelis",
    r"indigenous people",
    r"natives",
)
# Each rule: its elements in order, ``Gap(n)`` for up to n arbitrary words between two of them;
# adjacent elements follow each other directly. A rule with ``unless_next`` does not match when
# that element starts right after it.
_R = tuple[RuleSpec, str | None]

_VIOLENCE: list[_R] = [
    # Only the writer's own intent counts: "this price will kill them" is business talk.
    ([_PERSONAL_INTENT, Gap(4), _VIOLENT_VERB, _PERSON], _NOT_VIOLENT_OBJECT),
    (["how", Gap(3), "get away with (?:murder|killing|it after killing)"], None),
    (["(?:hire|find|get|pay|need)", Gap(2), "(?:hitman|hit man|assassin|contract killer)s?"], None),
    (
        [
            "(?:shoot up|bomb|blow up|set fire to|burn down|attack) (?:a |the |my |our |this |that )?"
            "(?:school|church|mosque|synagogue|temple|mall|concert|stadium|hospital|airport|train station|"
            "subway|crowd|parade|kindergarten|daycare)"
        ],
        None,
    ),
    (
        [
            "(?:plan|planning|carry out|commit|do|doing|organi[sz]e)",
            Gap(1),
            "(?:a |an )?(?:mass shooting|school shooting|massacre|terror(?:ist)? attack|stabbing spree"
            "|killing spree)",
        ],
        None,
    ),
]

_WEAPONS: list[_R] = [
    ([_INTENT, Gap(4), _MAKE, Gap(3), _WEAPON], None),
    (["bomb[- ]?making"], None),
    (["(?:convert|modify)", Gap(4), "(?:to|into) (?:full[- ]?auto|fully automatic|automatic)"], None),
    ([_WEAPON, "(?:recipe|blueprints?|schematics?|instructions)"], None),
    # Buying a gun is legal in many places: only untraceable guns and explosives count.
    (
        [
            _any(_INTENT, "where"),
            Gap(4),
            "(?:buy|get|obtain|acquire|order)",
            Gap(2),
            "(?:(?:ghost|untraceable|unregistered|unserialized) guns?"
            "|explosives|grenades|detonators|c-?4|semtex|tnt)",
        ],
        None,
    ),
    (
        ["3d[- ]?print\\w*", Gap(2), "(?:guns?|firearms?|pistols?|rifles?|lowers?|receivers?|auto ?sears?)"],
        None,
    ),
    (["guns? without (?:a )?(?:background check|license|licence|serial numbers?)"], None),
]

_SELF_HARM: list[_R] = [
    (["(?:kill|hang|shoot|poison|drown|starve|suffocate) (?:myself|my ?self)"], None),
    ([_INTENT, Gap(3), "(?:hurt|harm|cut|burn|kill|hang|end) (?:myself|my ?self|my (?:own )?life)"], None),
    (
        ["(?:commit(?:ting)?|attempt(?:ing)?|thinking (?:about|of)|consider(?:ing)?|plan(?:ning)?) suicide"],
        None,
    ),
    (["suicide (?:methods?|plans?|notes?|pacts?|kits?|bags?|tips)"], None),
    (
        [
            "(?:how|ways?|best way|easiest way|quickest way|painless(?:ly)?)",
            Gap(4),
            "(?:die|commit suicide|kill (?:myself|yourself|oneself)|end (?:my|your|one'?s) (?:own )?life)",
        ],
        None,
    ),
    (["end(?:ing)? (?:my|it) (?:own )?(?:life|all)"], None),
    (["i (?:want|wanna|wish i could|am going|'?m going|'?m gonna|am gonna) (?:to )?die"], None),
    (["(?:lethal|fatal|deadly) (?:dose|amount|overdose)s?"], None),
    (
        ["how (?:many|much)", Gap(5), "(?:to|would|will|does it take to|until i) (?:die|overdose|od|kill)"],
        None,
    ),
    (["overdos(?:e|ing) on purpose"], None),
    (["(?:kys|kms)"], None),
    (["(?:you should|go|just) kill yourself"], None),
    (["self[- ]?harm(?:ing)? (?:tips|methods|ideas|techniques|tricks)"], None),
    (["slit(?:ting)? (?:my|your|his|her|their) (?:wrists?|throat)"], None),
]

_SEXUAL_MINORS: list[_R] = [
    ([_SEXUAL, Gap(6), _MINOR], None),
    ([_MINOR, Gap(6), _SEXUAL], None),
    (
        [
            "(?:child porn\\w*|csam|csem|lolicon|shotacon|jailbait"
            "|pedo(?:phile|philia)?s?|paedo(?:phile|philia)?s?)"
        ],
        None,
    ),
]

_ILLEGAL_DRUGS: list[_R] = [
    ([_DRUG_MAKE, Gap(3), _DRUG], None),
    ([_DRUG, "(?:lab|labs|recipe|synthesis|precursors?|production|cook)"], None),
    (["(?:cook|make|rock up) crack"], None),
    (["(?:where|how)", Gap(4), "(?:buy|get|score|order|source|find)", Gap(3), _DRUG], None),
    (["(?:sell|selling|deal|dealing|smuggle|smuggling|traffic|trafficking)", Gap(2), _DRUG], None),
    (["precursors? (?:for|of|to make)"], None),
]

_MALWARE: list[_R] = [
    ([_MALWARE_MAKE, Gap(4), _MALWARE_THING], None),
    # A virus only with verbs of writing one: "I have a virus" is a cold.
    (
        [
            "(?:write|code|program|create|make|build|develop) (?:me )?(?:an? |some |the )?"
            "(?:computer )?viruse?s?"
        ],
        "(?:scanners?|scans?|protection|checkers?|definitions?|tests?)",
    ),
    (
        [
            "(?:write|code|develop|build|create|make|give me) (?:me )?(?:an?|the|some|working|remote|"
            "zero-?day|0-?day) exploits?"
        ],
        None,
    ),
    ([_INTENT, Gap(3), "(?:hack|hacking|break) into", Gap(3), _HACK_TARGET], None),
    ([_INTENT, Gap(3), "(?:hack|hacking|break)", Gap(3), _HACK_TARGET], None),
    ([_INTENT, Gap(3), "ddos"], None),
    (["encrypt\\w*", Gap(6), "(?:demand|ask for|pay|paying)", Gap(2), "ransom"], None),
    (
        [
            "(?:steal|stealing|harvest|harvesting|grab|grabbing|dump|dumping|phish|phishing)",
            Gap(2),
            "(?:passwords?|credentials|logins?|credit card(?: numbers?)?s?|card numbers|bank details)",
        ],
        None,
    ),
    (["(?:bypass|evade|evading|avoid)", Gap(2), "(?:antivirus|anti-virus|edr|windows defender)"], None),
]

_HATE: list[_R] = [
    (
        [
            "(?:kill|exterminate|gas|eradicate|wipe out|get rid of|purge|lynch|genocide|cleanse|eliminate"
            "|shoot|hang|burn)",
            "(?:all (?:of )?)?(?:the |those |these )?" + _GROUP,
        ],
        None,
    ),
    (
        [
            _GROUP,
            "(?:should|must|need to|needs to|deserve to|ought to|have to|will) (?:all )?"
            "(?:die|be killed|be exterminated|be gassed|be shot|be hanged|be wiped out|be eradicated|burn|"
            "be sterili[sz]ed|rot|not exist)",
        ],
        None,
    ),
    (
        [
            _GROUP,
            "(?:are|is)",
            Gap(2),
            "(?:subhuman|sub-human|vermin|animals|parasites|cockroaches|rats|apes|monkeys|pigs|savages|"
            "a disease|a plague|a cancer|inferior|filth|scum|not human|untermenschen|genetically inferior)",
        ],
        None,
    ),
    (["(?:heil hitler|sieg heil|white power|race war now)"], None),
    (["death to (?:all )?(?:the )?", _GROUP], None),
]

_RULES: tuple[tuple[RefusalCode, list[_R]], ...] = (
    (RefusalCode.SEXUAL_MINORS, _SEXUAL_MINORS),
    (RefusalCode.WEAPONS, _WEAPONS),
    (RefusalCode.SELF_HARM, _SELF_HARM),
    (RefusalCode.VIOLENCE, _VIOLENCE),
    (RefusalCode.ILLEGAL_DRUGS, _ILLEGAL_DRUGS),
    (RefusalCode.MALWARE, _MALWARE),
    (RefusalCode.HATE, _HATE),
)

# Outputs are held to more: a model's answer that says how to build a weapon or hurt someone is
# refused even without the asking or intending words the input rules need ("First, build a...").
_OUTPUT_ONLY: dict[RefusalCode, list[_R]] = {
    RefusalCode.WEAPONS: [([_MAKE, Gap(3), _WEAPON], None)],
    RefusalCode.VIOLENCE: [([_VIOLENT_VERB, _PERSON], _NOT_VIOLENT_OBJECT)],
}

_VOCABULARY = _Vocabulary()
_Compiled = list[tuple[RefusalCode, tuple[_Rule, ...]]]


def _compile(rules: Iterable[tuple[RefusalCode, Sequence[_R]]]) -> _Compiled:
    return [
        (code, tuple(_VOCABULARY.rule(spec, unless_next=unless) for spec, unless in specs))
        for code, specs in rules
    ]


# Compiled once per process: the expansion of every element into the trie takes a few milliseconds.
_INPUT_RULES = _compile(_RULES)
_OUTPUT_RULES = _compile((code, [*specs, *_OUTPUT_ONLY.get(code, [])]) for code, specs in _RULES)


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
        scans: list[tuple[_Hits, dict[int, dict[int, list[int]]]]] = [
            (_VOCABULARY.scan(words), {}) for words in _readings(text)
        ]
        for code, rules in self._output_rules if output else self._rules:
            if any(_matches(rule, hits, index) for hits, index in scans for rule in rules):
                return code
        return None

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
    "RefusalCode",
    "SafetyPolicy",
    "normalise",
    "views",
]
