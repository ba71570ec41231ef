"""privproc installed by its chart on a real cluster: objects, the private path from the host,
gateway discovery, and faults (issue 14's must-shows, on any KUBECONFIG)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from privproc.client.ohttp_client import OhttpClient
from privproc.client.private import PrivateProcessingClient
from privproc.stackfile import StackFile
from privproc.wire import bhttp, ohttp
from tests.k8s.cluster import Cluster, is_ready, wait_until

pytestmark = pytest.mark.timeout(900)

EXAMPLE_CHAT = Path(__file__).resolve().parents[2] / "services" / "privproc" / "examples" / "team-chat.json"
#: The first start of a predictor converts its model and loads it, then attests.
PREDICTOR_START_SECONDS = 420.0


def _privproc(cluster: Cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privproc", *args, "--stack", str(cluster.stack_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _document(cluster: Cluster) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(cluster.stack_path.read_text())
    return document


def _predictor_targets(cluster: Cluster, pods: list[dict[str, Any]]) -> set[str]:
    port = _container_port(cluster, "predictor", "grpc")
    return {f"{p['status']['podIP']}:{port}" for p in pods}


def _container_port(cluster: Cluster, component: str, name: str) -> int:
    spec = cluster.workload(component)["spec"]["template"]["spec"]
    for container in spec["containers"]:
        for port in container.get("ports", []):
            if port.get("name") == name:
                return int(port["containerPort"])
    raise AssertionError(f"{component} declares no {name} port")


def _gateway_events(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [e for e in cluster.events("gateway", "gateway") if e["event"] == f"gateway.{name}"]


def _admitted_by_every_gateway(cluster: Cluster, target: str) -> bool:
    gateways = {p["metadata"]["name"] for p in cluster.ready_pods("gateway")}
    admitted = {
        e["_pod"] for e in _gateway_events(cluster, "predictor_admitted") if e.get("target") == target
    }
    return gateways <= admitted


def _summarize(cluster: Cluster) -> dict[str, Any]:
    result = _privproc(cluster, "summarize", str(EXAMPLE_CHAT), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


# -- the objects -------------------------------------------------------------------------------


def test_every_pod_is_running_and_ready(cluster: Cluster) -> None:
    pods = cluster.pods()
    assert pods
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
    for component in ("relay", "gateway", "acs", "cdn", "verifier", "predictor", "ledger", "witness"):
        assert component in components
    # The hooks' pods (release Job, helm test) run to completion; every service pod must be Ready.
    hooks = ("release", "test")
    not_ready = [
        p["metadata"]["name"]
        for p in pods
        if p["metadata"]["labels"].get("app.kubernetes.io/component") not in hooks and not is_ready(p)
    ]
    assert not_ready == []


def test_predictor_pods_carry_the_confidential_pool_hardening(cluster: Cluster) -> None:
    values = json.loads(
        cluster.run("get", "deployment", "-l", cluster.selector("predictor"), "-o", "json").stdout
    )
    assert values["items"]
    for pod in cluster.pods("predictor"):
        spec = pod["spec"]
        assert spec.get("runtimeClassName"), "predictor pods run under a runtime class"
        assert any(t.get("key") == "privproc.dev/confidential" for t in spec.get("tolerations", []))
        assert spec.get("automountServiceAccountToken") is False
        mounts = [m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])]
        assert not any("serviceaccount" in m for m in mounts)
        assert {c["name"] for c in spec["containers"]} >= {"predictor", "log-sidecar"}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context.get("runAsNonRoot", spec["securityContext"].get("runAsNonRoot")) is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for volume in spec["volumes"]:
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("medium") == "Memory", volume["name"]
            else:
                assert "secret" in volume or "configMap" in volume or "projected" in volume, volume
        # The two containers share only the sidecar's socket volume.
        by_name = {c["name"]: {m["name"] for m in c.get("volumeMounts", [])} for c in spec["containers"]}
        shared = by_name["predictor"] & by_name["log-sidecar"]
        assert len(shared) == 1


def test_network_policies_exist_as_specified(cluster: Cluster) -> None:
    policies = cluster.json("get", "networkpolicies", "-l", cluster.selector())["items"]
    by_component = {p["metadata"].get("labels", {}).get("app.kubernetes.io/component"): p for p in policies}
    # Default deny for the release's pods: a policy selecting them all with no ingress rule.
    assert any(
        p["spec"].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/instance")
        == cluster.release
        and "Ingress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("ingress")
        for p in policies
    )
    predictor = by_component["predictor"]["spec"]
    sources = [peer for rule in predictor["ingress"] for peer in rule.get("from", [])]
    assert sources and all(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "gateway"
        for peer in sources
    )
    gateway = by_component["gateway"]["spec"]
    ohttp_from = [
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        for rule in gateway["ingress"]
        for peer in rule.get("from", [])
    ]
    assert "relay" in ohttp_from


# -- the private path from the host ------------------------------------------------------------


def test_summarize_and_suggest_from_the_host_through_the_cluster_relay(cluster: Cluster) -> None:
    document = _document(cluster)
    assert _privproc(cluster, "wallet", "refill").returncode == 0
    summary = _summarize(cluster)
    assert summary["refused"] is None and summary["summary"]
    receipt = summary["receipt"]
    assert receipt["measurement"] == document["attestation"]["measurement"]
    # Its release as logged by this install's release Job (an upgrade logs the same image again).
    assert 0 <= receipt["measurement_log_index"] <= document["attestation"]["release_log_index"]
    suggestion = _privproc(cluster, "suggest", "can we move the meeting to friday", "--json")
    assert suggestion.returncode == 0, suggestion.stderr[-2000:]
    assert json.loads(suggestion.stdout)["receipt"]["measurement"] == document["attestation"]["measurement"]


def test_the_logged_release_names_the_predictor_pods_image(cluster: Cluster) -> None:
    document = _document(cluster)
    proof = _privproc(
        cluster, "ledger", "prove", "--index", str(document["attestation"]["release_log_index"])
    )
    assert proof.returncode == 0, proof.stderr
    verified = subprocess.run(
        [
            sys.executable,
            "-m",
            "privproc",
            "ledger",
            "verify",
            "--stack",
            str(cluster.stack_path),
            "--proof",
            "-",
        ],
        input=proof.stdout,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    entry = json.loads(verified.stdout)["entry"]
    assert entry["kind"] == "cvm-release" and entry["measurements"] == [
        document["attestation"]["measurement"]
    ]
    image_ids = {
        s["imageID"].rsplit("@", 1)[-1]
        for p in cluster.pods("predictor")
        for s in p["status"]["containerStatuses"]
    }
    # The image digest measured into the release is the one the node runs for the predictor.
    assert image_ids == {entry["image_digest"]}


def test_helm_test_runs_a_private_request_from_a_client_pod(cluster: Cluster) -> None:
    from tests.k8s.tooling import helm_or_skip

    result = subprocess.run(
        [str(helm_or_skip()), "--kubeconfig", str(cluster.config), "test", cluster.release,
         "-n", cluster.namespace, "--timeout", "10m"],
        capture_output=True,
        text=True,
        timeout=700,
        check=False,
    )  # fmt: skip
    pods = [p for p in cluster.pods("test") if p["spec"].get("restartPolicy") == "Never"]
    logs = "".join(
        cluster.run("logs", p["metadata"]["name"], "--all-containers", check=False).stdout for p in pods
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:] + logs[-2000:]
    assert "Succeeded" in result.stdout
    assert "summary of" in logs and "the client verified" in logs


# -- discovery ---------------------------------------------------------------------------------


def _scale_predictors(cluster: Cluster, replicas: int) -> None:
    name = cluster.workload("predictor")["metadata"]["name"]
    cluster.run("scale", f"deployment/{name}", f"--replicas={replicas}")


def test_gateways_admit_and_drop_predictors_as_they_scale(cluster: Cluster) -> None:
    [first] = cluster.ready_pods("predictor")
    [first_target] = _predictor_targets(cluster, [first])
    wait_until(
        "every gateway to admit the predictor", lambda: _admitted_by_every_gateway(cluster, first_target), 120
    )
    _scale_predictors(cluster, 2)
    try:
        pods = wait_until(
            "a second predictor Ready",
            lambda: p if len(p := cluster.ready_pods("predictor")) == 2 else None,
            PREDICTOR_START_SECONDS,
            5,
        )
        [second_target] = _predictor_targets(cluster, pods) - {first_target}
        wait_until(
            "every gateway to admit the second predictor",
            lambda: _admitted_by_every_gateway(cluster, second_target),
            180,
            2,
        )
        assert _summarize(cluster)["summary"]
    finally:
        _scale_predictors(cluster, 1)
    # The newest pod goes first when a Deployment scales down; whichever went, every gateway drops it.
    remaining = wait_until(
        "one predictor left", lambda: p if len(p := cluster.pods("predictor")) == 1 else None, 180, 2
    )
    [kept] = _predictor_targets(cluster, remaining)
    [gone] = {first_target, second_target} - {kept}

    def dropped_everywhere() -> bool:
        gateways = {p["metadata"]["name"] for p in cluster.ready_pods("gateway")}
        dropped = {
            e["_pod"] for e in _gateway_events(cluster, "predictor_dropped") if e.get("target") == gone
        }
        return gateways <= dropped

    wait_until("every gateway to drop the removed predictor", dropped_everywhere, 120, 2)
    assert _summarize(cluster)["summary"]


ROGUE_SERVER = """
import asyncio, datetime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio, ssl_server_credentials
from grpc_health.v1 import health, health_pb2_grpc

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "predictor")])
now = datetime.datetime.now(datetime.UTC)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256()))
pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
pem_cert = cert.public_bytes(serialization.Encoding.PEM)

async def main():
    server = aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_secure_port("0.0.0.0:PORT", ssl_server_credentials([(pem_key, pem_cert)]))
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""


def test_a_predictor_whose_certificate_does_not_check_out_is_never_routed_to(cluster: Cluster) -> None:
    """A pod the predictor Service selects, serving TLS with a certificate the verifier never issued."""
    predictor = cluster.workload("predictor")
    template = predictor["spec"]["template"]
    port = _container_port(cluster, "predictor", "grpc")
    image = next(c["image"] for c in template["spec"]["containers"] if c["name"] == "predictor")
    rogue = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rogue-predictor", "labels": template["metadata"]["labels"]},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": template["spec"].get("securityContext", {}),
            "tolerations": template["spec"].get("tolerations", []),
            "containers": [
                {
                    "name": "predictor",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/opt/privproc/bin/python", "-c", ROGUE_SERVER.replace("PORT", str(port))],
                    "ports": [{"name": "grpc", "containerPort": port}],
                    "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                    },
                }
            ],
        },
    }
    applied = subprocess.run(
        [cluster.kubectl, "--kubeconfig", str(cluster.config), "-n", cluster.namespace, "apply", "-f", "-"],
        input=json.dumps(rogue),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    try:
        pod = wait_until(
            "the rogue pod Ready",
            lambda: next(
                (
                    p
                    for p in cluster.pods("predictor")
                    if p["metadata"]["name"] == "rogue-predictor" and is_ready(p)
                ),
                None,
            ),
            120,
            2,
        )
        target = f"{pod['status']['podIP']}:{port}"

        def refused_everywhere() -> bool:
            gateways = {p["metadata"]["name"] for p in cluster.ready_pods("gateway")}
            refused = {
                e["_pod"] for e in _gateway_events(cluster, "predictor_refused") if e.get("target") == target
            }
            return gateways <= refused

        wait_until("every gateway to refuse the rogue pod", refused_everywhere, 120, 2)
        for _ in range(3):
            assert _summarize(cluster)["summary"]
        assert not [e for e in _gateway_events(cluster, "predictor_admitted") if e.get("target") == target]
    finally:
        cluster.run("delete", "pod", "rogue-predictor", "--wait=true", check=False)


# -- faults ------------------------------------------------------------------------------------


def test_a_deleted_predictor_is_replaced_attested_and_admitted_during_traffic(cluster: Cluster) -> None:
    [old] = cluster.ready_pods("predictor")
    stop = threading.Event()
    outcomes: list[bool] = []

    def traffic() -> None:
        while not stop.is_set():
            # Tokens ahead of need (a request that met no predictor may have spent one).
            _privproc(cluster, "wallet", "refill", timeout=120)
            result = _privproc(cluster, "suggest", "see you at noon", "--json", timeout=120)
            outcomes.append(result.returncode == 0)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        cluster.run("delete", "pod", old["metadata"]["name"], "--wait=false")
        [new] = wait_until(
            "a replacement predictor Ready",
            lambda: [
                p for p in cluster.ready_pods("predictor") if p["metadata"]["uid"] != old["metadata"]["uid"]
            ],
            PREDICTOR_START_SECONDS,
            5,
        )
        [target] = _predictor_targets(cluster, [new])
        wait_until(
            "every gateway to admit the replacement",
            lambda: _admitted_by_every_gateway(cluster, target),
            180,
            2,
        )
        count = len(outcomes)
        wait_until("two requests after the replacement", lambda: len(outcomes) >= count + 2, 300, 2)
    finally:
        stop.set()
        worker.join(timeout=150)
    assert outcomes[-2:] == [True, True]
    # The replacement attested: the verifier issued it a certificate (the gateway's admission checked it).
    assert _summarize(cluster)["receipt"]["measurement"] == _document(cluster)["attestation"]["measurement"]


async def _spend_through(stack: StackFile, gateway_url: str) -> str:
    """A whole private request sent straight to one gateway replica; the token header it spent."""
    document = {**stack.raw, "relay": {**stack.raw["relay"], "ohttp_url": gateway_url}}
    document.pop("_path", None)
    direct = StackFile.from_json(document)
    spent: list[str] = []
    async with PrivateProcessingClient.from_stack(
        direct, batch_size=1, allow_linkable_purchase=True
    ) as client:
        original = client.wallet.spend

        async def recording(challenge: Any) -> Any:
            token = await original(challenge)
            spent.append(token.header)
            return token

        client.wallet.spend = recording  # type: ignore[method-assign]
        response, _ = await client.suggest_rewrite("the token goes to one replica")
        assert response.text
    [header] = spent
    return header


async def _replay(stack: StackFile, gateway_url: str, header: str) -> int:
    document = {**stack.raw, "relay": {**stack.raw["relay"], "ohttp_url": gateway_url}}
    document.pop("_path", None)
    async with OhttpClient.from_stack(StackFile.from_json(document)) as client:
        request = bhttp.encode_request(client._session_request(b"", header))
        async with aiohttp.ClientSession() as session:
            async with session.get(gateway_url) as resp:
                config, _ = ohttp.select_key_config(ohttp.decode_key_config_list(await resp.read()))
            payload, context = ohttp.encapsulate_request(config, request)
            async with session.post(
                gateway_url, data=payload, headers={"Content-Type": ohttp.MEDIA_TYPE_REQUEST}
            ) as resp:
                answer = await resp.read()
    return bhttp.decode_response(context.decapsulate_response(answer)).status


def test_a_token_spent_through_one_gateway_replica_is_refused_by_the_other(cluster: Cluster) -> None:
    gateways = cluster.ready_pods("gateway")
    assert len(gateways) >= 2, "the spent-token set is shared by at least two gateway replicas"
    port = _container_port(cluster, "gateway", "http")
    stack = StackFile.load(cluster.stack_path)
    with cluster.port_forward(gateways[0], port) as first, cluster.port_forward(gateways[1], port) as second:
        first_url, second_url = (f"http://{a}/.well-known/ohttp-gateway" for a in (first, second))
        header = asyncio.run(_spend_through(stack, first_url))
        assert asyncio.run(_replay(stack, second_url, header)) == 401
        assert asyncio.run(_replay(stack, first_url, header)) == 401
