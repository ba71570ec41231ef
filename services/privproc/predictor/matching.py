r"""The safety policy's word-level matcher: rules compiled to codes and automata, matched with bit masks.

What it is: :class:`Vocabulary` expands the elements of the rules and compiles each rule
(:class:`Rule`); :class:`Codebook` gives the rules' words their codes and turns every element
into automata over classes of codes; :class:`Scan` matches compiled rules over one reading of
a text (:class:`~privproc.predictor.readings.Readings`). It holds no rules: those are tables in
:mod:`privproc.predictor.rules`, compiled by :mod:`privproc.predictor.policy`.

How it works, and why that way (screening must be linear in the text, whatever the text):

Rules are sequences of *elements* (finite sets of phrases) with bounded gaps of arbitrary words
between them. Each element is written as a small regular expression (literals, ``(?:a|b)``,
``[abc]``, ``?``, and ``\w*`` at the end of a word) that is expanded once, at import, into its
phrases.

Screening reads every word through a dictionary once, in C (``map`` over a list, never a
Python step per word): each word of the rules gets a two-byte code (words that no rule tells
apart share one), every other word the filler code. Where a class of codes occurs in a
reading is then one byte per word of an integer, made for eight classes at once (a bit each)
by ``bytes.translate`` and ``int.from_bytes``; one class is then a shift and an AND.
Each element is a small automaton over such classes (its phrases as a minimal DAG), run over
every position at once with shifts, ANDs and ORs of those integers; a gap of up to n words is a
few shifted ORs; a rule matches when the positions after its last element are not empty. The
work is a few C-level passes over the text and a bounded number of whole-integer operations per
rule: linear, with nothing tried word by word and nothing to backtrack. And a rule whose
elements cannot all occur (the first or last words of one of them are missing from every
reading) is not looked at: for almost every text, that is every rule, and its words are
never even coded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import reduce
from itertools import compress, repeat
from operator import or_

from privproc.predictor.readings import words_of

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
        words = tuple(words_of(string))
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
class Rule:
    elements: tuple[int, ...]
    gaps: tuple[int, ...]  # gaps[k]: words allowed before elements[k] (gaps[0] unused)
    unless_next: int | None  # an element that must not start right after the match
    needs: int  # the elements, as bits of an integer (bit e for element e)
    reads: int  # the elements and the unless_next one, as bits


class Vocabulary:
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

    def rule(self, spec: RuleSpec, *, unless_next: str | None = None) -> Rule:
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
        return Rule(tuple(elements), tuple(gaps), unless, needs, reads)


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


class Codebook:
    """The codes of the rules' words, and every element as automata over classes of codes.

    Two words share a code when no rule can tell them apart: in the trie of all phrases, they
    lead from the same nodes to identical subtries ("wife" and "husband"). A word matching a
    prefix ("pornography", for "porn\\w*") that no phrase spells out gets the prefix's code.
    """

    def __init__(self, vocabulary: Vocabulary) -> None:
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
        self.codes = {word: two_bytes(code) for word, code in self.word_codes.items()}
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


def two_bytes(code: int) -> bytes:
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


class Scan:
    """One reading as codes, and the positions where things occur in it, as bits of integers.

    Position ``i`` (0 for the first word; one more than the last word for the end) is the
    lowest bit of byte ``n - i`` of every mask (:data:`_LANE` bits a position), for ``n``
    words: the next position is one byte to the right. A byte a position is what
    ``bytes.translate`` and ``int.from_bytes`` make in one C-level pass each, for eight
    classes at once (one bit each).
    """

    __slots__ = ("all", "book", "firsts", "groups", "low", "masks", "page", "pages", "present")

    def __init__(self, book: Codebook, codes: bytes, present: set[int]) -> None:
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

    def matches(self, rule: Rule) -> bool:
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


__all__ = ["Codebook", "Gap", "Rule", "RuleSpec", "Scan", "Vocabulary", "two_bytes"]
