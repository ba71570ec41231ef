"""The predictor's model configuration: the phrasing option is declared, measured and loaded."""

from __future__ import annotations

from pathlib import Path

from privproc.attestation.measure import measure_image
from privproc.predictor.loading import TINY_RANDOM, ModelSpec, load_processor
from privproc.predictor.server import PredictorConfig
from privproc.runtime import settings


def test_phrasing_is_off_by_default_and_a_flag() -> None:
    assert ModelSpec().phrase_summaries is False
    spec = settings.from_args(ModelSpec, ["--phrase-summaries"])
    assert spec.phrase_summaries is True
    assert settings.from_args(ModelSpec, ["--no-phrase-summaries"]).phrase_summaries is False
    # As every option: from the environment too, under the predictor's name.
    environ = {"PRIVPROC_PREDICTOR_MODEL_PHRASE_SUMMARIES": "true"}
    required = ["--verifier", "v:1", "--verifier-ca-file", "ca.pem"]
    assert settings.from_args(PredictorConfig, required, environ).model.phrase_summaries is True


def test_phrasing_is_part_of_the_measured_configuration() -> None:
    off, on = ModelSpec(TINY_RANDOM, "none"), ModelSpec(TINY_RANDOM, "none", phrase_summaries=True)
    assert off.config()["phrase_summaries"] is False and on.config()["phrase_summaries"] is True
    assert off.digest() == on.digest()  # the same weights ...
    measured = [measure_image(model_digest=spec.digest(), config=spec.config()) for spec in (off, on)]
    assert measured[0].measurement != measured[1].measurement  # ... but another measured CVM


def test_the_loaded_processor_phrases_as_configured(tmp_path: Path) -> None:
    for phrase in (False, True):
        spec = ModelSpec(TINY_RANDOM, "none", summary_strategy="generative", phrase_summaries=phrase)
        processor = load_processor(spec, tmp_path, measured_digest=spec.digest())
        assert processor.phrase_summaries is phrase
