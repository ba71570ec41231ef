"""Streamed answers and one deadline through `privproc up` with its default models (issue 15).

One stack for the module (SmolLM2 and MiniLM, as `privproc up` starts them), reached through its
HTTP relay by the SDK and the CLI:

- the streaming calls give the same answer and an equal receipt as the plain ones, the text
  arriving in several pieces before the end of a long enough generation;
- with both cores busy (a CPU-bound process per core, started here), a summary of a 30-message
  chat completes through the whole private path, streamed (the relay's and the gateway's idle
  timeouts never trip on a live stream, where a fixed 30 s limit used to);
- with a deliberately tiny deadline on a request that generates, the client raises
  ``deadline_exceeded`` naming that deadline, and the predictor's model loop stops (its
  ``predictor.generation_stopped`` event, in its log).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from privproc.client.private import Chat, PrivateProcessingClient, PrivateReceipt, StreamChunk
from privproc.errors import DeadlineExceededError
from privproc.stackfile import StackFile

# Slow (run by CI): SmolLM2 loads and generates; the default suite stays within its time.
pytestmark = [pytest.mark.timeout(1200), pytest.mark.slow]

#: The default models load (SmolLM2 converted once into the module's cache) within this.
START_SECONDS = 600
RENOVATION = Path(__file__).parents[1] / "data" / "summaries" / "home-renovation.json"
DRAFT = (
    "hey team, the renovation budget got cut again, builders start march 3rd, deposit is paid, "
    "we still need to choose the cabinet colour by friday, can everyone reply by tonight pls"
)


@dataclasses.dataclass
class Up:
    state: Path
    process: subprocess.Popen[bytes]

    @property
    def stack_path(self) -> Path:
        return self.state / "stack.json"

    @property
    def stack(self) -> StackFile:
        return StackFile.load(self.stack_path)

    def predictor_events(self) -> list[dict[str, Any]]:
        path = self.state / "telemetry" / "predictor-events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _privproc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privproc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    state = tmp_path_factory.mktemp("stream-stack")
    process = subprocess.Popen(
        [sys.executable, "-m", "privproc", "up", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack = Up(state, process)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not stack.stack_path.exists():
            assert process.poll() is None, "privproc up exited early"
            assert time.monotonic() < deadline, "the stack never became ready"
            time.sleep(0.2)
        yield stack
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def _client(up: Up, **options: Any) -> AsyncIterator[PrivateProcessingClient]:
    async with PrivateProcessingClient.from_stack(up.stack, refill=None, **options) as client:
        await client.wallet.refill(wait_quiet=False)  # ahead of the requests, never inside one
        yield client


async def _collect(stream: Any) -> tuple[list[StreamChunk], str]:
    """Every chunk, and the text a reader would show at the end."""
    chunks: list[StreamChunk] = []
    shown = ""
    async with contextlib.aclosing(stream):
        async for chunk in stream:
            chunks.append(chunk)
            shown = chunk.text if chunk.replace else shown + chunk.text
    return chunks, shown


def _same_receipt(streamed: PrivateReceipt | None, plain: PrivateReceipt) -> None:
    assert streamed is not None
    # Each session has its own RA-TLS certificate; everything else verified is the same.
    assert streamed.predictor_cert_sha256 and plain.predictor_cert_sha256
    assert dataclasses.replace(streamed, predictor_cert_sha256="") == dataclasses.replace(
        plain, predictor_cert_sha256=""
    )


async def test_streamed_answers_equal_the_plain_ones_and_arrive_in_pieces(up: Up) -> None:
    chat = Chat.from_json(json.loads(RENOVATION.read_text()))
    async with _client(up) as client:
        plain, plain_receipt = await client.suggest_rewrite(DRAFT, "polite", max_output_tokens=96)
        chunks, shown = await _collect(client.suggest_rewrite_stream(DRAFT, "polite", max_output_tokens=96))
        last = chunks[-1]
        assert last.final and last.response is not None
        assert last.response == plain and shown == plain.text and plain.text
        _same_receipt(last.receipt, plain_receipt)
        # Text came before the end, in several pieces: a generation of this length takes ticks.
        assert len([c for c in chunks[:-1] if c.text]) >= 2, [c.text for c in chunks]
        assert not any(c.final for c in chunks[:-1])

        summary, summary_receipt = await client.summarize(chat)
        chunks, shown = await _collect(client.summarize_stream(chat))
        assert chunks[-1].response == summary and shown == summary.text
        _same_receipt(chunks[-1].receipt, summary_receipt)


def _refill(up: Up) -> None:
    refill = _privproc("wallet", "refill", "--stack", str(up.stack_path))
    assert refill.returncode == 0, refill.stderr


def test_the_cli_prints_the_stream_then_the_receipt(up: Up) -> None:
    _refill(up)
    result = _privproc("suggest", DRAFT, "--stack", str(up.stack_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("a polite rewrite of your draft, privately:\n  suggestion:\n    ")
    assert "logged cvm-release" in result.stdout
    quiet = _privproc("suggest", DRAFT, "--stack", str(up.stack_path), "--no-stream", "--json")
    assert quiet.returncode == 0, quiet.stderr
    answer = json.loads(quiet.stdout)["suggestion"]
    assert answer and answer.splitlines()[0] in result.stdout


@contextlib.contextmanager
def _cores_busy() -> Iterator[None]:
    """A CPU-bound process per core, killed on the way out."""
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for process in load:
            process.kill()
            process.wait()


async def test_a_summary_of_a_30_message_chat_completes_with_both_cores_busy(up: Up) -> None:
    document = json.loads(RENOVATION.read_text())
    chat = Chat.from_json(document)
    assert len(chat.messages) == 30
    async with _client(up) as client:
        with _cores_busy():
            started = time.monotonic()
            chunks, shown = await _collect(client.summarize_stream(chat, deadline=600))
            seconds = time.monotonic() - started
    last = chunks[-1]
    assert last.response is not None and not last.response.refusal_reason
    assert shown == last.response.text and shown.strip()
    assert last.receipt is not None and last.receipt.measurement
    print(f"summary of 30 messages with both cores busy: {seconds:.1f} s, {len(chunks)} chunks")


async def test_a_tiny_deadline_is_reported_by_name_and_stops_the_model(up: Up) -> None:
    def stopped() -> list[dict[str, Any]]:
        return [e for e in up.predictor_events() if e["event"] == "predictor.generation_stopped"]

    before = len(stopped())
    async with _client(up) as client:
        # The same (greedy, so identical) generation first, timed: the deadline is then set half-way
        # between its first text and its end, so that it passes while the model is generating.
        started = time.monotonic()
        first = end = 0.0
        async for chunk in client.suggest_rewrite_stream(DRAFT * 2, "formal", max_output_tokens=256):
            if chunk.text and not first:
                first = time.monotonic() - started
            end = time.monotonic() - started
        assert 0 < first < end
        deadline = round((first + end) / 2, 2)
        shown: list[str] = []
        with pytest.raises(DeadlineExceededError) as raised:
            async for chunk in client.suggest_rewrite_stream(
                DRAFT * 2, "formal", max_output_tokens=256, deadline=deadline
            ):
                shown.append(chunk.text)
        assert str(raised.value) == f"deadline of {deadline:g} s exceeded"
        assert "".join(shown)  # it was generating: text had come

    # The device went away, or the deadline reached the predictor: either way its model loop stops.
    def wait() -> None:
        waited = time.monotonic() + 30
        while len(stopped()) == before and time.monotonic() < waited:
            time.sleep(0.5)

    await asyncio.to_thread(wait)
    [event] = stopped()[before:]
    assert event["reason"] in ("deadline", "cancelled")
    _refill(up)
    cli = _privproc("suggest", DRAFT * 4, "--stack", str(up.stack_path), "--deadline", "0.5")
    assert cli.returncode == 2
    assert cli.stderr.strip().endswith("privproc: deadline_exceeded: deadline of 0.5 s exceeded")
