"""Which evidence a predictor serves: the simulator only when its development root is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from privproc.attestation.simulator import SimulatedSnp
from privproc.attestation.sources import CONFIGFS_TSM, ConfigfsTsmSource
from privproc.errors import ConfigError
from privproc.predictor.server import PredictorConfig, build, evidence_source

MEASUREMENT, HOST_DATA = b"\x01" * 48, b"\x02" * 32


def _config(tmp_path: Path, **options: object) -> PredictorConfig:
    return PredictorConfig(
        verifier_target="127.0.0.1:1", verifier_ca_file=tmp_path / "ca.pem", state_dir=tmp_path, **options
    )  # type: ignore[arg-type]


def test_a_named_development_root_is_the_simulator(tmp_path: Path) -> None:
    source = evidence_source(_config(tmp_path, simulator_dir=tmp_path / "sim"), MEASUREMENT, HOST_DATA)
    assert isinstance(source, SimulatedSnp)


def test_without_one_the_guest_reports_through_configfs_tsm(tmp_path: Path) -> None:
    source = evidence_source(_config(tmp_path), MEASUREMENT, HOST_DATA)
    assert isinstance(source, ConfigfsTsmSource) and source.root == CONFIGFS_TSM


@pytest.mark.skipif(CONFIGFS_TSM.is_dir(), reason="this host is a CVM with configfs-tsm")
def test_neither_is_a_clear_error_before_any_model_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no evidence source"):
        build(_config(tmp_path))
