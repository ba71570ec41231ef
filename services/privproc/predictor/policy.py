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
at once with bit masks (see the matcher's notes below). Texts longer than
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
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import reduce
from itertools import chain, compress, repeat
from operator import and_, ge, mul, ne, or_
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

_QUOTES = {"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u2010": "-", "\u2011": "-"}
# The characters str.split() splits at (those for which str.isspace() holds; a unit test checks).
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
# Quotes and hyphens made plain, every kind of whitespace a space: one C-level pass.
_NORMAL = str.maketrans({**_QUOTES, **dict.fromkeys(_WHITESPACE, " ")})
_NORMAL_CHARS = {**_QUOTES, **dict.fromkeys(_WHITESPACE.replace(" ", ""), " ")}
_NORMAL_OTHER = re.compile("[" + re.escape("".join(_NORMAL_CHARS)) + "]")
_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
_NOT_ASCII = re.compile(r"[^\x00-\x7f]")
_FEW = 8  # distinct characters handled one pass each
# Letters that can be spaced out, and what spaces them: "k i l l", "k.i.l.l", "b-o-m-b". Only ASCII
# letters, digits, "@" and "$" are joined: every word of every rule is ASCII, so a joined run of
# other letters could match nothing.
_SPACEABLE = "abcdefghijklmnopqrstuvwxyz0123456789@$"
_SPACING_CHARS = " .-_*+~|/\\"
_L = "a-z0-9@$"
_S = r" .\-_*+~|/\\"
_NOT_GLUED = r"(?![^\W_]|[@$])"  # not followed by a character that continues a word ("_" does not)
# What may stand before a run: not a word character, "@" or "$". The ASCII ones as ranges (a
# search skips other characters quickly), every other character to be checked after it.
_BEFORE_RUN = r"[\x00-\x23\x25-\x2f\x3a-\x3f\x5b-\x5e\x60\x7b-\U0010ffff]"
# A run of three or more spaced-out single characters, with the character before it: each of
# them alone between spacing ("_" does not space the first one out: it glues), the last one
# not the start of a longer word. Spacing is matched possessively, and only the last character
# can be given back (when it starts a longer word, the one before it is followed by spacing):
# each character is read a bounded number of times, so the scan is linear.
_SPACED_RUN = re.compile(
    rf"({_BEFORE_RUN}[{_L}])(?<![\w@$][{_L}])([{_S}]++[{_L}][{_S}]++[{_L}](?:[{_S}]++[{_L}])*{_NOT_GLUED})"
)
# The same for a text that is all ASCII, with ASCII classes only (about twice as fast): there,
# no character before a run can be a word character, and one that continues a word is a letter,
# digit, "@" or "$".
_SPACED_RUN_ASCII = re.compile(
    r"([\x00-\x23\x25-\x2f\x3a-\x3f\x5b-\x5e\x60\x7b-\x7f]"
    rf"[{_L}])([{_S}]++[{_L}][{_S}]++[{_L}](?:[{_S}]++[{_L}])*(?![A-Za-z0-9@$]))"
)
# For a quick test that a text has no run: spaceable characters as "a", spacing as " ".
_SHAPE = str.maketrans({**dict.fromkeys(_SPACEABLE, "a"), **dict.fromkeys(_SPACING_CHARS, " ")})
# In that shape: three characters alone, the first not after a letter, the last not before one.
_RUN_HINT = re.compile(r"a a a(?![^\W_])(?<!\wa a a)")
_NO_SPACING = str.maketrans(dict.fromkeys(_SPACING_CHARS))
_SINGLES = frozenset(_SPACEABLE)  # the words of one spaceable character
_LIKELY_RUN = 5  # how many different ones make a run likely ("a", "i" and a few others do not)
_GLUED = re.compile(r"[^\W_]|[@$]")  # a character that continues a word ("_" spaces letters out)
_RUN = re.compile(r"(?:[^\W_]|[@$])+")  # a word as the matcher splits them: "_" separates
_LEET_CHARS = "0123456789@$"
_LEET_READ = "013457@$"  # the characters the leetspeak tables read as letters
_LETTER = re.compile(r"[a-z]")
_LEET_I = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_L = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# Punctuation that is not part of a word (trimmed from words; "@" and "$" are leetspeak letters).
_EDGE = "'\".,;:!?()[]{}<>*~|/\\_+=&%^#`\u00ab\u00bb\u2039\u203a\u201c\u201d\u2026"
_MAKE_SURE = re.compile("make sure")
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
_GUNS = frozenset(["gun", "guns"])
_BOMBS = frozenset(["bomb", "bombs"])
_JOINED_BOMBS = frozenset(before + bomb for before in _BOMB_BEFORE for bomb in _BOMBS)


_EDGES = "[" + re.escape(_EDGE) + "]*+"  # the punctuation str.strip(_EDGE) removes from a word


def _trie(entries: Iterable[tuple[str, str]]) -> str:
    """Alternatives (a literal start, then a pattern) as a trie over their literal starts.

    The engine then checks one character to pass over a whole group of them, where a plain
    alternation would try each in turn.
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    ends: list[str] = []
    for literal, tail in entries:
        if literal:
            groups.setdefault(literal[0], []).append((literal[1:], tail))
        else:
            ends.append(tail)
    branches = [re.escape(ch) + _trie(group) for ch, group in sorted(groups.items())] + ends
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


# Each compound as the words it spans, each word with a space before it and any punctuation
# around it (as ``text.split(" ")`` and ``str.strip(_EDGE)`` see it). At each word, the
# shortest compound starting there is taken, then the search goes on after it, as a walk over
# the words would: no two compounds start with the same word, and no word of one starts a
# longer one ("hot", "the" are in none). Punctuation is matched possessively (it is never a
# letter, hyphen or space): each word start costs a bounded, small step, and the pass is linear.
_NEXT = f"{_EDGES} {_EDGES}"  # from the end of one word to the start of the next
_COMPOUND = re.compile(
    f" {_EDGES}"
    + _trie(
        [
            ("photobomb", "[^ ]*+"),
            *((before, "-?bombs?") for before in _BOMB_BEFORE),  # "bathbomb", "bath-bombs"
            *((before, f"{_NEXT}-*bombs?") for before in _BOMB_BEFORE),
            *((before, f"{_NEXT}guns?") for before in _GUN_BEFORE),
            ("gun", f"s?{_NEXT}(?:{'|'.join(sorted(_GUN_AFTER))})"),
            ("hot", f"{_NEXT}glue{_NEXT}guns?"),
            ("the", f"{_NEXT}da{_NEXT}-*bombs?"),
        ]
    )
    + f"{_EDGES}(?![^ ])"
)


def normalise(text: str) -> str:
    """NFKC, no accents or invisible format characters, case-folded, single spaces."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        # Accents and zero-width / bidi characters are a cheap way to break a word: drop them.
        decomposed = unicodedata.normalize("NFD", text)
        # One category lookup per distinct character, then a C-level pass or a few.
        dropped = [ch for ch in _non_ascii(decomposed) if unicodedata.category(ch) in _DROPPED_CATEGORIES]
        if len(dropped) > _FEW:
            decomposed = decomposed.translate(dict.fromkeys(map(ord, dropped)))
        else:
            for ch in dropped:
                decomposed = decomposed.replace(ch, "")
        text = unicodedata.normalize("NFC", decomposed).casefold()
        if not text.isascii():
            # Mapping other characters through a table costs a dictionary lookup for each
            # character of a text that is not ASCII; these are rarely there.
            if _NORMAL_OTHER.search(text):
                text = _NORMAL_OTHER.sub(_normal_char, text)
            return _single_spaces(text)
    # What " ".join(text.split()) does, without making a string of every word.
    return _single_spaces(text.casefold().translate(_NORMAL))


def _single_spaces(text: str) -> str:
    while "  " in text:  # each pass halves every run of spaces
        text = text.replace("  ", " ")
    return text.strip(" ")


def _normal_char(match: re.Match[str]) -> str:
    return _NORMAL_CHARS[match.group()]


def _non_ascii(text: str) -> set[str]:
    """The distinct characters of ``text`` that are not ASCII."""
    # Found one by one, each then removed, in C: a text holds few distinct ones. Past a few,
    # the rest are collected in one pass over what is left.
    found: set[str] = set()
    position = 0
    while len(found) <= _FEW:
        match = _NOT_ASCII.search(text, position)
        if match is None:
            return found
        position = match.start()  # everything before is ASCII
        found.add(match.group())
        text = text.replace(match.group(), "")
    return found | set(text[position:])


def _benign(text: str) -> str:
    """``text`` with harmless gun and bomb compounds replaced by ``thing`` (word by word)."""
    if "gun" not in text and "bomb" not in text:
        return text
    # One C-level pass; the space in front lets a compound start the text.
    return _COMPOUND.sub(" thing", " " + text)[1:]


def _spaced(text: str, *, likely: bool = False) -> tuple[str, str]:
    """Runs of three or more spaced-out single characters joined up ("k i l l" -> "kill").

    Two readings: the runs joined, and the runs joined with a leading ``a`` or
    ``i`` kept as a word of its own ("make a b o m b" -> "make a bomb"). ``likely``
    says that runs are likely (skipping a quick test for none, which would not pay).
    """
    # Every run is three characters each alone between spacing or other punctuation: a text
    # without that once characters and spacing are reduced to "a" and " " has no run (most
    # texts; a few C-level passes, the search skipping to each "a a a").
    if not likely:
        shape = text.translate(_SHAPE)
        while "  " in shape:
            shape = shape.replace("  ", " ")
        if not _RUN_HINT.search(shape):
            return text, text
    # Split at each run: the texts between runs, and each run as the character before it with
    # its first character, and the rest. The space in front lets a run start the text.
    parts = (_SPACED_RUN_ASCII if text.isascii() else _SPACED_RUN).split(" " + text)
    if len(parts) == 1:
        return text, text
    between, heads, tails = parts[0::3], parts[1::3], parts[2::3]
    # The rest of each run's characters, without the spacing ("\n" is neither).
    rest = "\n".join(tails).translate(_NO_SPACING).split("\n")
    joined = "".join(chain.from_iterable(zip(between, heads, rest, strict=False))) + between[-1]
    # A run of four or more characters that starts with "a" or "i": that one on its own too.
    firsts = "".join(heads)[1::2]  # each head is two characters, the run's first the second
    if "a" not in firsts and "i" not in firsts:
        return joined[1:], joined[1:]
    apart = map(and_, map(str.endswith, heads, repeat(("a", "i"))), map(ge, map(len, rest), repeat(3)))
    spaces = map(mul, repeat(" "), apart)
    split = "".join(chain.from_iterable(zip(between, heads, spaces, rest, strict=False))) + between[-1]
    joined, split = joined[1:], split[1:]
    return joined, split


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
    listed = list(set(words))
    changed = _leet_changes(listed, "\n".join(listed), table)
    if not changed:
        return words
    return list(map(changed.get, words, words))


def _leet_changes(listed: list[str], together: str, table: dict[int, str]) -> dict[str, str]:
    """Each of the ``listed`` distinct words that ``table`` reads differently, and how it reads it.

    ``together`` is the words joined by newlines. A word is read through the table when it
    mixes letters with characters the table reads as letters ("b0mb", "k1ll"); words without
    letters ("14", "2026", "@") stay as they are.
    """
    # Every step is one C-level pass over the distinct words (a text repeats its words).
    read = together.translate(table)
    if read == together:
        return {}
    read_words = read.split("\n")
    differ = list(map(ne, listed, read_words))
    words = list(compress(listed, differ))
    reads = compress(read_words, differ)
    # Letters are cased characters, all lower case in a case-folded text: they change in upper().
    lettered = map(ne, words, map(str.upper, words))
    return dict(compress(zip(words, reads, strict=True), lettered))


def _readings(text: str) -> list[list[str]]:
    """The words of each of :func:`views`' readings, as the matcher reads them (distinct ones).

    The reference for :class:`_Readings`, which makes the same readings without building the
    leetspeak ones word by word.
    """
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
    # "make sure" is never making anything (the only exception any make-verb needs). Searched
    # for by a regular expression: it skips to each "m", where a substring search can stall on
    # a text made of the letters of "make sure".
    if _MAKE_SURE.search(view):
        view = view.replace("make sure", "makesure")
    return view.translate(_SEPARATORS).split()


class _Readings:
    """The readings of one text (those of :func:`_readings`), made with C-level primitives.

    The word lists of the normalised text and of its spaced-out runs joined up are split once
    each; a leetspeak reading is kept as the few distinct words it reads differently, and is
    only turned into codes, never into a list of words. :attr:`distinct` holds every word of
    every reading; :attr:`sets` the words of each.
    """

    __slots__ = ("distinct", "leet", "lists", "sets", "source", "source_set")

    def __init__(self, text: str) -> None:
        normal = normalise(text)
        words = _words(normal)
        distinct = set(words)
        # Harmless compounds ("bath bomb") are replaced by a word, which changes the words: that is
        # done only when the words say there can be one.
        base = normal
        if ("gun" in normal or "bomb" in normal) and _compound_words(distinct, normal):
            base = _benign(normal)
            if base != normal:
                words = _words(base)
                distinct = set(words)
        self.lists = [words]
        self.sets = [distinct]
        # A run's second character is a word of one character: without one, there is no run.
        joined = split = base
        if min(map(len, distinct), default=2) == 1:
            # Several different spaceable characters alone as words: a run is likely.
            joined, split = _spaced(base, likely=len(distinct & _SINGLES) >= _LIKELY_RUN)
        if joined != base:
            self.lists.append(_words(joined))
            self.sets.append(set(self.lists[1]))
            if split != joined:
                self.lists.append(_words(split))
                self.sets.append(set(self.lists[2]))
        # Leetspeak is read in the joined text: "b 0 m b" joins to "b0mb", read as "bomb".
        self.source = self.lists[1] if joined != base else self.lists[0]
        source = self.source_set = self.sets[1] if joined != base else self.sets[0]
        self.leet: list[dict[str, str]] = []
        leet_sets: list[set[str]] = []
        if any(ch in joined for ch in _LEET_READ):  # other digits read as themselves
            listed = list(source)
            together = "\n".join(listed)  # words never hold whitespace
            # The two tables differ only in "1": without one, the second reads like the first.
            for table in (_LEET_I, _LEET_L) if "1" in joined else (_LEET_I,):
                changes = _leet_changes(listed, together, table)
                if changes and changes not in self.leet:
                    self.leet.append(changes)
                    leet_sets.append(source.difference(changes).union(changes.values()))
        self.sets += leet_sets
        self.distinct = set().union(*self.sets)

    def codes(self, code_of: dict[str, bytes]) -> list[tuple[bytes, set[str]]]:
        """Each distinct reading as codes (two bytes a word: ``code_of``, else the filler; then the
        filler once more), with its words."""
        get = code_of.get
        found: dict[bytes, set[str]] = {}
        for words, distinct in zip(self.lists, self.sets, strict=False):
            if words is self.source and self.leet:
                for codes, read in self._source_codes(get).items():
                    found.setdefault(codes, read)
            else:
                found.setdefault(b"".join(map(get, words, repeat(_FILLER))) + _FILLER, distinct)
        return list(found.items())

    def _source_codes(self, get: Callable[[str, bytes], bytes]) -> dict[bytes, set[str]]:
        """The codes of the reading leetspeak is read in and of its leetspeak readings.

        One pass over the words for all of them: each distinct word's codes in every one of
        these readings, side by side, then every reading's codes taken out of the whole.
        """
        source = self.source_set
        distinct = list(source)
        columns = [map(get, distinct, repeat(_FILLER))]
        columns += [map(get, map(changes.get, distinct, distinct), repeat(_FILLER)) for changes in self.leet]
        side_by_side = dict(zip(distinct, map(b"".join, zip(*columns, strict=True)), strict=True))
        together = b"".join(map(side_by_side.__getitem__, self.source))
        width = 2 * len(columns)
        found: dict[bytes, set[str]] = {}
        for reading, words in enumerate([source, *self.sets[len(self.lists) :]]):
            codes = bytearray(2 * len(self.source))
            codes[0::2] = together[2 * reading :: width]
            codes[1::2] = together[2 * reading + 1 :: width]
            found.setdefault(bytes(codes) + _FILLER, words)
        return found


def _compound_words(distinct: set[str], text: str) -> bool:
    """Whether a text with these words can hold a compound :func:`_benign` replaces."""
    if not _GUNS.isdisjoint(distinct) and not (
        _GUN_BEFORE.isdisjoint(distinct) and _GUN_AFTER.isdisjoint(distinct)
    ):
        return True
    if "photobomb" in text or not _JOINED_BOMBS.isdisjoint(distinct):
        return True
    return not _BOMBS.isdisjoint(distinct) and not _BOMB_BEFORE.isdisjoint(distinct)


# --- the word-level matcher ----------------------------------------------------------
#
# Rules are sequences of *elements* (finite sets of phrases) with bounded gaps of arbitrary words
# between them. Each element is written as a small regular expression (literals, ``(?:a|b)``,
# ``[abc]``, ``?``, and ``\w*`` at the end of a word) that is expanded once, at import, into its
# phrases.
#
# Screening reads every word through a dictionary once, in C (``map`` over a list, never a
# Python step per word): each word of the rules gets a two-byte code (words that no rule tells
# apart share one), every other word the filler code. Where a class of codes occurs in a
# reading is then one byte per word of an integer, made for eight classes at once (a bit each)
# by ``bytes.translate`` and ``int.from_bytes``; one class is then a shift and an AND.
# Each element is a small automaton over such classes (its phrases as a minimal DAG), run over
# every position at once with shifts, ANDs and ORs of those integers; a gap of up to n words is a
# few shifted ORs; a rule matches when the positions after its last element are not empty. The
# work is a few C-level passes over the text and a bounded number of whole-integer operations per
# rule: linear, with nothing tried word by word and nothing to backtrack. And a rule whose
# elements cannot all occur (the first or last words of one of them are missing from every
# reading) is not looked at: for almost every text, that is every rule, and its words are
# never even coded.

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
    needs: int  # the elements, as bits of an integer (bit e for element e)
    reads: int  # the elements and the unless_next one, as bits


class _Vocabulary:
    """Every element of every rule: its phrases, and all of them in one trie of words."""

    def __init__(self) -> None:
        self.root = _Node()
        self.phrases: list[set[tuple[str, ...]]] = []  # per element
        self._ids: dict[str, int] = {}

    def element(self, pattern: str) -> int:
        known = self._ids.get(pattern)
        if known is not None:
            return known
        ident = len(self._ids)
        self._ids[pattern] = ident
        phrases = _phrases(pattern)
        self.phrases.append(phrases)
        for phrase in phrases:
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
        needs = sum(1 << element for element in set(elements))
        reads = needs | (0 if unless is None else 1 << unless)
        return _Rule(tuple(elements), tuple(gaps), unless, needs, reads)


_FILLER = b"\x00\x00"  # the code of every word no rule mentions (code 0)


@dataclass(frozen=True)
class _Automaton:
    """An element's phrases as a minimal DAG over classes of codes (node 0 is the start).

    Nodes are in topological order. ``edges[node]`` holds (next node, class) pairs; a
    node may have several edges whose classes share codes (it reads like an NFA).
    """

    ends: tuple[bool, ...]
    edges: tuple[tuple[tuple[int, int], ...], ...]
    first: frozenset[int]  # the codes a phrase can start with
    last: frozenset[int]  # the codes a phrase can end with
    prefixed: bool  # whether a class holds the code of a word prefix ("porn...")


class _PhraseNode:
    __slots__ = ("children", "end")

    def __init__(self) -> None:
        self.children: dict[str, _PhraseNode] = {}
        self.end = False


class _Codebook:
    """The codes of the rules' words, and every element as automata over classes of codes.

    Two words share a code when no rule can tell them apart: in the trie of all phrases, they
    lead from the same nodes to identical subtries ("wife" and "husband"). A word matching a
    prefix ("pornography", for "porn\\w*") that no phrase spells out gets the prefix's code.
    """

    def __init__(self, vocabulary: _Vocabulary) -> None:
        signatures, prefix_signatures = self._signatures(vocabulary.root)
        prefixes = tuple(sorted(prefix_signatures))
        if any(a != b and a.startswith(b) for a in prefixes for b in prefixes):
            raise ValueError("a word prefix starts with another one: a word would match both")
        numbers: dict[frozenset[tuple[int, int]], int] = {}
        self.word_codes = {
            word: numbers.setdefault(signatures[word], len(numbers) + 1) for word in sorted(signatures)
        }
        self.prefix_codes = {
            prefix: numbers.setdefault(prefix_signatures[prefix], len(numbers) + 1) for prefix in prefixes
        }
        if len(numbers) >= 1 << 16:
            raise ValueError("too many word codes for two bytes")
        self.prefixes = prefixes
        self.words = frozenset(self.word_codes)
        #: Every word of the rules and its code as the two bytes of a reading (low byte first).
        self.codes = {word: _two_bytes(code) for word, code in self.word_codes.items()}
        self.any_prefix = frozenset(self.prefix_codes.values())
        self.classes: list[frozenset[int]] = []
        self.class_ids: dict[frozenset[int], int] = {}
        #: Per class, per page (high byte) it has codes on: those low bytes.
        self.lows: list[dict[int, list[int]]] = []
        #: Per page: the table that reads that page as 1 and every other as 0.
        self.page_tables = [_table({page: 1}) for page in range((len(numbers) >> 8) + 1)]
        forward: list[_Automaton] = []
        backward: list[_Automaton] = []
        for phrases in vocabulary.phrases:
            forward.append(self._automaton(phrases))
            backward.append(self._automaton({phrase[::-1] for phrase in phrases}))
        self.forward = forward
        self.backward = backward
        # The classes with codes on a page, eight to a table: one pass reads where any of the eight
        # is, a bit each in the byte of every position; a class is then a shift and an AND.
        self.group_tables: list[bytes] = []
        self.group_pages: list[int] = []
        self.lanes: list[list[tuple[int, int]]] = [[] for _ in self.classes]  # per class: (group, bit)
        for page in range(len(self.page_tables)):
            on_page = [cls for cls, lows in enumerate(self.lows) if page in lows]
            for first in range(0, len(on_page), 8):
                bits: dict[int, int] = {}
                for bit, cls in enumerate(on_page[first : first + 8]):
                    self.lanes[cls].append((len(self.group_tables), bit))
                    for low in self.lows[cls][page]:
                        bits[low] = bits.get(low, 0) | 1 << bit
                self.group_tables.append(_table(bits))
                self.group_pages.append(page)
        # Per code: the elements (bits) a phrase of which can start, or end, with it.
        self.first_elements = [0] * (len(numbers) + 1)
        self.last_elements = [0] * (len(numbers) + 1)
        for element, automaton in enumerate(forward):
            for code in automaton.first:
                self.first_elements[code] |= 1 << element
            for code in automaton.last:
                self.last_elements[code] |= 1 << element
        self.prefixed_elements = sum(
            1 << element for element, automaton in enumerate(forward) if automaton.prefixed
        )
        self.prefix_first = reduce(or_, (self.first_elements[code] for code in self.any_prefix), 0)
        self.prefix_last = reduce(or_, (self.last_elements[code] for code in self.any_prefix), 0)

    @staticmethod
    def _signatures(
        root: _Node,
    ) -> tuple[dict[str, frozenset[tuple[int, int]]], dict[str, frozenset[tuple[int, int]]]]:
        """Per word and per prefix: the (node, subtrie) pairs it leads from and to in the trie."""
        shapes: dict[tuple[frozenset[int], frozenset[tuple[str, int]], frozenset[tuple[str, int]]], int] = {}
        words: dict[str, set[tuple[int, int]]] = {}
        prefixes: dict[str, set[tuple[int, int]]] = {}
        numbered = 0

        def shape(node: _Node) -> tuple[int, int]:
            """(this node's number, the number of its subtrie's shape), numbering its children."""
            nonlocal numbered
            here = numbered
            numbered += 1
            exact = frozenset((word, shape(child)[1]) for word, child in node.children.items())
            wild = frozenset((prefix, shape(child)[1]) for prefix, child in node.prefixes.items())
            for word, kind in exact:
                words.setdefault(word, set()).add((here, kind))
            for prefix, kind in wild:
                prefixes.setdefault(prefix, set()).add((here, kind))
            return here, shapes.setdefault((frozenset(node.ends), exact, wild), len(shapes))

        shape(root)
        for word in words:
            for prefix, prefix_pairs in prefixes.items():
                if word.startswith(prefix):
                    words[word] |= prefix_pairs
        return (
            {word: frozenset(pairs) for word, pairs in words.items()},
            {prefix: frozenset(pairs) for prefix, pairs in prefixes.items()},
        )

    def _token_codes(self, token: str) -> set[int]:
        if not token.endswith(_WILD):
            return {self.word_codes[token]}
        prefix = token[:-1]
        return {self.prefix_codes[prefix]} | {
            code for word, code in self.word_codes.items() if word.startswith(prefix)
        }

    def _class(self, codes: frozenset[int]) -> int:
        known = self.class_ids.get(codes)
        if known is None:
            known = self.class_ids[codes] = len(self.classes)
            self.classes.append(codes)
            pages: dict[int, list[int]] = {}
            for code in codes:
                pages.setdefault(code >> 8, []).append(code & 0xFF)
            self.lows.append(pages)
        return known

    def _automaton(self, phrases: Iterable[tuple[str, ...]]) -> _Automaton:
        trie = _PhraseNode()
        for phrase in phrases:
            node = trie
            for token in phrase:
                node = node.children.setdefault(token, _PhraseNode())
            node.end = True
        # Subtries of the same shape are one node; edges to the same node are one class.
        numbers: dict[tuple[bool, frozenset[tuple[int, frozenset[int]]]], int] = {}
        nodes: list[tuple[bool, frozenset[tuple[int, frozenset[int]]]]] = []

        def number(node: _PhraseNode) -> int:
            onward: dict[int, set[int]] = {}
            for token, child in node.children.items():
                onward.setdefault(number(child), set()).update(self._token_codes(token))
            key = (node.end, frozenset((target, frozenset(codes)) for target, codes in onward.items()))
            known = numbers.get(key)
            if known is None:
                known = numbers[key] = len(nodes)
                nodes.append(key)
            return known

        start = number(trie)  # numbered after every node below it: the highest number
        if nodes[start][0]:
            raise ValueError("an element matches no words")
        # Highest number first: every node before the nodes it leads to.
        ordered = [nodes[start - position] for position in range(start + 1)]
        ends = tuple(end for end, _ in ordered)
        edges = tuple(
            tuple(sorted((start - target, self._class(codes)) for target, codes in onward))
            for _, onward in ordered
        )
        none: frozenset[int] = frozenset()
        first = none.union(*(codes for _, codes in nodes[start][1]))
        last = none.union(*(codes for _, onward in nodes for target, codes in onward if nodes[target][0]))
        read = none.union(*(self.classes[cls] for onward in edges for _, cls in onward))
        return _Automaton(ends, edges, first, last, not self.any_prefix.isdisjoint(read))

    def possible(self, present: set[int], *, any_prefix: bool = False) -> int:
        """The elements (bits) that can start and end with ``present`` codes (and prefix codes)."""
        first = reduce(or_, map(self.first_elements.__getitem__, present), 0)
        last = reduce(or_, map(self.last_elements.__getitem__, present), 0)
        if any_prefix:
            first |= self.prefix_first
            last |= self.prefix_last
        return first & last

    def present(self, words: set[str], prefixed: dict[str, int] | None = None) -> set[int]:
        """The codes of the rules' words among ``words`` (and of those in ``prefixed``)."""
        codes = set(map(self.word_codes.__getitem__, words & self.words))
        if prefixed:
            codes.update(map(prefixed.__getitem__, words & prefixed.keys()))
        return codes

    def prefix_words(self, words: set[str]) -> dict[str, int]:
        """The ``words`` no phrase spells out that match a word prefix, with the prefix's code."""
        others = list(words - self.words)
        matching = compress(others, map(str.startswith, others, repeat(self.prefixes)))
        return {
            word: self.prefix_codes[next(p for p in self.prefixes if word.startswith(p))] for word in matching
        }


def _two_bytes(code: int) -> bytes:
    return bytes((code & 0xFF, code >> 8))


def _table(values: dict[int, int]) -> bytes:
    """A ``bytes.translate`` table reading each byte as its value in ``values``, every other as 0."""
    table = bytearray(256)
    for byte, value in values.items():
        table[byte] = value
    return bytes(table)


_LANE = 8  # bits per position in a mask: one byte, made by one bytes.translate


def _spread(positions: int, words: int) -> int:
    """``positions`` and each of the ``words`` positions after each of them (a gap)."""
    covered = 1  # shifts 0 .. covered - 1 are in
    while covered <= words:
        step = min(covered, words + 1 - covered)
        positions |= positions >> step * _LANE
        covered += step
    return positions


class _Scan:
    """One reading as codes, and the positions where things occur in it, as bits of integers.

    Position ``i`` (0 for the first word; one more than the last word for the end) is the
    lowest bit of byte ``n - i`` of every mask (:data:`_LANE` bits a position), for ``n``
    words: the next position is one byte to the right. A byte a position is what
    ``bytes.translate`` and ``int.from_bytes`` make in one C-level pass each, for eight
    classes at once (one bit each).
    """

    __slots__ = ("all", "book", "firsts", "groups", "low", "masks", "page", "pages", "present")

    def __init__(self, book: _Codebook, codes: bytes, present: set[int]) -> None:
        self.book = book
        self.low, self.page = codes[0::2], codes[1::2]
        self.all = int.from_bytes(b"\x01" * len(self.low), "big")
        self.present = present
        self.masks: dict[int, int] = {}  # per class
        self.groups: dict[int, int] = {}  # per group of classes: where each is (a bit each)
        self.pages: dict[int, int] = {}  # per page: where codes of that page are (all bits)
        self.firsts: dict[int, int] = {}  # per element: where its phrases end, from any position

    def _mask(self, cls: int) -> int:
        """Where a word of the class is (0 without reading the text when none of its codes is present)."""
        found = self.masks.get(cls)
        if found is None:
            found = 0
            if not self.book.classes[cls].isdisjoint(self.present):
                for group, bit in self.book.lanes[cls]:
                    found |= (self._group(group) >> bit) & self.all
            self.masks[cls] = found
        return found

    def _group(self, group: int) -> int:
        """Where each class of the group is, a bit each (low bytes read through its table, on its page)."""
        found = self.groups.get(group)
        if found is None:
            page = self.book.group_pages[group]
            on_page = self.pages.get(page)
            if on_page is None:
                on_page = int.from_bytes(self.page.translate(self.book.page_tables[page]), "big") * 0xFF
                self.pages[page] = on_page
            found = 0
            if on_page:
                found = int.from_bytes(self.low.translate(self.book.group_tables[group]), "big") & on_page
            self.groups[group] = found
        return found

    def ends(self, element: int, starts: int) -> int:
        """The positions right after a phrase of the element that starts at one of ``starts``."""
        automaton = self.book.forward[element]
        state = [0] * len(automaton.ends)
        state[0] = starts
        found = 0
        for node, edges in enumerate(automaton.edges):
            here = state[node]
            if not here:
                continue
            if automaton.ends[node]:
                found |= here
            for target, cls in edges:
                mask = self._mask(cls)
                if mask:
                    state[target] |= (here & mask) >> _LANE
        return found

    def starts(self, element: int) -> int:
        """The positions where a phrase of the element starts (its phrases read backwards)."""
        automaton = self.book.backward[element]
        state = [0] * len(automaton.ends)
        state[0] = self.all
        found = 0
        for node, edges in enumerate(automaton.edges):
            here = state[node]
            if not here:
                continue
            if automaton.ends[node]:
                found |= here
            for target, cls in edges:
                mask = self._mask(cls)
                if mask:
                    state[target] |= (here << _LANE) & mask
        return found

    def matches(self, rule: _Rule) -> bool:
        """Whether the rule's elements occur in order, each within its gap of the one before."""
        first = rule.elements[0]
        ends = self.firsts.get(first)
        if ends is None:
            ends = self.firsts[first] = self.ends(first, self.all)
        for element, gap in zip(rule.elements[1:], rule.gaps[1:], strict=True):
            if not ends:
                return False
            ends = self.ends(element, _spread(ends, gap))
        if ends and rule.unless_next is not None:
            ends &= ~self.starts(rule.unless_next)
        return ends != 0


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


# Compiled once per process: expanding the elements, coding their words and building their
# automata takes a fraction of a second at import.
_INPUT_RULES = _compile(_RULES)
_OUTPUT_RULES = _compile((code, [*specs, *_OUTPUT_ONLY.get(code, [])]) for code, specs in _RULES)
_BOOK = _Codebook(_VOCABULARY)


def _possible(rules: _Compiled, elements: int) -> _Compiled:
    """The rules whose every element is among ``elements`` (bits)."""
    missing = ~elements
    return [(code, tuple(rule for rule in found if not rule.needs & missing)) for code, found in rules]


def _first_match(readings: _Readings, rules: _Compiled) -> RefusalCode | None:
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
            code_of = {**code_of, **{word: _two_bytes(code) for word, code in prefixed.items()}}
            present |= set(prefixed.values())
        candidates = _possible(candidates, _BOOK.possible(present))
    if not any(found for _, found in candidates):
        return None
    scans = [_Scan(_BOOK, codes, _BOOK.present(words, prefixed)) for codes, words in readings.codes(code_of)]
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
        return _first_match(_Readings(text), self._output_rules if output else self._rules)

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
    "normalise",
    "views",
]
