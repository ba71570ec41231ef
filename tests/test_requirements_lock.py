"""requirements/*.txt, the image's lock, stay in step with pyproject.toml (regenerate: make requirements)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)")


def pins(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """Each pinned package of a hash-pinned requirements file: its version and its hashes."""
    found: dict[str, tuple[Version, list[str]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = match.group(1).lower().replace("_", "-")
            found[current] = (Version(match.group(2)), [])
        elif "--hash=sha256:" in line and current:
            found[current][1].append(line.split("--hash=sha256:")[1].split()[0])
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(spec) for spec in project["dependencies"] + project["optional-dependencies"]["predictor"]
    ]


def test_every_runtime_dependency_is_locked_within_its_declared_range() -> None:
    locked = pins(ROOT / "requirements" / "runtime.txt")
    for requirement in declared():
        name = requirement.name.lower().replace("_", "-")
        assert name in locked, f"{name} is declared but not locked: run make requirements"
        version = locked[name][0]
        # torch is locked as its CPU build, 2.13.0+cpu, which "==2.13.0" admits.
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name} {version} is outside {requirement}"
        )


def test_every_locked_file_carries_hashes_and_torch_is_the_cpu_build() -> None:
    for lock in ("runtime.txt", "models.txt"):
        for name, (_, hashes) in pins(ROOT / "requirements" / lock).items():
            assert hashes, f"{lock}: {name} has no hash"
            assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes)
    assert pins(ROOT / "requirements" / "runtime.txt")["torch"][0].local == "cpu"


def test_the_models_lock_is_the_makefile_model_list() -> None:
    makefile = (ROOT / "Makefile").read_text()
    model_line = next(line for line in makefile.splitlines() if line.startswith("MODEL_PACKAGES"))
    in_makefile = {
        spec.split("==")[0]: Version(spec.split("==")[1]) for spec in model_line.split(":=")[1].split()
    }
    locked = {name: version for name, (version, _) in pins(ROOT / "requirements" / "models.txt").items()}
    assert locked == in_makefile
