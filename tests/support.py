"""Helpers for tests: vector files and paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parent / "vectors"
#: Real SEV-SNP evidence (go-sev-guest's test data; see its SOURCES.md).
SEV_SNP_VECTORS = VECTORS / "sev-snp"


def load_vector(name: str) -> Any:
    """A JSON vector file from ``tests/vectors/``."""
    return json.loads((VECTORS / name).read_text())
