"""What the device makes of a streamed answer (issue 15, item 2), and its one deadline (item 3).

The assembly of ``ProcessChunk`` frames into what is shown: text appended as it comes, padding
frames ignored, the final answer authoritative (a replacement when the shown text is not its
prefix, a withdrawal on a refusal), and fail closed on a stream without an answer. The CLI's
printing of it. The deadline: enforced locally, naming itself, and carried in the inner request.
"""

from __future__ import annotations

import asyncio
import io

import pytest

from privproc.cli.private import TextShown
from privproc.client.ohttp_client import Deadline, with_deadline
from privproc.client.private import StreamAssembler, StreamChunk
from privproc.errors import ConfigError, DeadlineExceededError, UpstreamError
from privproc.v1 import predictor_pb2
from privproc.wire import bhttp
from privproc.wire.session import TIMEOUT_HEADER, parse_timeout


def _text(text: str) -> predictor_pb2.ProcessChunk:
    return predictor_pb2.ProcessChunk(text=text)


def _answer(text: str = "", refusal: str = "") -> predictor_pb2.ProcessChunk:
    return predictor_pb2.ProcessChunk(
        response=predictor_pb2.ProcessResponse(text=text, refusal_reason=refusal, model_id="m")
    )


def _assemble(*frames: predictor_pb2.ProcessChunk) -> tuple[list[StreamChunk], StreamChunk]:
    assembler = StreamAssembler()
    shown = [c for f in frames if (c := assembler.add(f)) is not None]
    return shown, assembler.finish()


def test_text_is_shown_as_it_comes_and_the_answer_completes_it() -> None:
    shown, last = _assemble(_text("The budget"), _text(""), _text(" is 40k"), _answer("The budget is 40k."))
    assert [c.text for c in shown] == ["The budget", " is 40k"]  # the padding frame shows nothing
    assert not any(c.replace or c.final for c in shown)
    assert last.text == "." and not last.replace and last.final
    assert last.response is not None and last.response.text == "The budget is 40k."


def test_an_answer_that_does_not_extend_the_shown_text_replaces_it() -> None:
    _, last = _assemble(_text("The budget is 50k"), _answer("- ana: the budget is 40k"))
    assert last.replace and last.text == "- ana: the budget is 40k"


def test_a_refusal_withdraws_what_was_shown() -> None:
    _, last = _assemble(_text("Some text"), _answer(refusal="self_harm"))
    assert last.replace and last.text == ""
    assert last.response is not None and last.response.refusal_reason == "self_harm"


def test_a_stream_without_an_answer_fails_closed() -> None:
    assembler = StreamAssembler()
    assembler.add(_text("partial"))
    with pytest.raises(UpstreamError):
        assembler.finish()


def test_nothing_may_follow_the_answer() -> None:
    assembler = StreamAssembler()
    assembler.add(_answer("done"))
    with pytest.raises(UpstreamError):
        assembler.add(_text("more"))


def test_the_cli_prints_text_as_it_comes_and_reprints_a_replacement() -> None:
    out = io.StringIO()
    shown = TextShown("  summary:", out=out)
    shown.add("line one\nline")
    shown.add(" two")
    assert out.getvalue() == "  summary:\n    line one\n    line two"
    shown.add("the final answer", replace=True)
    shown.end()
    text = out.getvalue()
    assert text.endswith("it replaces the text above)\n  summary:\n    the final answer\n")
    assert shown.text == "the final answer"


def test_the_cli_shows_no_heading_for_a_refusal_without_text() -> None:
    out = io.StringIO()
    shown = TextShown("  summary:", out=out)
    shown.add("", replace=True)
    shown.end()
    assert out.getvalue() == ""


async def test_a_deadline_names_itself_when_it_passes() -> None:
    deadline = Deadline.start(0.05)
    with pytest.raises(DeadlineExceededError, match=r"^deadline of 0\.05 s exceeded$"):
        await deadline.run(asyncio.sleep(5))
    assert await Deadline.start(1).run(asyncio.sleep(0, "done")) == "done"


async def test_a_timeout_error_of_the_work_itself_is_not_the_deadline() -> None:
    async def fails() -> None:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        await Deadline.start(5).run(fails())


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan")])
async def test_a_deadline_is_a_positive_number_of_seconds(seconds: float) -> None:
    with pytest.raises(ConfigError):
        Deadline.start(seconds)


async def test_an_inner_request_carries_the_time_left() -> None:
    request = bhttp.Request(
        "POST", "https", "privproc.local", "/v1/sessions", headers=((TIMEOUT_HEADER, "1"),)
    )
    carried = with_deadline(request, Deadline.start(2.5))
    values = [v for n, v in carried.headers if n == TIMEOUT_HEADER]
    assert len(values) == 1 and 2.4 < parse_timeout(values[0]) <= 2.5
