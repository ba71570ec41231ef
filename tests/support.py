"""Helpers for tests: vector files and paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parent / "vectors"
#: Conformance data beside the checkout (read in place, never copied into the project).
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def load_vector(name: str) -> Any:
    """A JSON vector file from ``tests/vectors/``."""
    return json.loads((VECTORS / name).read_text())
