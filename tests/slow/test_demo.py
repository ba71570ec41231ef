"""``privproc demo`` exactly as the README runs it: the real models (SmolLM2-135M + MiniLM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_privproc_up import run_demo

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)
def test_demo_with_the_embedded_default_models(tmp_path: Path) -> None:
    out = run_demo(tmp_path / "demo", timeout=1100)
    assert "SmolLM2-135M-Instruct" in out
    summary = out.split("summary:", 1)[1].split("the client verified", 1)[0]
    # The bundled chat is about an offsite; the salient points are kept, the chatter is not.
    assert "offsite" in summary.lower() and "coffee" not in summary.lower()
