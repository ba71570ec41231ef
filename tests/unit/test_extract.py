"""Extractive summaries (privproc.predictor.extract): what they pick, how they show it, and their bounds."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bench_summaries import load_set
from privproc.errors import BadRequestError
from privproc.predictor import extract

WORD = re.compile(r"[^\W_]+")


def _lines(chat_id: str) -> list[tuple[str, str]]:
    [chat] = [chat for chat in load_set() if chat.id == chat_id]
    return [(message.sender, message.text) for message in chat.messages]


def _summary(lines: Sequence[tuple[str, str]], **kw: object) -> str:
    points = extract.summarise(lines, max_points=extract.points_for(len(lines), 8), **kw)  # type: ignore[arg-type]
    return extract.render(points)


# --- what is picked -----------------------------------------------------------------------------


def test_the_renovation_chat_keeps_its_decisions() -> None:
    text = _summary(_lines("home-renovation"))
    # The budget as agreed (after 25k and 22k), the start date, the deposit, the colour.
    assert "Budget is 18k, final." in text
    assert "2 March" in text and "deposit of 2,000" in text and "sage green" in text
    # Chatter is left out.
    for idle in ("Takeaway month", "Sent", "can't wait lol", "Brilliant, thanks Tom"):
        assert f": {idle}\n" not in text + "\n"
    assert len(text.splitlines()) == 8


def test_key_fact_recall_on_the_evaluation_set_without_a_model() -> None:
    # Words alone (no embedder): the floor the predictor's summaries stand on.
    recalls = []
    for chat in load_set():
        lines = [(message.sender, message.text) for message in chat.messages]
        recalls.append(chat.recall(_summary(lines)))
    assert statistics.fmean(recalls) >= 0.7
    assert min(recalls) >= 0.3


def test_a_short_answer_is_shown_after_its_question() -> None:
    lines = [
        ("Priya", "Fine by me. When can the builders start?"),
        ("Sam", "Monday 2 March"),
        ("Tom", "lol"),
        ("Tom", "ok"),
    ]
    points = extract.summarise(lines, max_points=3)
    assert extract.render(points).splitlines()[0] == (
        "- Priya: Fine by me. When can the builders start? - Sam: Monday 2 March"
    )
    assert points[0].indexes == (0, 1)


def test_near_duplicates_are_shown_once() -> None:
    lines = [
        ("Ana", "The venue is booked for 14 May"),
        ("Bo", "The venue is booked for 14 May!"),
        ("Chen", "Flights must be booked by Friday"),
    ]
    points = extract.summarise(lines, max_points=3)
    shown = [index for point in points for index in point.indexes]
    assert sorted(shown) in ([0, 2], [1, 2])


def test_points_are_grouped_by_topic_then_time() -> None:
    lines = [
        ("Ana", "The venue costs 3,500 for the day"),
        ("Bo", "Catering is capped at 4,000"),
        ("Ana", "Hall B confirmed, booked for 10 October"),
        ("Bo", "More vegan options, I'll tell the caterer"),
    ]
    # Two topics (the vectors say which), alike but not duplicates within each.
    vectors = [[1, 0.3], [0.3, 1], [1, -0.3], [-0.3, 1]]
    points = extract.summarise(lines, max_points=4, vectors=vectors)
    order = [point.indexes for point in points]
    assert order == [(0,), (2,), (1,), (3,)]


def test_information_scores() -> None:
    assert extract.information("Budget is 18k, final.") > extract.information("Fine by me.")
    assert extract.information("They said Monday 2 March") > extract.information("When can they start?")
    assert extract.information("lol") < 0 and extract.information("ok!!") < 0
    assert extract.information("") < 0


def test_points_for_a_chat() -> None:
    assert [extract.points_for(n, 8) for n in (0, 1, 6, 10, 30, 60)] == [3, 3, 3, 4, 8, 8]
    assert extract.points_for(30, 2) == 2 and extract.points_for(30, 0) == 1


def test_bad_arguments() -> None:
    with pytest.raises(BadRequestError, match="positive"):
        extract.summarise([("a", "b")], max_points=0)
    with pytest.raises(BadRequestError, match="one vector per message"):
        extract.summarise([("a", "b")], max_points=1, vectors=[])
    assert extract.summarise([], max_points=3) == []


# --- properties: any chat ---------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
_CHAT = st.lists(st.tuples(st.text(max_size=20), _TEXT), max_size=60)


def _pieces(point: extract.Point, lines: Sequence[tuple[str, str]]) -> list[str]:
    """The point's text as the ``sender: text`` piece of each message it shows."""
    pieces = []
    rest = point.text
    for position, index in enumerate(point.indexes):
        sender, _ = lines[index]
        assert rest.startswith(f"{sender}: ")
        rest = rest[len(sender) + 2 :]
        if position + 1 < len(point.indexes):
            following = lines[point.indexes[position + 1]][0]
            cut = rest.rfind(f" - {following}: ")
            pieces.append(rest[:cut])
            rest = rest[cut + 3 :]
        else:
            pieces.append(rest)
    return pieces


@settings(max_examples=150, deadline=None)
@given(_CHAT, st.integers(min_value=1, max_value=10), st.booleans())
def test_any_chat_gives_bounded_points_from_its_own_messages(
    lines: list[tuple[str, str]], max_points: int, with_vectors: bool
) -> None:
    vectors = [[len(text) % 7, len(sender), 0.0] for sender, text in lines] if with_vectors else None
    points = extract.summarise(lines, max_points=max_points, vectors=vectors)
    assert len(points) <= max_points
    assert bool(points) == bool(lines)
    shown = [index for point in points for index in point.indexes]
    assert len(shown) == len(set(shown))  # no message twice
    for point in points:
        assert list(point.indexes) == sorted(point.indexes) and len(point.indexes) in (1, 2)
        for index, piece in zip(point.indexes, _pieces(point, lines), strict=True):
            text = lines[index][1]
            # The message as written, or its beginning cut at a word and marked.
            assert piece == text or (piece.endswith("...") and text.startswith(piece[:-3]))
            assert len(piece) <= extract.MAX_POINT_CHARS
    # Deterministic.
    assert extract.summarise(lines, max_points=max_points, vectors=vectors) == points


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Ana", "Bo"]), _TEXT), max_size=40))
def test_every_word_of_a_summary_is_from_the_chat(lines: list[tuple[str, str]]) -> None:
    words = {word for sender, text in lines for word in WORD.findall(f"{sender} {text}")}
    text = extract.render(extract.summarise(lines, max_points=5))
    # A word cut off by "..." is the beginning of one (a message with no space to cut at).
    for word in WORD.findall(text):
        assert word in words or any(known.startswith(word) for known in words)


def test_a_long_message_is_cut_at_a_word_boundary() -> None:
    [point] = extract.summarise([("Ana", "budget " * 100)], max_points=1)
    assert point.text.endswith("budget...") and len(point.text) <= len("Ana: ") + extract.MAX_POINT_CHARS
    [point] = extract.summarise([("Ana", "x" * 500)], max_points=1)
    assert point.text == "Ana: " + "x" * (extract.MAX_POINT_CHARS - 3) + "..."


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.floats(), min_size=2, max_size=2), max_size=20))
def test_any_vectors_are_survived(vectors: list[list[float]]) -> None:
    lines = [("Ana", f"message {index} about the 14th") for index in range(len(vectors))]
    points = extract.summarise(lines, max_points=4, vectors=vectors)
    assert 1 <= len(points) <= 4 if lines else points == []


def test_the_work_grows_linearly_with_the_chat() -> None:
    calls = 0

    def similarity(a: int, b: int) -> float:
        nonlocal calls
        calls += 1
        return 0.0  # every message its own topic: the most comparisons clustering can make

    for count in (100, 1000):
        calls = 0
        topics = extract._topics(count, similarity)
        assert len(set(topics)) == count and calls <= extract.RECENT_TOPICS * count
        calls = 0
        extract._pick([1.0] * count, topics, similarity, 8)
        assert calls <= 8 * count
    # And a long chat end to end, with every message alike in words.
    long = [("Ana", f"We agreed to meet on the {1 + index % 28}th at 7pm") for index in range(2000)]
    assert 0 < len(extract.summarise(long, max_points=8)) <= 8
