"""Extractive summaries: which messages carry a chat's information, grouped by topic, who said what.

Pure and deterministic: no model, no I/O. The predictor's embedder may add
one vector per message (a better sense of which messages share a topic);
without vectors, topics come from shared words alone.

1. **Information.** Each message is scored for what a reader needs: figures
   and amounts, dates and times, decisions ("let's", "agreed", "final",
   "booked"), commitments ("I'll", "we'll"), names of places and things, and
   answers to a question just asked. Questions without a figure, and
   chatter ("lol", "ok", "thanks"), score low.
2. **Topics.** Messages are clustered in time order: each joins the most
   similar recent topic (cosine of word weights, and of the vectors when
   given) or starts one.
3. **Coverage.** Points are picked by maximal marginal relevance: the
   highest score, less its similarity to the points already picked; one
   point per topic while topics with something to say are left (a topic
   already covered costs a candidate :data:`COVERED_TOPIC_PENALTY`), never
   two that are alike. Within
   a topic a later message scores a little higher: a decision revises the
   proposals before it (a budget cut in steps ends at the figure agreed).
4. **Layout.** Points are grouped by topic (topics in order of their
   first message), then by time, each as ``Sender: text``. An answer too
   short to stand alone ("Monday 2 March") is shown after the question it
   answers: ``Priya: When can the builders start? - Sam: Monday 2 March``.

Nothing is invented: every word of a point is a message's own (a long
message is cut at a word boundary and marked with "..."), and every name is
a sender's. The work is linear in the number of messages: a message is
compared with a bounded number of recent topics, and picking compares each
candidate with at most ``max_points`` points.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from privproc.errors import BadRequestError

#: A point longer than this is cut at a word boundary.
MAX_POINT_CHARS = 240
#: A message is compared with at most this many recent topics (bounds the work on long chats).
RECENT_TOPICS = 32
#: Messages at least this similar share a topic.
TOPIC_SIMILARITY = 0.34
#: A candidate at least this similar to a picked point is not picked ("no two alike").
DUPLICATE_SIMILARITY = 0.6
#: Weight of information against similarity to the points already picked (maximal marginal relevance).
RELEVANCE_WEIGHT = 0.7
#: Taken off a candidate whose topic has a point already: a new topic goes first unless it says little.
COVERED_TOPIC_PENALTY = 0.2
#: An answer of fewer words than this is shown after the question it answers.
SHORT_ANSWER_WORDS = 9
_ELLIPSIS = "..."
#: Similarity of two messages, by index.
_Similarity = Callable[[int, int], float]
_ANSWER_SEPARATOR = " - "

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?")
_AMOUNT = re.compile(
    r"[£€$¥]\s?\d|\b\d+(?:[.,]\d+)?\s?(?:k|%|percent|euros?|pounds?|quid|dollars?|eur|gbp|usd)\b"
    r"|\b\d{1,3}(?:,\d{3})+\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d")
_TIME = re.compile(r"\b\d{1,2}(?::\d{2})?\s?(?:am|pm)\b|\b\d{1,2}:\d{2}\b", re.IGNORECASE)
_DATE = re.compile(
    r"\b(?:mon|tues?|wed(?:nes)?|thu(?:rs)?|fri|sat(?:ur)?|sun)(?:day)?s?\b"
    r"|\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b"
    r"|\b\d{1,2}(?:st|nd|rd|th)\b|\b(?:today|tonight|tomorrow|next week|this week|weekend)\b",
    re.IGNORECASE,
)
_DECISION = re.compile(
    r"\b(?:let['\u2019]?s|agreed|decision|decided|final|confirmed|booked|settled|deal|instead"
    r"|it is|it['\u2019]s settled|go with|we['\u2019]re going|accepted|moved?|cut|drop(?:ped)?)\b",
    re.IGNORECASE,
)
_COMMITMENT = re.compile(
    r"\b(?:i['\u2019]ll|i will|we['\u2019]ll|we will|i can|i['\u2019]m bringing|will do|on it)\b",
    re.IGNORECASE,
)
_CHATTER = re.compile(
    r"^(?:(?:lol|lmao|haha+|ha|ok(?:ay)?|k|yes|yep|yeah|yay|no|nope|sure|thanks|thank you|thx|ty|cool"
    r"|nice|great|perfect|done|fine|noted|same|me too|agreed|deal|sounds good|good|wow|omg|brilliant"
    r"|amazing|legend|bye|hi|hello|morning|see you)\b[\s.!?,]*)+$",
    re.IGNORECASE,
)
_STOPWORD_TEXT = (
    "the and for are but not you your with this that have has had was were will would can could "
    "should what when where which who how why all any our out get got just about them they their "
    "there then than too very its it's i'm i'll we'll let's yes yeah okay also from into over "
    "some been being does did doing done one two lol haha"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class Point:
    """One line of an extractive summary: the messages it shows (indexes, in order) and its text."""

    indexes: tuple[int, ...]
    text: str


def points_for(count: int, maximum: int) -> int:
    """How many points a chat of ``count`` messages gets: a third of them, at least 3, at most ``maximum``."""
    return max(1, min(maximum, max(3, math.ceil(count / 3))))


def summarise(
    messages: Sequence[tuple[str, str]],
    *,
    max_points: int,
    vectors: Sequence[Sequence[float]] | None = None,
) -> list[Point]:
    """The points of ``messages`` (``(sender, text)`` pairs, one line each), grouped by topic then time.

    ``vectors``, if given, holds one embedding per message. At most
    ``max_points`` points; fewer when the chat has fewer messages worth one.
    """
    if max_points < 1:
        raise BadRequestError("max_points must be positive")
    if vectors is not None and len(vectors) != len(messages):
        raise BadRequestError("one vector per message")
    texts = [text for _, text in messages]
    if not texts:
        return []
    bags = _bags(texts)
    units = [_unit(vector) for vector in vectors] if vectors is not None else None

    def similarity(a: int, b: int) -> float:
        lexical = _cosine(bags[a], bags[b])
        if units is None:
            return lexical
        return 0.5 * lexical + 0.5 * max(0.0, _dot(units[a], units[b]))

    topics = _topics(len(texts), similarity)
    scores = _scores(texts, topics)
    picked = _pick(scores, topics, similarity, max_points)
    first_of_topic: dict[int, int] = {}
    for index, topic in enumerate(topics):
        first_of_topic.setdefault(topic, index)
    ordered = sorted(picked, key=lambda index: (first_of_topic[topics[index]], index))
    return [_point(messages, index) for index in ordered]


def render(points: Sequence[Point]) -> str:
    """The points as ``- Sender: text`` lines."""
    return "\n".join(f"- {point.text}" for point in points)


# --- information -----------------------------------------------------------------------------


def information(text: str) -> float:
    """How much a reader would miss without this message (a heuristic score; higher is more)."""
    words = _WORD.findall(text)
    if not words or _CHATTER.match(text):
        return -3.0
    score = 0.0
    amount = bool(_AMOUNT.search(text))
    score += 2.0 if amount else 1.5 if _NUMBER.search(text) else 0.0
    score += 1.5 if _TIME.search(text) else 0.0
    score += 1.5 if _DATE.search(text) else 0.0
    score += 2.0 if _DECISION.search(text) else 0.0
    score += 1.0 if _COMMITMENT.search(text) else 0.0
    score += 0.5 * min(_names(text), 2)
    content = sum(1 for word in words if len(word) > 3 and word.casefold() not in _STOPWORDS)
    score += 0.25 * min(content, 8)
    if len(words) < 3 and not _NUMBER.search(text):
        score -= 1.5
    if text.rstrip().endswith("?") and not _NUMBER.search(text):
        score -= 1.5  # a question: its answer is the information
    return score


def _names(text: str) -> int:
    """Capitalised words not opening a sentence: names of people, places and things."""
    count = 0
    previous = "."
    for match in re.finditer(r"\S+", text):
        token = match.group()
        word = token.strip("\"'()[]{}\u201c\u201d\u2018\u2019")
        if word[:1].isupper() and previous[-1:] not in ".!?:" and word not in {"I", "I'll", "I'm", "I've"}:
            count += 1
        previous = token
    return count


def _is_question(text: str) -> bool:
    return text.rstrip().endswith("?")


def _answers(texts: Sequence[str], index: int) -> int | None:
    """The question (within the two messages before) that message ``index`` answers, if any."""
    if _is_question(texts[index]):
        return None
    for before in (index - 1, index - 2):
        if before >= 0 and _is_question(texts[before]):
            return before
    return None


def _scores(texts: Sequence[str], topics: Sequence[int]) -> list[float]:
    scores = [information(text) for text in texts]
    for index in range(len(texts)):
        if _answers(texts, index) is not None and scores[index] > 0:
            scores[index] += 1.0
    # Within a topic, later messages revise earlier ones: up to +1 for the last.
    members: dict[int, list[int]] = {}
    for index, topic in enumerate(topics):
        members.setdefault(topic, []).append(index)
    for group in members.values():
        if len(group) > 1:
            for rank, index in enumerate(group):
                scores[index] += rank / (len(group) - 1)
    return scores


# --- similarity and topics ---------------------------------------------------------------


def _stem(word: str) -> str:
    word = word.casefold().replace("\u2019", "'")
    for suffix in ("'s", "ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _bags(texts: Sequence[str]) -> list[dict[str, float]]:
    """Per text, its terms (stems, and numbers as written) weighted by inverse document frequency."""
    terms = [
        Counter(
            _stem(word)
            for word in _WORD.findall(text)
            if (len(word) >= 3 or word[:1].isdigit()) and word.casefold() not in _STOPWORDS
        )
        for text in texts
    ]
    frequency: Counter[str] = Counter()
    for bag in terms:
        frequency.update(bag.keys())
    total = len(texts)
    return [
        {term: count * math.log(1 + total / frequency[term]) for term, count in bag.items()} for bag in terms
    ]


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if not a or not b:
        return 0.0
    if len(a) > len(b):
        a, b = b, a
    dot = math.fsum(weight * b[term] for term, weight in a.items() if term in b)
    if dot == 0.0:
        return 0.0
    norm = math.sqrt(math.fsum(w * w for w in a.values())) * math.sqrt(math.fsum(w * w for w in b.values()))
    return dot / norm


def _unit(vector: Sequence[float]) -> list[float]:
    values = [float(x) if math.isfinite(x) else 0.0 for x in vector]
    norm = math.sqrt(math.fsum(x * x for x in values))
    return [x / norm for x in values] if norm > 0 else values


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=False))


def _topics(count: int, similarity: _Similarity) -> list[int]:
    """A topic per message: the most similar of the recent topics' latest messages, or a new one."""
    topics: list[int] = []
    latest: dict[int, int] = {}  # topic -> its latest message, least recent first
    created = 0
    for index in range(count):
        best, best_similarity = -1, TOPIC_SIMILARITY
        for topic in itertools.islice(reversed(latest), RECENT_TOPICS):
            value = similarity(index, latest[topic])
            if value >= best_similarity:
                best, best_similarity = topic, value
        if best >= 0:
            topic = best
            del latest[topic]  # re-inserted below: the most recent
        else:
            topic, created = created, created + 1
        topics.append(topic)
        latest[topic] = index
    return topics


# --- picking -------------------------------------------------------------------------------


def _pick(scores: Sequence[float], topics: Sequence[int], similarity: _Similarity, limit: int) -> list[int]:
    """Maximal marginal relevance over messages worth a point; new topics first, never a near-duplicate."""
    candidates = [index for index, score in enumerate(scores) if score > 0]
    if not candidates:
        # Nothing informative: the longest message says most.
        candidates = [max(range(len(scores)), key=lambda index: (scores[index], index))]
    low, high = min(scores[i] for i in candidates), max(scores[i] for i in candidates)
    spread = high - low or 1.0
    relevance = {index: (scores[index] - low) / spread for index in candidates}
    picked: list[int] = []
    covered: set[int] = set()
    closest = dict.fromkeys(candidates, 0.0)  # similarity to the nearest picked point
    while len(picked) < limit:
        best, best_value = -1, -math.inf
        for index in closest:
            if closest[index] >= DUPLICATE_SIMILARITY:
                continue
            value = RELEVANCE_WEIGHT * relevance[index] - (1 - RELEVANCE_WEIGHT) * closest[index]
            if topics[index] in covered:
                value -= COVERED_TOPIC_PENALTY
            if value > best_value:
                best, best_value = index, value
        if best < 0:
            break
        picked.append(best)
        covered.add(topics[best])
        del closest[best]
        for index in closest:
            closest[index] = max(closest[index], similarity(index, best))
    return picked


# --- layout ---------------------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[: limit - len(_ELLIPSIS)]
    space = head.rfind(" ")
    return (head[:space] if space > 0 else head).rstrip() + _ELLIPSIS


def _point(messages: Sequence[tuple[str, str]], index: int) -> Point:
    texts = [text for _, text in messages]
    sender, text = messages[index]
    question = _answers(texts, index)
    if (
        question is not None
        and len(_WORD.findall(text)) < SHORT_ANSWER_WORDS
        and messages[question][0] != sender
    ):
        asker = messages[question][0]
        asked = _cut(texts[question], MAX_POINT_CHARS // 2)
        line = f"{asker}: {asked}{_ANSWER_SEPARATOR}{sender}: {_cut(text, MAX_POINT_CHARS // 2)}"
        return Point((question, index), line)
    return Point((index,), f"{sender}: {_cut(text, MAX_POINT_CHARS)}")


__all__ = ["MAX_POINT_CHARS", "Point", "information", "points_for", "render", "summarise"]
