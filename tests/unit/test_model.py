"""The model runtime on a tiny random Llama built in code: bounds, determinism, digests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from privproc.errors import BadRequestError, ConfigError, LimitExceededError
from privproc.predictor.language import ModelLimits
from privproc.predictor.model import LanguageModel, files_digest, state_dict_digest
from tests.tasks_support import ScriptedModel, render

PROMPT = [
    {"role": "system", "content": "Rewrite the draft politely."},
    {"role": "user", "content": "send me the report"},
]


@pytest.fixture(scope="module")
def tiny() -> LanguageModel:
    return LanguageModel.tiny_random(seed=0)


# --- generation -----------------------------------------------------------


def test_loading_turns_hub_access_off(tiny: LanguageModel) -> None:
    import huggingface_hub.constants

    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_generation_respects_max_new_tokens(tiny: LanguageModel) -> None:
    for budget in (1, 5, 17):
        result = tiny.generate(PROMPT, max_new_tokens=budget)
        assert 0 < result.output_tokens <= budget
    # This random model never emits its end-of-sequence token early: the budget is used in full.
    assert tiny.generate(PROMPT, max_new_tokens=17).output_tokens == 17


def test_generation_is_capped_by_the_limits() -> None:
    model = LanguageModel.tiny_random(seed=0, limits=ModelLimits(max_output_tokens=4))
    assert model.generate(PROMPT, max_new_tokens=100).output_tokens <= 4


def test_generation_is_deterministic(tiny: LanguageModel) -> None:
    first = tiny.generate(PROMPT, max_new_tokens=12)
    assert tiny.generate(PROMPT, max_new_tokens=12) == first
    assert LanguageModel.tiny_random(seed=0).generate(PROMPT, max_new_tokens=12) == first
    assert first.text


def test_token_counts(tiny: LanguageModel) -> None:
    result = tiny.generate(PROMPT, max_new_tokens=3)
    templated = tiny.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert isinstance(templated, str)
    expected = len(tiny.tokenizer(templated, add_special_tokens=False)["input_ids"])
    assert result.input_tokens == expected > len("".join(m["content"] for m in PROMPT))
    # One more message, "<|bos|>user\né<|eos|>\n": 2 special tokens and one token per UTF-8 byte.
    longer = tiny.generate([*PROMPT, {"role": "user", "content": "é"}], max_new_tokens=3)
    assert longer.input_tokens - result.input_tokens == 2 + len("user\né\n".encode())


def test_what_the_task_processor_asks_of_the_model(tiny: LanguageModel) -> None:
    assert tiny.special_tokens == {"<|pad|>", "<|bos|>", "<|eos|>"}
    assert tiny.count_tokens("é<|eos|>") == len("é".encode()) + 1  # bytes, and the control token is one
    # The scripted stand-in of the task tests counts and lays prompts out as this model does.
    assert ScriptedModel().special_tokens == tiny.special_tokens
    templated = tiny.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert templated == render(PROMPT)


def test_string_prompt_is_a_user_message(tiny: LanguageModel) -> None:
    as_text = tiny.generate("send me the report", max_new_tokens=6)
    as_message = tiny.generate([{"role": "user", "content": "send me the report"}], max_new_tokens=6)
    assert as_text == as_message


def test_plain_text_without_a_chat_template() -> None:
    model = LanguageModel.tiny_random(seed=0)
    model.tokenizer.chat_template = None
    result = model.generate("abc", max_new_tokens=4)
    assert result.input_tokens == 3 and 0 < result.output_tokens <= 4
    messages = model.generate([{"role": "user", "content": "abc"}], max_new_tokens=4)
    assert messages.input_tokens == len(b"user: abc\nassistant:")


def test_prompt_beyond_the_context_is_refused_not_truncated(tiny: LanguageModel) -> None:
    with pytest.raises(LimitExceededError):
        tiny.generate("x" * tiny.context_tokens, max_new_tokens=1)


@pytest.mark.parametrize(
    "bad",
    [
        [{"role": "wizard", "content": "hi"}],
        [{"role": "user"}],
        [{"role": "user", "content": "hi", "extra": "x"}],
        [],
    ],
)
def test_malformed_messages_are_refused(tiny: LanguageModel, bad: list[dict[str, str]]) -> None:
    with pytest.raises(BadRequestError):
        tiny.generate(bad, max_new_tokens=2)


def test_non_positive_budget_is_refused(tiny: LanguageModel) -> None:
    with pytest.raises(BadRequestError):
        tiny.generate(PROMPT, max_new_tokens=0)


# --- digests --------------------------------------------------------------


def test_weights_digest_is_stable_and_tracks_the_weights() -> None:
    model = LanguageModel.tiny_random(seed=0)
    assert model.weights_digest.startswith("sha256:") and len(model.weights_digest) == 7 + 64
    assert LanguageModel.tiny_random(seed=0).weights_digest == model.weights_digest
    assert LanguageModel.tiny_random(seed=1).weights_digest != model.weights_digest
    assert state_dict_digest(model.torch_model) == model.weights_digest
    with torch.no_grad():
        next(iter(model.torch_model.parameters())).view(-1)[0] += 1.0
    assert state_dict_digest(model.torch_model) != model.weights_digest


def test_tiny_random_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LanguageModel.tiny_random(seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_files_digest(tmp_path: Path) -> None:
    one = tmp_path / "model.safetensors"
    one.write_bytes(b"weights")
    assert files_digest([one]) == "sha256:" + hashlib.sha256(b"weights").hexdigest()
    two = tmp_path / "a.safetensors"
    two.write_bytes(b"more")
    manifest = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in (("a.safetensors", b"more"), ("model.safetensors", b"weights"))
    )
    expected = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    assert files_digest([one, two]) == files_digest([two, one]) == expected
    with pytest.raises(ConfigError):
        files_digest([])


def test_directory_round_trip_keeps_outputs_and_digest_names_the_file(tmp_path: Path) -> None:
    tiny = LanguageModel.tiny_random(seed=3)
    tiny.torch_model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = LanguageModel.from_directory(tmp_path)
    assert loaded.model_id == tmp_path.name
    assert loaded.weights_digest == files_digest([tmp_path / "model.safetensors"])
    assert loaded.generate(PROMPT, max_new_tokens=8) == tiny.generate(PROMPT, max_new_tokens=8)


def test_directory_without_safetensors_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LanguageModel.from_directory(tmp_path)


def test_missing_gguf_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LanguageModel.from_gguf(tmp_path / "absent.gguf", tmp_path / "cache")


# --- extractive summaries -----------------------------------------------------------
