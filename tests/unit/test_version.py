"""The version is written once, in pyproject.toml, and read from the installed metadata."""

from __future__ import annotations

import tomllib
from pathlib import Path

import privproc

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_package_reports_the_pyproject_version() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert privproc.__version__ == declared
