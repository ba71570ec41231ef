"""Evidence framing, the SNP certificate table, and the configfs-tsm source's file protocol."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.attestation.evidence import (
    GUID_ASK,
    GUID_VCEK,
    Evidence,
    EvidenceType,
    encode_cert_table,
    parse_cert_table,
    snp_chain_from_table,
)
from privproc.attestation.sources import ConfigfsTsmSource
from privproc.errors import UnavailableError, WireError


def test_cert_table_round_trip_and_chain_order() -> None:
    table = encode_cert_table({GUID_VCEK: b"vcek-der", GUID_ASK: b"ask-der"})
    parsed = parse_cert_table(table)
    assert parsed == {GUID_VCEK: b"vcek-der", GUID_ASK: b"ask-der"}
    assert snp_chain_from_table(parsed) == (b"vcek-der", b"ask-der")
    with pytest.raises(WireError):
        snp_chain_from_table({GUID_ASK: b"x"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_cert_table_any_bytes(data: bytes) -> None:
    with contextlib.suppress(WireError):
        parse_cert_table(data)


def test_evidence_proto_round_trip_and_bounds() -> None:
    evidence = Evidence(EvidenceType.SEV_SNP, b"r" * 1184, (b"a", b"b"), b"aux")
    assert Evidence.decode(evidence.encode()) == evidence
    for bad in (b"\xff\xff", Evidence(EvidenceType.SEV_SNP, b"", tuple(b"c" for _ in range(9))).encode()):
        with pytest.raises(WireError):
            Evidence.decode(bad)


def test_configfs_tsm_source_reads_report_and_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    table = encode_cert_table({GUID_VCEK: b"vcek-der", GUID_ASK: b"ask-der"})
    real_mkdir = Path.mkdir

    def kernel_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self)
        if self.parent == root:  # what the kernel does on mkdir in configfs-tsm
            (self / "generation").write_text("0\n")
            (self / "outblob").write_bytes(b"R" * 1184)
            (self / "auxblob").write_bytes(table)
            (self / "provider").write_text("sev_guest\n")

    monkeypatch.setattr(Path, "mkdir", kernel_mkdir)
    original_write = Path.write_bytes

    def kernel_write(self: Path, data: bytes) -> int:
        written = original_write(self, data)
        if self.name == "inblob":
            (self.parent / "generation").write_text("1\n")
        return written

    monkeypatch.setattr(Path, "write_bytes", kernel_write)
    monkeypatch.setattr("os.rmdir", lambda path: None)
    evidence = ConfigfsTsmSource(root).evidence(b"\x01" * 64)
    assert evidence.type is EvidenceType.SEV_SNP and evidence.report == b"R" * 1184
    assert evidence.certificate_chain == (b"vcek-der", b"ask-der")
    with pytest.raises(ValueError):
        ConfigfsTsmSource(root).evidence(b"short")
    assert not ConfigfsTsmSource.available(tmp_path / "absent")
    with pytest.raises(UnavailableError):
        ConfigfsTsmSource(tmp_path / "absent").evidence(bytes(64))
