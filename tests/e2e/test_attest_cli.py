"""``privproc attest`` on REAL hardware evidence (tests/vectors/sev-snp)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import SEV_SNP_VECTORS


def _attest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privproc", "attest", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_attest_verify_real_milan_report(tmp_path: Path) -> None:
    folder = SEV_SNP_VECTORS
    report, vcek, chain = folder / "attestation.bin", folder / "vcek.testcer", folder / "ask_ark_milan.pem"
    refused = _attest("verify", str(report), "--vcek", str(vcek), "--chain", str(chain), "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["reasons"] == ["debug_allowed"]
    accepted = _attest("verify", str(report), "--vcek", str(vcek), "--chain", str(chain), "--allow-debug")
    assert (
        accepted.returncode == 0 and accepted.stdout.startswith("verified") and "Milan-B0" in accepted.stdout
    )
    # The same report as hex works too; another product's chain does not.
    hex_report = tmp_path / "report.hex"
    hex_report.write_text(report.read_bytes().hex())
    assert (
        _attest(
            "verify", str(hex_report), "--vcek", str(vcek), "--chain", str(chain), "--allow-debug"
        ).returncode
        == 0
    )
    genoa = _attest(
        "verify", str(report), "--vcek", str(vcek), "--chain", str(folder / "ask_ark_genoa.pem"), "--json"
    )
    assert genoa.returncode == 1 and json.loads(genoa.stdout)["reasons"] == ["chain"]
    shown = json.loads(_attest("show", str(report), "--json").stdout)
    assert shown["version"] == 2 and shown["debug_allowed"] is True and shown["vmpl"] == 0
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00" * 10)
    bad = _attest("show", str(garbage))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
