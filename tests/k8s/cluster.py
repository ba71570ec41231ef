"""The cluster under test, reached through ``kubectl`` with any ``KUBECONFIG``.

The cluster tests run against whatever cluster ``KUBECONFIG`` names (``make k8s-e2e`` brings up the
local one and writes ``.privproc/k8s/kubeconfig``; ``make kind-e2e`` does the same on kind), with
privproc installed by the chart as release ``PRIVPROC_K8S_RELEASE`` (default ``privproc``) in
namespace ``PRIVPROC_K8S_NAMESPACE`` (default ``privproc``), and the host's ``stack.json`` for that
release at ``PRIVPROC_K8S_STACK`` (default ``.privproc/k8s/stack.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.k8s.tooling import k8s_cache

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENT = "app.kubernetes.io/component"
INSTANCE = "app.kubernetes.io/instance"


def kubectl_binary() -> str:
    """``PRIVPROC_KUBECTL``, else ``kubectl`` on PATH, else the local cluster's cached one."""
    named = os.environ.get("PRIVPROC_KUBECTL") or shutil.which("kubectl")
    if named:
        return named
    cached = k8s_cache() / "kubernetes-v1.20.2" / "bin" / "kubectl"
    if cached.exists():
        return str(cached)
    raise RuntimeError("no kubectl: set PRIVPROC_KUBECTL or put kubectl on PATH")


def kubeconfig() -> Path:
    named = os.environ.get("KUBECONFIG")
    path = Path(named) if named else REPO_ROOT / ".privproc" / "k8s" / "kubeconfig"
    if not path.exists():
        raise RuntimeError(f"no kubeconfig at {path}: run `make k8s-up` or set KUBECONFIG")
    return path


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Cluster:
    """``kubectl`` in the release's namespace, and the release's objects by component."""

    kubectl: str
    config: Path
    namespace: str
    release: str
    stack_path: Path

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.config), "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def selector(self, component: str | None = None) -> str:
        labels = f"{INSTANCE}={self.release}"
        return f"{labels},{COMPONENT}={component}" if component else labels

    def pods(self, component: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("get", "pods", "-l", self.selector(component))["items"]
        return [p for p in items if p["metadata"].get("deletionTimestamp") is None]

    def ready_pods(self, component: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(component) if is_ready(p)]

    def workload(self, component: str) -> dict[str, Any]:
        for kind in ("deployments", "statefulsets"):
            items = self.json("get", kind, "-l", self.selector(component))["items"]
            if items:
                found: dict[str, Any] = items[0]
                return found
        raise AssertionError(f"no workload for {component}")

    def logs(self, pod: dict[str, Any], container: str | None = None) -> str:
        args = ["logs", pod["metadata"]["name"]]
        if container:
            args += ["-c", container]
        return self.run(*args).stdout

    @contextlib.contextmanager
    def port_forward(self, pod: dict[str, Any], port: int) -> Iterator[str]:
        """``127.0.0.1:LOCAL`` forwarded to ``port`` of ``pod`` while the block runs (any cluster,
        kind included, where pod addresses are not routed to the host)."""
        process = subprocess.Popen(  # our own kubectl and arguments
            [self.kubectl, "--kubeconfig", str(self.config), "-n", self.namespace, "port-forward",
             "--address", "127.0.0.1", f"pod/{pod['metadata']['name']}", f":{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+) ->", line)
            if match is None:
                raise AssertionError(f"kubectl port-forward said {line!r}")
            yield f"127.0.0.1:{match[1]}"
        finally:
            process.terminate()
            process.wait(timeout=10)

    def events(self, component: str, container: str | None = None) -> list[dict[str, Any]]:
        """Every event line of every pod of ``component`` (the JSON lines of their logs)."""
        found = []
        for pod in self.pods(component):
            for line in self.logs(pod, container).splitlines():
                if line.startswith("{"):
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    # Services print {"service": NAME, "line": EVENT} (runtime.events).
                    if isinstance(event, dict) and isinstance(event.get("line"), dict):
                        event = event["line"]
                    if isinstance(event, dict) and "event" in event:
                        found.append({**event, "_pod": pod["metadata"]["name"]})
        return found


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def cluster_from_environment() -> Cluster:
    stack = os.environ.get("PRIVPROC_K8S_STACK")
    return Cluster(
        kubectl=kubectl_binary(),
        config=kubeconfig(),
        namespace=os.environ.get("PRIVPROC_K8S_NAMESPACE", "privproc"),
        release=os.environ.get("PRIVPROC_K8S_RELEASE", "privproc"),
        stack_path=Path(stack) if stack else REPO_ROOT / ".privproc" / "k8s" / "stack.json",
    )
