"""Helpers of the Kubernetes tests: finding helm, rendering and linting the chart.

Helm is looked up once, here: ``PRIVPROC_HELM``, else ``helm`` on PATH, else
the binary ``k8s/local/install.sh`` caches
(``${PRIVPROC_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/privproc/k8s}/helm-v3.18.0/helm``).
Without one the chart tests are skipped, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "privproc"
HELM_VERSION = "v3.18.0"
#: Values sets of the must-show, by name (files relative to the repository); "default" is none.
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "default": (),
    "all-in-one": ("charts/privproc/ci/all-in-one-values.yaml",),
    "relay-only": ("charts/privproc/ci/relay-only-values.yaml",),
    "ledger-witness-only": ("charts/privproc/ci/ledger-witness-only-values.yaml",),
    "gpu-predictor": ("charts/privproc/ci/gpu-predictor-values.yaml",),
    # This host's install, with sample public keys (k8s-up passes the real keys.yaml).
    "local": ("k8s/local/values.yaml", "tests/k8s/sample-keys.yaml"),
}


def k8s_cache() -> Path:
    """Where k8s/local/install.sh keeps Kubernetes, helm and images."""
    if cache := os.environ.get("PRIVPROC_K8S_CACHE"):
        return Path(cache)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "privproc" / "k8s"


def find_helm() -> Path | None:
    """The helm binary: PRIVPROC_HELM, helm on PATH, or the cached one; None when there is none."""
    if given := os.environ.get("PRIVPROC_HELM"):
        return Path(given)
    if on_path := shutil.which("helm"):
        return Path(on_path)
    cached = k8s_cache() / f"helm-{HELM_VERSION}" / "helm"
    return cached if cached.is_file() else None


def helm_or_skip() -> Path:
    """The helm binary, or skip the test (fail it under CI=true): the chart tests need helm."""
    helm = find_helm()
    if helm is None:
        message = "no helm: set PRIVPROC_HELM, put helm on PATH, or run k8s/local/install.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return helm


def values_args(files: Iterable[str]) -> list[str]:
    return [arg for name in files for arg in ("-f", str(REPO / name))]


def helm(helm_binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run helm (no cluster involved: lint and template only); stdout and stderr captured."""
    return subprocess.run(
        [str(helm_binary), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def lint(helm_binary: Path, files: Iterable[str], *extra: str) -> subprocess.CompletedProcess[str]:
    """``helm lint --strict`` of the chart with these values files."""
    return helm(helm_binary, "lint", "--strict", str(CHART), *values_args(files), *extra)


def render(
    helm_binary: Path,
    files: Iterable[str] = (),
    *extra: str,
    release: str = "pp",
    namespace: str = "privproc",
) -> list[dict[str, Any]]:
    """``helm template`` of the chart: the rendered objects (helm's failure raises AssertionError)."""
    result = helm(
        helm_binary, "template", release, str(CHART), "--namespace", namespace, *values_args(files), *extra
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(helm_binary: Path, files: Iterable[str] = (), *extra: str) -> str:
    """The error ``helm template`` fails with (AssertionError if it succeeds)."""
    result = helm(helm_binary, "template", "pp", str(CHART), *values_args(files), *extra)
    assert result.returncode != 0, "rendered, though it should have failed"
    return result.stderr


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of this kind and name."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``Kind/name`` -> the pod spec of every workload, hook Job and Pod rendered."""
    specs: dict[str, dict[str, Any]] = {}
    for obj in objects:
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs[key] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            specs[key] = obj["spec"]
    return specs
