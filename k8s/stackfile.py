"""Write the host's ``stack.json`` for a privproc release running on the local cluster.

Each service prints its endpoints on its ready line (``{"ready": {...}}``, the same line ``privproc
up`` reads); this takes them from the pods' logs and rewrites every in-cluster address that a
NodePort exposes to ``NODE_IP:NODEPORT``, so the endpoints stay the services' own, not a copy. What
no NodePort exposes (the gateway, the verifier, the predictor) keeps its in-cluster address: a host
client must never need them, and one that tried would fail. Public keys come from ``keys.yaml``
(``privproc cluster secrets``), the logged release from the release Job's output, and the test
account's credential from its Secret (the file is written 0600, like ``privproc up``'s).

Run with the host's privproc virtualenv (it validates the document with privproc's own reader).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from privproc import stackfile

COMPONENT_LABEL = "app.kubernetes.io/component"
INSTANCE_LABEL = "app.kubernetes.io/instance"
#: Sections of stack.json and the component whose ready line fills each.
SECTIONS = ("relay", "gateway", "cdn", "acs", "ledger", "witness", "verifier")
#: The addresses services print: the IPv4 or IPv6 literal they bound (0.0.0.0 in a pod).
_ADDRESS = re.compile(r"(?P<host>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})")


def kubectl(binary: str, namespace: str, *args: str) -> str:
    return subprocess.run(  # noqa: S603 -- kubectl from lib.sh, arguments of our own
        [binary, "-n", namespace, *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def ready_line(log: str) -> dict[str, Any]:
    for line in log.splitlines():
        if '"ready"' not in line:
            continue
        try:
            ready = json.loads(line).get("ready")
        except (ValueError, AttributeError):
            continue
        if isinstance(ready, dict):
            return ready
    raise SystemExit("no ready line in the pod's log")


def exposed_ports(service: dict[str, Any], pod: dict[str, Any]) -> dict[int, int]:
    """Container port -> node port, for a NodePort Service (target ports by number or by name)."""
    named = {
        port["name"]: port["containerPort"]
        for container in pod["spec"]["containers"]
        for port in container.get("ports", [])
        if "name" in port
    }
    ports: dict[int, int] = {}
    for port in service["spec"].get("ports", []):
        target = port.get("targetPort", port["port"])
        target = named.get(target) if isinstance(target, str) else target
        if "nodePort" in port and isinstance(target, int):
            ports[target] = port["nodePort"]
    return ports


def rewrite(value: Any, ports: dict[int, int], node_ip: str, in_cluster: str) -> Any:
    """Every ``host:port`` whose port a NodePort exposes becomes ``node_ip:nodePort``; any other
    becomes the Service's in-cluster name (never 0.0.0.0, which a host would take for itself)."""
    if isinstance(value, dict):
        return {k: rewrite(v, ports, node_ip, in_cluster) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, ports, node_ip, in_cluster) for v in value]
    if isinstance(value, str):

        def swap(match: re.Match[str]) -> str:
            port = int(match["port"])
            return f"{node_ip}:{ports[port]}" if port in ports else f"{in_cluster}:{port}"

        return _ADDRESS.sub(swap, value)
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--release", required=True)
    parser.add_argument("--node-ip", required=True)
    parser.add_argument("--keys", type=Path, required=True, help="keys.yaml from privproc cluster secrets")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    keys = yaml.safe_load(args.keys.read_text())["keys"]
    selector = f"{INSTANCE_LABEL}={args.release}"
    pods = json.loads(kubectl(args.kubectl, args.namespace, "get", "pods", "-l", selector, "-o", "json"))
    services = json.loads(
        kubectl(args.kubectl, args.namespace, "get", "services", "-l", selector, "-o", "json")
    )
    document: dict[str, Any] = {}
    for section in SECTIONS:
        pod = next(
            (
                p
                for p in pods["items"]
                if p["metadata"]["labels"].get(COMPONENT_LABEL) == section
                and p["status"].get("phase") == "Running"
            ),
            None,
        )
        if pod is None:
            raise SystemExit(f"no running {section} pod")
        service = next(
            (s for s in services["items"] if s["metadata"]["labels"].get(COMPONENT_LABEL) == section), None
        )
        if service is None:
            raise SystemExit(f"no {section} Service")
        ports = exposed_ports(service, pod) if service["spec"].get("type") == "NodePort" else {}
        in_cluster = f"{service['metadata']['name']}.{args.namespace}.svc"
        container = pod["spec"]["containers"][0]["name"]
        log = kubectl(args.kubectl, args.namespace, "logs", pod["metadata"]["name"], "-c", container)
        document[section] = rewrite(ready_line(log), ports, args.node_ip, in_cluster)
    document["ledger"].setdefault("vkey", keys["log"])
    document["ledger"].setdefault("origin", keys["logOrigin"])
    document["witness"].setdefault("vkey", keys["witness"])
    document["verifier"]["ca_cert"] = keys["verifierCa"]
    document["min_cosignatures"] = 1
    jobs = json.loads(
        kubectl(
            args.kubectl,
            args.namespace,
            "get",
            "pods",
            "-l",
            f"{selector},{COMPONENT_LABEL}=release",
            "-o",
            "json",
        )
    )
    release: dict[str, Any] = {}
    for pod in jobs["items"]:
        if pod["status"].get("phase") == "Succeeded":
            for line in kubectl(args.kubectl, args.namespace, "logs", pod["metadata"]["name"]).splitlines():
                with contextlib.suppress(ValueError):
                    printed = json.loads(line)
                    if isinstance(printed, dict) and "measurement" in printed:
                        release = printed
    if not release:
        raise SystemExit("the release Job has not logged the predictor's release")
    document["attestation"] = {
        "development_root": keys.get("developmentRoot"),
        "measurement": release["measurement"],
        "model_digest": release["model_digest"],
        "release_log_index": release["log_index"],
        "release_keys": [keys["release"]],
    }
    secret = json.loads(
        kubectl(args.kubectl, args.namespace, "get", "secret", f"{args.release}-test-account", "-o", "json")
    )
    document["demo_account"] = {
        name: base64.b64decode(secret["data"][name]).decode() for name in ("id", "credential")
    }
    stackfile.write(args.out, document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
