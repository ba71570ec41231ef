"""The benchmarks run and print ratios (figures themselves are never asserted: machines are noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(960)
def test_bench_quick_runs_and_reports_ratios() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=900,  # privproc up twice (private, load) and an in-process stack twice
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    results = report["results"]
    assert all(r["ops_per_s"] > 0 and r["baseline_ops_per_s"] > 0 and r["ratio"] > 0 for r in results)
    names = {r["name"] for r in results}
    assert {"client encapsulate_request", "gateway grpc Handle (ohttp health)"} <= names
    assert any("http POST" in name for name in names) and any("relay" in name for name in names)
    # The privacy tax comes with its breakdown, every part a number of milliseconds.
    (breakdown,) = [n for n in report["notes"] if "where the added time goes" in n]
    assert breakdown.count(" ms") >= 10 and "a stage did not run" not in breakdown
    (tax,) = [r for r in results if r["name"] == "privacy tax, tiny model (rewrite)"]
    assert "x one plain OHTTP round trip" in tax["note"]
    # Streaming and load, tiny model: every figure there, and no functional error (checked above).
    assert {
        "time to first text, tiny model (rewrite)",
        "total time, streamed vs plain, tiny model (rewrite)",
        "8 clients, tiny model (rewrite)",
        "predictor CPU per request, tiny model (rewrite)",
    } <= names
