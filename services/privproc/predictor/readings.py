"""How the safety policy reads a text: normalisation and the de-obfuscated readings.

What it is: :func:`normalise` (Unicode NFKC, no accents or invisible format characters,
case-folded, single spaces); :func:`views`, the normalised text with harmless compounds
("bath bomb") replaced, with its spaced-out runs joined up ("k i l l") and with digits and
``@``/``$`` inside words read as letters ("b0mb"); :class:`Readings`, the words of those views
as the matcher (:mod:`privproc.predictor.matching`) codes them; and :func:`words_of`, which
splits a view into words the way rule phrases are split too.

Why it is a module of its own: reading a text depends on the text alone, not on any rule; the
matcher and the policy (:mod:`privproc.predictor.policy`, which says why screening must be
linear) use it, never the other way round. Every reading is made by C-level passes over the
text, and a reading that cannot differ from another is not made.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from itertools import chain, compress, repeat
from operator import and_, ge, mul, ne

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
_FILLER = b"\x00\x00"  # the code of every word no rule mentions (code 0)

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

    The reference for :class:`Readings`, which makes the same readings without building the
    leetspeak ones word by word.
    """
    base = _benign(normalise(text))
    joined, split = _spaced(base)
    readings = [words_of(base)]
    if joined != base:
        readings.append(words_of(joined))
        if split != joined:
            readings.append(words_of(split))
    if _has_leet(joined):
        source = readings[1] if joined != base else readings[0]
        for table in (_LEET_I, _LEET_L):
            leet = _deleet_words(source, table)
            if leet not in readings:
                readings.append(leet)
    return readings


def words_of(view: str) -> list[str]:
    """A view as the words the vocabulary is compared with: punctuation and hyphens separate words.

    Rule phrases are split the same way ("i'll" is "i ll", "co-worker" is "co worker").
    """
    # "make sure" is never making anything (the only exception any make-verb needs). Searched
    # for by a regular expression: it skips to each "m", where a substring search can stall on
    # a text made of the letters of "make sure".
    if _MAKE_SURE.search(view):
        view = view.replace("make sure", "makesure")
    return view.translate(_SEPARATORS).split()


class Readings:
    """The readings of one text (those of :func:`_readings`), made with C-level primitives.

    The word lists of the normalised text and of its spaced-out runs joined up are split once
    each; a leetspeak reading is kept as the few distinct words it reads differently, and is
    only turned into codes, never into a list of words. :attr:`distinct` holds every word of
    every reading; :attr:`sets` the words of each.
    """

    __slots__ = ("distinct", "leet", "lists", "sets", "source", "source_set")

    def __init__(self, text: str) -> None:
        normal = normalise(text)
        words = words_of(normal)
        distinct = set(words)
        # Harmless compounds ("bath bomb") are replaced by a word, which changes the words: that is
        # done only when the words say there can be one.
        base = normal
        if ("gun" in normal or "bomb" in normal) and _compound_words(distinct, normal):
            base = _benign(normal)
            if base != normal:
                words = words_of(base)
                distinct = set(words)
        self.lists = [words]
        self.sets = [distinct]
        # A run's second character is a word of one character: without one, there is no run.
        joined = split = base
        if min(map(len, distinct), default=2) == 1:
            # Several different spaceable characters alone as words: a run is likely.
            joined, split = _spaced(base, likely=len(distinct & _SINGLES) >= _LIKELY_RUN)
        if joined != base:
            self.lists.append(words_of(joined))
            self.sets.append(set(self.lists[1]))
            if split != joined:
                self.lists.append(words_of(split))
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


__all__ = ["Readings", "normalise", "views", "words_of"]
