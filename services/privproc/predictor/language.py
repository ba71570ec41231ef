"""What the predictor's tasks need from a model: its limits, a generation, a model and an embedder.

Torch-free: :mod:`privproc.predictor.tasks` and its tests use these without
the runtime that implements them (:mod:`privproc.predictor.model`), which is
the one module that imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from privproc.errors import BadRequestError, LimitExceededError


@dataclass(frozen=True)
class ModelLimits:
    """Bounds on what a model is given and may produce."""

    max_messages: int = 200
    max_chars: int = 20_000
    max_output_tokens: int = 256

    def check_messages(self, texts: Sequence[str]) -> None:
        """Refuse input of more than ``max_messages`` texts or ``max_chars`` characters in all."""
        if len(texts) > self.max_messages:
            raise LimitExceededError("too many messages")
        if sum(len(text) for text in texts) > self.max_chars:
            raise LimitExceededError("messages too long")

    def output_tokens(self, requested: int) -> int:
        """The number of tokens to generate: ``requested``, capped at ``max_output_tokens``."""
        if requested < 1:
            raise BadRequestError("max output tokens must be positive")
        return min(requested, self.max_output_tokens)


@dataclass(frozen=True)
class GenerationResult:
    """What one generation produced; ``output_tokens`` excludes the end-of-sequence token."""

    text: str
    input_tokens: int
    output_tokens: int


class GenerationControl(Protocol):
    """Watches one generation as it runs, on the model's thread, and may stop it."""

    def on_text(self, text: str) -> bool:
        """The output decoded so far, after each new token; ``True`` stops the generation there.

        The text is what the result's ``text`` would be had the generation ended at this token,
        except that a character still incomplete (a partial UTF-8 sequence) is left out.
        """
        ...


class LanguageModel(Protocol):
    """The language model as the task processor uses it (and nothing more).

    :class:`privproc.predictor.model.LanguageModel` is the implementation that
    serves; tests of task and policy logic use a scripted one.
    """

    @property
    def model_id(self) -> str:
        """Names the model in every response."""
        ...

    @property
    def limits(self) -> ModelLimits:
        """Bounds on input and output."""
        ...

    @property
    def num_parameters(self) -> int:
        """The parameter count: under ``auto``, small models summarise extractively."""
        ...

    @property
    def special_tokens(self) -> frozenset[str]:
        """The tokenizer's control tokens: removed from every message before it reaches a prompt."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is, without any added around it."""
        ...

    def generate(
        self,
        prompt_messages: list[dict[str, str]] | str,
        *,
        max_new_tokens: int,
        control: GenerationControl | None = None,
    ) -> GenerationResult:
        """At most ``max_new_tokens`` (capped by :attr:`limits`); a prompt too long raises
        :class:`~privproc.errors.LimitExceededError`. With ``control``, the text so far goes to
        it after every token and it may stop the generation early (the result is then what was
        generated up to there); without, or when it never stops it, the result is the same."""
        ...


class TextEmbedder(Protocol):
    """A sentence encoder: one vector per text."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


__all__ = ["GenerationControl", "GenerationResult", "LanguageModel", "ModelLimits", "TextEmbedder"]
