"""Streamed answers: the model's streamer, TaskProcessor.stream, SessionEngine.resume_stream, StreamSession.

Real parts throughout: the tiny random model (slowed per token where a test needs time to
pass), RA-TLS between the session engine and a client, gRPC over mutual TLS for the servicer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio

from privproc import events
from privproc.attestation.appraisal import SnpPolicy
from privproc.attestation.ratls import AppraisalVerifier
from privproc.attestation.ratls_session import RaTlsClient
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.attestation.workload import VerifierCA
from privproc.errors import DeadlineExceededError, UnavailableError
from privproc.predictor.language import GenerationControl, GenerationResult, ModelLimits
from privproc.predictor.model import LanguageModel
from privproc.predictor.scheduler import GenerationScheduler, Job
from privproc.predictor.server import PredictorServicer
from privproc.predictor.sessions import SessionEngine
from privproc.predictor.tasks import TaskProcessor
from privproc.runtime import mtls
from privproc.runtime.rpc import GrpcServer
from privproc.v1 import predictor_pb2, predictor_pb2_grpc
from privproc.wire.padding import FRAME_BUCKETS, STREAM_FRAME_BUCKETS
from privproc.wire.session import Decoder, frame
from tests.tasks_support import CHAT, ScriptedModel, TopicEmbedder, rewrite, summarize

MEASUREMENT, HOST_DATA = b"\x42" * 48, b"\x24" * 32
BUDGET = 200
SENTENCE = "Could you please send me the quarterly report by Friday, if that works for you?"


@pytest.fixture(scope="module")
def tiny() -> LanguageModel:
    return LanguageModel.tiny_random(seed=0, limits=ModelLimits(max_output_tokens=BUDGET))


class SlowModel:
    """The tiny model slowed to ``seconds`` per token; :attr:`tokens` counts each generation's."""

    def __init__(self, model: LanguageModel, seconds: float) -> None:
        self._model = model
        self._seconds = seconds
        self.tokens: list[int] = []

    @property
    def model_id(self) -> str:
        return self._model.model_id

    @property
    def limits(self) -> ModelLimits:
        return self._model.limits

    @property
    def num_parameters(self) -> int:
        return self._model.num_parameters

    @property
    def special_tokens(self) -> frozenset[str]:
        return self._model.special_tokens

    def count_tokens(self, text: str) -> int:
        return self._model.count_tokens(text)

    def generate(
        self,
        prompt_messages: list[dict[str, str]] | str,
        *,
        max_new_tokens: int,
        control: GenerationControl | None = None,
    ) -> GenerationResult:
        count = [0]
        seconds = self._seconds

        class Slow:
            def on_text(self, text: str) -> bool:
                count[0] += 1
                time.sleep(seconds)
                return control.on_text(text) if control is not None else False

        try:
            return self._model.generate(prompt_messages, max_new_tokens=max_new_tokens, control=Slow())
        finally:
            self.tokens.append(count[0])


@pytest.fixture
def generation_events(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, object]]]:
    """The ``predictor.generation_stopped`` events of the test."""
    caplog.set_level(logging.DEBUG, logger="privproc.events")
    seen: list[dict[str, object]] = []

    def sink(spec: events.EventSpec, values: Mapping[str, object]) -> bool:
        if spec.name == "predictor.generation_stopped":
            seen.append(dict(values))
            return True
        return False

    events.install_sink(sink)
    try:
        yield seen
    finally:
        events.install_sink(None)


async def _until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# --- the model's streamer ------------------------------------------------------------------


class Recording:
    """A control that records the text after each token and stops after ``stop_after`` tokens."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.texts: list[str] = []
        self._stop_after = stop_after

    def on_text(self, text: str) -> bool:
        self.texts.append(text)
        return self._stop_after is not None and len(self.texts) >= self._stop_after


@pytest.mark.parametrize("prompt", ["hello there", [{"role": "user", "content": SENTENCE}]])
def test_a_watched_generation_is_the_plain_one(
    tiny: LanguageModel, prompt: str | list[dict[str, str]]
) -> None:
    plain = tiny.generate(prompt, max_new_tokens=48)
    control = Recording()
    watched = tiny.generate(prompt, max_new_tokens=48, control=control)
    assert watched == plain
    assert len(control.texts) >= plain.output_tokens  # one call per token (a stop token is not text)
    assert control.texts[-1].strip() == plain.text.rstrip("\ufffd").strip()
    assert len(set(control.texts)) > 10  # the text grew as the tokens came


def test_a_control_stops_the_model_loop(tiny: LanguageModel) -> None:
    control = Recording(stop_after=5)
    result = tiny.generate("hello there", max_new_tokens=48, control=control)
    assert result.output_tokens == 5 and len(control.texts) == 5


# --- TaskProcessor.stream -------------------------------------------------------------------


async def _chunks(
    processor: TaskProcessor, request: predictor_pb2.ProcessRequest
) -> list[predictor_pb2.ProcessChunk]:
    return [chunk async for chunk in processor.stream(request)]


@pytest.mark.parametrize(
    "request_", [rewrite(SENTENCE, max_output_tokens=64), summarize(CHAT, max_output_tokens=64)]
)
async def test_the_stream_ends_with_what_process_returns(
    tiny: LanguageModel, request_: predictor_pb2.ProcessRequest
) -> None:
    processor = TaskProcessor(tiny, summary_strategy="generative")
    *texts, last = await _chunks(processor, request_)
    assert last.HasField("response") and not any(chunk.HasField("response") for chunk in texts)
    assert last.response == processor.process(request_)
    assert last.response.output_tokens > 0
    assert (await processor(request_)) == last.response


async def test_provisional_text_grows_word_by_word_as_a_prefix_of_the_answer() -> None:
    model = ScriptedModel([SENTENCE, SENTENCE])
    processor = TaskProcessor(model)
    *texts, last = await _chunks(processor, rewrite("send me the report"))
    shown = "".join(chunk.text for chunk in texts)
    assert len(texts) >= 10 and all(chunk.text for chunk in texts)
    assert last.response.text == SENTENCE and SENTENCE.startswith(shown)
    assert shown == SENTENCE.rsplit(" ", 1)[0]  # the last word comes with the answer
    assert last.response == processor.process(rewrite("send me the report"))


async def test_a_refused_output_stops_the_model_at_the_word_that_made_it_refusable() -> None:
    harmful = "First you build a pipe bomb from " + "more words " * 40
    words = len(harmful.split())
    processor = TaskProcessor(ScriptedModel([(harmful, words), (harmful, words)]))
    *texts, last = await _chunks(processor, rewrite("tell me something"))
    assert last.response.refusal_reason == "output_blocked" and last.response.text == ""
    assert 0 < last.response.output_tokens < 10 < words  # the model stopped early: time saved
    assert "bomb" not in "".join(chunk.text for chunk in texts)  # screened before it was shown
    assert last.response == processor.process(rewrite("tell me something"))


async def test_an_extractive_summary_is_the_final_chunk_at_once() -> None:
    processor = TaskProcessor(ScriptedModel(), TopicEmbedder())
    chunks = await _chunks(processor, summarize(CHAT))
    assert len(chunks) == 1 and chunks[0].response == processor.process(summarize(CHAT))


async def test_a_deadline_stops_the_stream_and_the_model(
    tiny: LanguageModel, generation_events: list[dict[str, object]]
) -> None:
    slow = SlowModel(tiny, 0.01)
    processor = TaskProcessor(slow)
    with pytest.raises(DeadlineExceededError):
        async for _ in processor.stream(
            rewrite(SENTENCE, max_output_tokens=BUDGET), deadline=time.monotonic() + 0.3
        ):
            pass
    await _until(lambda: bool(slow.tokens))
    assert 0 < slow.tokens[0] < BUDGET
    assert generation_events == [{"reason": "deadline", "stage": "generating"}]


async def test_closing_the_stream_early_stops_the_model(
    tiny: LanguageModel, generation_events: list[dict[str, object]]
) -> None:
    slow = SlowModel(tiny, 0.01)
    processor = TaskProcessor(slow)
    stream = processor.stream(rewrite(SENTENCE, max_output_tokens=BUDGET))
    consumer = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.2)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await stream.aclose()
    await _until(lambda: bool(slow.tokens))
    assert 0 < slow.tokens[0] < BUDGET
    assert generation_events == [{"reason": "cancelled", "stage": "generating"}]


# --- SessionEngine.resume_stream ----------------------------------------------------------------


def _client(root: DevelopmentRoot) -> RaTlsClient:
    policy = SnpPolicy(measurements={MEASUREMENT: 3}).with_development_root(root.ark_fingerprint)
    return RaTlsClient(AppraisalVerifier(policy))


def _engine(root: DevelopmentRoot, processor: TaskProcessor, **kw: float) -> SessionEngine:
    return SessionEngine(SimulatedSnp(root, measurement=MEASUREMENT, host_data=HOST_DATA), processor, **kw)  # type: ignore[arg-type]


async def _streamed(
    engine: SessionEngine, client: RaTlsClient, request: predictor_pb2.ProcessRequest, **kw: float
) -> list[tuple[bytes, bool]]:
    """Open a session, send ``request`` with the client's Finished: the plaintext of each item."""
    session_id, flight, _ = await engine.open(client.start())
    finished = client.receive(flight)
    items = []
    async for records, closed in engine.resume_stream(
        session_id, finished + client.send_application_data(frame(request)), **kw
    ):
        client.receive(records)
        items.append((client.read_application_data(), closed))
    return items


async def test_a_request_that_does_not_stream_gets_todays_one_response_frame(
    root: DevelopmentRoot, tiny: LanguageModel
) -> None:
    processor = TaskProcessor(tiny, summary_strategy="generative")
    request = rewrite(SENTENCE, max_output_tokens=32)
    [(plaintext, closed)] = await _streamed(_engine(root, processor), _client(root), request)
    assert closed and plaintext == frame(processor.process(request))


async def test_a_streamed_answer_is_bucketed_chunks_ending_with_the_response(
    root: DevelopmentRoot, tiny: LanguageModel
) -> None:
    processor = TaskProcessor(tiny, summary_strategy="generative")
    request = rewrite(SENTENCE, max_output_tokens=64)
    request.stream = True
    engine = _engine(root, processor)
    items = await _streamed(engine, _client(root), request)
    assert [closed for _, closed in items] == [False] * (len(items) - 1) + [True]
    decoder = Decoder(predictor_pb2.ProcessChunk, buckets=STREAM_FRAME_BUCKETS)
    chunks = [chunk for plaintext, _ in items for chunk in decoder.feed(plaintext)]
    assert len(chunks) == len(items) and not decoder.pending  # one frame per item
    assert chunks[-1].response == processor.process(request)
    assert len(engine) == 0


async def test_silences_are_filled_with_padding_frames_all_of_one_size(root: DevelopmentRoot) -> None:
    model = ScriptedModel([SENTENCE], token_seconds=0.15)
    engine = _engine(root, TaskProcessor(model), stream_tick_seconds=0.05, stream_keepalive_seconds=0.2)
    request = rewrite("send me the report")
    request.stream = True
    started = time.monotonic()
    items = await _streamed(engine, _client(root), request)
    elapsed = time.monotonic() - started
    decoder = Decoder(predictor_pb2.ProcessChunk, buckets=STREAM_FRAME_BUCKETS)
    chunks = [chunk for plaintext, _ in items for chunk in decoder.feed(plaintext)]
    *provisional, last = chunks
    # Text and padding frames are all the smallest stream bucket; the answer's frame is lifted to
    # a whole answer's 1 KiB floor, however short the answer.
    assert {len(plaintext) for plaintext, _ in items[:-1]} == {STREAM_FRAME_BUCKETS[0]}
    assert len(items[-1][0]) == FRAME_BUCKETS[0]
    assert len(last.response.SerializeToString()) + 4 < STREAM_FRAME_BUCKETS[0]  # short, yet 1 KiB
    assert "".join(chunk.text for chunk in provisional) == SENTENCE.rsplit(" ", 1)[0]
    assert last.response.text == SENTENCE
    # Fewer frames than the keepalive allows would mean a silence went unfilled.
    assert len(items) >= elapsed / 0.2 / 2
    assert any(not chunk.text for chunk in provisional)  # padding in the silences between words


async def test_a_passed_deadline_stops_the_model_and_drops_the_session(
    root: DevelopmentRoot, tiny: LanguageModel, generation_events: list[dict[str, object]]
) -> None:
    slow = SlowModel(tiny, 0.01)
    engine = _engine(root, TaskProcessor(slow))
    request = rewrite(SENTENCE, max_output_tokens=BUDGET)
    request.stream = True
    with pytest.raises(DeadlineExceededError):
        await _streamed(engine, _client(root), request, deadline=time.monotonic() + 0.3)
    assert len(engine) == 0
    await _until(lambda: bool(slow.tokens))
    assert 0 < slow.tokens[0] < BUDGET
    assert generation_events == [{"reason": "deadline", "stage": "generating"}]


async def test_a_stream_closed_early_stops_the_model(
    root: DevelopmentRoot, tiny: LanguageModel, generation_events: list[dict[str, object]]
) -> None:
    slow = SlowModel(tiny, 0.01)
    engine = _engine(root, TaskProcessor(slow), stream_keepalive_seconds=0.1, stream_tick_seconds=0.05)
    request = rewrite(SENTENCE, max_output_tokens=BUDGET)
    request.stream = True
    client = _client(root)
    session_id, flight, _ = await engine.open(client.start())
    finished = client.receive(flight)
    stream = engine.resume_stream(session_id, finished + client.send_application_data(frame(request)))
    _, closed = await anext(stream)
    assert not closed
    await stream.aclose()  # the gateway went away
    assert len(engine) == 0
    await _until(lambda: bool(slow.tokens))
    assert 0 < slow.tokens[0] < BUDGET
    assert generation_events == [{"reason": "cancelled", "stage": "generating"}]


async def test_a_full_generation_queue_refuses_new_sessions_early(root: DevelopmentRoot) -> None:
    scheduler = GenerationScheduler(max_queued=1)
    engine = _engine(root, TaskProcessor(ScriptedModel(), scheduler=scheduler))
    started, release = threading.Event(), threading.Event()

    def hold(job: Job[None]) -> None:
        started.set()
        release.wait(10)

    running = asyncio.ensure_future(scheduler.run(hold))
    await _until(started.is_set)
    queued = asyncio.ensure_future(scheduler.run(lambda job: None))
    await _until(lambda: scheduler.full)
    with pytest.raises(UnavailableError, match="generation queue full"):
        await engine.open(_client(root).start())
    assert len(engine) == 0
    release.set()
    await asyncio.gather(running, queued)
    await engine.open(_client(root).start())
    assert len(engine) == 1


# --- Predictor/StreamSession over gRPC with mutual TLS ---------------------------------------------


def _identity(ca: VerifierCA) -> mtls.Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    return mtls.Identity.of(ca.issue_service(key.public_key(), mtls.WORKLOAD_NAME), key)


@pytest.fixture
async def served(
    root: DevelopmentRoot, tiny: LanguageModel, tmp_path: Path
) -> AsyncIterator[tuple[predictor_pb2_grpc.PredictorStub, SlowModel, TaskProcessor]]:
    """A predictor servicer over mTLS (its CA made here), on a slowed tiny model; the gateway's stub."""
    ca = VerifierCA.load_or_create(tmp_path / "ca")
    slow = SlowModel(tiny, 0.005)
    processor = TaskProcessor(slow)
    engine = _engine(root, processor)
    server = GrpcServer("predictor")
    source = SimulatedSnp(root, measurement=MEASUREMENT, host_data=HOST_DATA)
    server.add(
        predictor_pb2_grpc.add_PredictorServicer_to_server,
        PredictorServicer(engine, source),
        "privproc.v1.Predictor",
    )
    port = await server.start(
        "127.0.0.1", 0, mtls.RenewableServerIdentity(_identity(ca), ca.pem).credentials()
    )
    credentials = mtls.channel_credentials(_identity(ca), ca.pem)
    try:
        async with aio.secure_channel(
            f"127.0.0.1:{port}", credentials, options=mtls.channel_options()
        ) as channel:
            yield predictor_pb2_grpc.PredictorStub(channel), slow, processor
    finally:
        await server.stop(grace=1.0)


async def _stream_call(
    stub: predictor_pb2_grpc.PredictorStub,
    client: RaTlsClient,
    request: predictor_pb2.ProcessRequest,
    seconds: float,
) -> list[predictor_pb2.SessionRecords]:
    opened = await cast(Any, stub).OpenSession(predictor_pb2.OpenSessionRequest(tls_records=client.start()))
    finished = client.receive(opened.tls_records)
    call = cast(Any, stub).StreamSession(
        predictor_pb2.ContinueSessionRequest(
            session_id=opened.session_id, tls_records=finished + client.send_application_data(frame(request))
        ),
        timeout=seconds,
    )
    return [message async for message in call]


async def test_stream_session_over_grpc_streams_the_answer(
    root: DevelopmentRoot, served: tuple[predictor_pb2_grpc.PredictorStub, SlowModel, TaskProcessor]
) -> None:
    stub, _, processor = served
    request = rewrite(SENTENCE, max_output_tokens=48)
    request.stream = True
    client = _client(root)
    messages = await _stream_call(stub, client, request, seconds=30)
    assert [m.closed for m in messages] == [False] * (len(messages) - 1) + [True]
    decoder = Decoder(predictor_pb2.ProcessChunk, buckets=STREAM_FRAME_BUCKETS)
    chunks = []
    for message in messages:
        client.receive(message.tls_records)
        chunks.extend(decoder.feed(client.read_application_data()))
    assert chunks[-1].response == processor.process(request)


async def test_stream_session_stops_the_model_when_the_calls_deadline_passes(
    root: DevelopmentRoot,
    served: tuple[predictor_pb2_grpc.PredictorStub, SlowModel, TaskProcessor],
    generation_events: list[dict[str, object]],
) -> None:
    stub, slow, _ = served
    request = rewrite(SENTENCE, max_output_tokens=BUDGET)
    request.stream = True
    with pytest.raises(aio.AioRpcError) as raised:
        await _stream_call(stub, _client(root), request, seconds=0.5)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await _until(lambda: bool(generation_events) and bool(slow.tokens))
    assert 0 < slow.tokens[0] < BUDGET
    assert generation_events == [{"reason": "deadline", "stage": "generating"}]


async def test_stream_session_answers_typed_errors_with_their_status(
    served: tuple[predictor_pb2_grpc.PredictorStub, SlowModel, TaskProcessor],
) -> None:
    stub, _, _ = served
    call = cast(Any, stub).StreamSession(
        predictor_pb2.ContinueSessionRequest(session_id=b"\0" * 16, tls_records=b"x"), timeout=10
    )
    with pytest.raises(aio.AioRpcError) as raised:
        [message async for message in call]
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
