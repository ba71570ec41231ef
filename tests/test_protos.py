"""Generated protobuf code is committed, and `make protos` reproduces it byte for byte."""

from __future__ import annotations

from pathlib import Path

from tools.gen_protos import GENERATED_SUFFIXES, PACKAGE_DIR, ROOT, generate


def test_generated_code_is_reproducible(tmp_path: Path) -> None:
    fresh = {p.name: p.read_bytes() for p in generate(tmp_path)}
    committed_dir = ROOT / "services" / PACKAGE_DIR
    committed = {
        p.name: p.read_bytes() for p in committed_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    }
    assert sorted(fresh) == sorted(committed), "generated file set differs: run `make protos`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code (run `make protos`): {stale}"


def test_every_service_has_a_proto() -> None:
    names = {p.stem for p in (ROOT / "protos" / PACKAGE_DIR).glob("*.proto")}
    assert {"common", "acs", "cdn", "relay", "gateway", "verifier", "ledger", "predictor"} <= names
