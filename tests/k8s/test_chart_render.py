"""The Helm chart without a cluster: lint, schema validation of what it renders, and its policy.

Each values set of the must-show (and the default values) is linted with
``helm lint --strict`` and rendered with ``helm template``; the objects are
validated with ``kubernetes-validate --strict`` (its schemas start at
Kubernetes 1.25: the 1.20 rendering is validated against the oldest it has,
all but the policy/v1beta1 PodDisruptionBudgets, which no schema it has
knows), then read back: the predictor's hardening, the restricted pod
security of every pod, the NetworkPolicies, secrets kept out of values and
ConfigMaps, API versions chosen by ``.Capabilities``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from privproc.cli.config import schemas
from privproc.stackfile import StackFile
from tests.k8s import tooling
from tests.k8s.tooling import VALUE_SETS, find, pod_specs, render

#: Kubernetes versions rendered for: this host's cluster, and a current one.
OLD_KUBE = "1.20.2"
NEW_KUBE = "1.37.0"


@pytest.fixture(scope="module")
def helm() -> Path:
    return tooling.helm_or_skip()


@pytest.fixture(scope="module")
def validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("kubernetes-validate is not installed (the `k8s` extra)")
        pytest.skip("kubernetes-validate not installed: pip install -e '.[k8s]'")
    return kubernetes_validate


@pytest.fixture(scope="module")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    """Every values set rendered for a current Kubernetes."""
    return {name: render(helm, files, "--kube-version", NEW_KUBE) for name, files in VALUE_SETS.items()}


@pytest.fixture(scope="module")
def aio(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["all-in-one"]


# --- lint and schema validation --------------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
@pytest.mark.parametrize("kube", [OLD_KUBE, NEW_KUBE])
def test_lint_strict(helm: Path, name: str, kube: str) -> None:
    result = tooling.lint(helm, VALUE_SETS[name], "--kube-version", kube)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_kubernetes_validate_strict(helm: Path, validate: Any, name: str) -> None:
    versions = validate.utils.all_versions()
    newest, oldest = validate.latest_version(), min(versions, key=lambda v: tuple(map(int, v.split("."))))
    current = render(helm, VALUE_SETS[name], "--kube-version", NEW_KUBE)
    for obj in current:
        validate.validate(obj, newest, strict=True)
        validate.validate(obj, oldest, strict=True)
    unknown_to_schemas = []
    for obj in render(helm, VALUE_SETS[name], "--kube-version", OLD_KUBE):
        try:
            validate.validate(obj, oldest, strict=True)
        except validate.SchemaNotFoundError:
            unknown_to_schemas.append((obj["apiVersion"], obj["kind"]))
    # Only what 1.25 no longer serves (and the chart must render for 1.20) goes unvalidated.
    assert set(unknown_to_schemas) <= {("policy/v1beta1", "PodDisruptionBudget")}


def test_a_wrong_option_is_refused_by_the_schema(helm: Path) -> None:
    # The services' own schemas: a typo, an option the chart sets itself, a secret file.
    for bad in ("relay.config.rate=1", "relay.config.host=x", "gateway.config.cdn_credential_file=/x"):
        result = tooling.lint(helm, (), "--set", bad)
        assert result.returncode != 0 and "Additional property" in result.stdout, bad
    result = tooling.lint(helm, (), "--set", "predictor.config.model.dtype=float64")
    assert result.returncode != 0
    result = tooling.lint(helm, (), "--set", "relay.nodeSelector.pool=x", "--set", "relay.replica=2")
    assert result.returncode != 0 and "replica" in result.stdout


def test_config_maps_become_the_services_environment(aio: list[dict[str, Any]]) -> None:
    relay = find(aio, "Deployment", "pp-privproc-relay")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in relay["env"]}
    assert env["PRIVPROC_RELAY_RATE_PER_SECOND"] == "50"
    assert env["PRIVPROC_RELAY_HTTP_LIMITS_MAX_CONNECTIONS"] == "1000"
    declared = json.dumps(schemas(["relay"]))
    for name in env:
        if name.startswith("PRIVPROC_"):
            assert f'"x-privproc-env": "{name}"' in declared, name


# --- the predictor ---------------------------------------------------------------------------


def _predictor(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, "Deployment", "pp-privproc-predictor")["spec"]["template"]["spec"]
    return spec


def _args(container: dict[str, Any]) -> dict[str, str]:
    args = container["args"]
    return {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}


def test_predictor_pod_is_hardened(aio: list[dict[str, Any]]) -> None:
    pod = _predictor(aio)
    assert pod["runtimeClassName"] == "kata-qemu-snp"
    assert pod["nodeSelector"] == {"privproc.dev/pool": "confidential"}
    assert {"key": "privproc.dev/confidential", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    names = [c["name"] for c in pod["containers"]]
    assert sorted(names) == ["log-sidecar", "predictor"]
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["requests"] and container["resources"]["limits"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                assert volume["emptyDir"]["medium"] == "Memory", mount  # nothing reaches a disk
            else:
                assert "secret" in volume and mount["readOnly"] is True, mount
    assert all("emptyDir" in v or "secret" in v for v in volumes.values())
    # The sidecar shares the socket's memory volume and nothing else.
    sidecar = next(c for c in pod["containers"] if c["name"] == "log-sidecar")
    predictor = next(c for c in pod["containers"] if c["name"] == "predictor")
    assert [m["name"] for m in sidecar["volumeMounts"]] == ["log-socket"]
    assert _args(predictor)["--log-socket"] == _args(sidecar)["--socket-path"]
    assert (
        _args(sidecar)["--allowlist-digest"]
        == "9b2f6c1e0d4a3b5c7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
    )
    # Development: the simulator's root, read-only; the image digest is measured.
    assert _args(predictor)["--simulator-dir"] == "/var/run/secrets/privproc/simulator"
    assert volumes["simulator"]["secret"]["secretName"] == "pp-privproc-simulator"
    assert _args(predictor)["--image-digest"] == "sha256:" + "0123456789abcdef" * 4
    # Mutual TLS only: probed by TCP.
    assert predictor["readinessProbe"] == {"tcpSocket": {"port": "grpc"}, "periodSeconds": 10}
    assert predictor["startupProbe"]["failureThreshold"] * predictor["startupProbe"]["periodSeconds"] >= 300
    service = find(aio, "Service", "pp-privproc-predictor")
    assert service["spec"]["clusterIP"] == "None"


def test_gpu_predictor_on_real_hardware(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = _predictor(rendered["gpu-predictor"])
    predictor = next(c for c in pod["containers"] if c["name"] == "predictor")
    assert predictor["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert predictor["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert pod["runtimeClassName"] == "kata-qemu-nvidia-gpu-snp"
    assert "--simulator-dir" not in predictor["args"]  # configfs-tsm in the guest
    assert "simulator" not in {v["name"] for v in pod["volumes"]}
    assert _args(predictor)["--dtype"] == "bfloat16"
    assert _args(predictor)["--verifier"] == "verifier.privproc-verifier.svc.cluster.local:50051"
    assert _args(predictor)["--release-proofs-url"] == "https://cdn.keys.example/proofs/"
    deployment = find(rendered["gpu-predictor"], "Deployment", "pp-privproc-predictor")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.privproc.example/privproc@sha256:" + "0123456789abcdef" * 4


def test_release_job_measures_what_the_predictor_runs(aio: list[dict[str, Any]]) -> None:
    job = find(aio, "Job", "pp-privproc-release")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["cluster", "release"]
    release, predictor = (
        _args(container),
        _args(next(c for c in _predictor(aio)["containers"] if c["name"] == "predictor")),
    )
    for flag in ("--model", "--embedder", "--dtype", "--summary-strategy", "--image-digest"):
        assert release[flag] == predictor[flag], flag
    assert "--development" in container["args"]
    assert release["--key-file"] == "/var/run/secrets/privproc/release/publisher.key"
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "release",
        "secret": {"secretName": "pp-privproc-release", "defaultMode": 0o440},
    } in volumes


def test_release_job_on_real_hardware_names_its_minimum_tcb(helm: Path) -> None:
    objects = render(helm, VALUE_SETS["gpu-predictor"], "--set", "release.enabled=true")
    container = find(objects, "Job", "pp-privproc-release")["spec"]["template"]["spec"]["containers"][0]
    assert "--development" not in container["args"]
    assert _args(container)["--min-tcb"] == "bootloader=3,tee=0,snp=20,microcode=209"
    assert _args(container)["--ledger-target"] == "ledger.transparency.example:50051"


def test_release_job_can_be_turned_off(helm: Path) -> None:
    objects = render(helm, VALUE_SETS["all-in-one"], "--set", "release.enabled=false")
    assert not [o for o in objects if o["kind"] == "Job"]


# --- every pod -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_pod_passes_the_restricted_profile(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    specs = pod_specs(rendered[name])
    assert specs
    for key, pod in specs.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, key
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", key
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), key
        assert pod["automountServiceAccountToken"] is (key == "Deployment/pp-privproc-gateway"), key
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, key
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], key
            assert sc["readOnlyRootFilesystem"] is True, key
            assert sc.get("privileged", False) is False, key
            assert container["resources"]["requests"] and container["resources"]["limits"], key
            assert container.get("command") is None or container["image"].startswith(
                ("docker.io/library/redis", "localhost/privproc-redis")
            ), key  # the privproc image's entry point, never a shell
            assert "sh" not in (container.get("command") or [""])[0], key
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "secret", "configMap", "persistentVolumeClaim"}, key


SERVED = [("Deployment", "relay"), ("Deployment", "gateway"), ("Deployment", "cdn"),
          ("Deployment", "verifier"), ("StatefulSet", "ledger"), ("StatefulSet", "witness"),
          ("StatefulSet", "acs")]  # fmt: skip


def test_probes_are_the_grpc_health_check(helm: Path, aio: list[dict[str, Any]]) -> None:
    """gRPC probes where the cluster has them (1.24+); before, `privproc health` for readiness
    (exec) and the port for liveness (each exec is a Python start); a startup probe everywhere."""
    old = render(helm, VALUE_SETS["all-in-one"], "--kube-version", OLD_KUBE)
    for kind, name in SERVED:
        container = find(aio, kind, f"pp-privproc-{name}")["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["grpc"] == {"port": 50051}
        assert container["livenessProbe"]["grpc"] == {"port": 50051}
        assert container["startupProbe"]["tcpSocket"] == {"port": 50051}
        assert _args(container)["--host"] == "0.0.0.0"
        assert _args(container)["--grpc-port"] == "50051"
        on_120 = find(old, kind, f"pp-privproc-{name}")["spec"]["template"]["spec"]["containers"][0]
        assert on_120["readinessProbe"]["exec"]["command"] == [
            "/opt/privproc/bin/privproc", "health", "127.0.0.1:50051"
        ]  # fmt: skip
        assert on_120["livenessProbe"]["tcpSocket"] == {"port": 50051}
        assert "grpc" not in on_120["readinessProbe"] and "grpc" not in on_120["livenessProbe"]


def test_gateway_discovery_and_identity(aio: list[dict[str, Any]]) -> None:
    pod = find(aio, "Deployment", "pp-privproc-gateway")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "pp-privproc-gateway"
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    args = _args(gateway)
    assert args["--predictor-service"] == "privproc/pp-privproc-predictor"
    assert args["--redis-url"] == "redis://pp-privproc-redis.privproc.svc.cluster.local:6379/0"
    assert args["--mtls-cert-file"] == "/run/privproc/identity/tls.crt"
    assert args["--mtls-key-file"] == "/run/privproc/identity/tls.key"
    # Replicas share one OHTTP key schedule: the seed is the `ohttp.seed` key of PREFIX-gateway.
    secrets_dir = "/var/run/secrets/privproc/gateway"
    assert args["--ohttp-seed-file"] == f"{secrets_dir}/ohttp.seed"
    keys = next(m for m in gateway["volumeMounts"] if m["mountPath"] == secrets_dir)
    assert keys["readOnly"] is True
    mounted = {v["name"]: v for v in pod["volumes"]}[keys["name"]]
    assert mounted["secret"]["secretName"] == "pp-privproc-gateway"
    init = pod["initContainers"][0]
    assert init["args"][:2] == ["serve", "gateway-identity"] and "--once" in init["args"]
    renewal = next(c for c in pod["containers"] if c["name"] == "identity-renewal")
    assert "--once" not in renewal["args"] and _args(renewal)["--out-dir"] == "/run/privproc/identity"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["identity"]["emptyDir"]["medium"] == "Memory"
    # Only the identity containers mount the CA's key; the gateway gets the certificate alone.
    for container in [*pod["containers"], init]:
        mounted = {m["name"] for m in container["volumeMounts"]}
        assert ("verifier-ca" in mounted) == (container["name"] in ("identity", "identity-renewal"))
    assert volumes["verifier-ca-cert"]["secret"]["items"] == [{"key": "ca.pem", "path": "ca.pem"}]
    role = find(aio, "Role", "pp-privproc-gateway")
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get", "list", "watch"]},
    ]
    binding = find(aio, "RoleBinding", "pp-privproc-gateway")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pp-privproc-gateway", "namespace": "privproc"}
    ]
    assert not [o for o in aio if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_gateway_replicas_need_redis(helm: Path) -> None:
    error = tooling.render_error(helm, (), "--set", "gateway.replicas=2")
    assert "more than one replica needs Redis" in error
    error = tooling.render_error(helm, (), "--set", "gateway.hpa.enabled=true")
    assert "more than one replica needs Redis" in error
    objects = render(helm, (), "--set", "gateway.replicas=2", "--set", "redis.existingSecret=my-redis")
    gateway = find(objects, "Deployment", "pp-privproc-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert "--redis-url" not in gateway["args"]
    url = next(e for e in gateway["env"] if e["name"] == "PRIVPROC_GATEWAY_REDIS_URL")
    assert url["valueFrom"] == {"secretKeyRef": {"name": "my-redis", "key": "url"}}
    assert not [o for o in objects if o["metadata"]["name"] == "pp-privproc-redis"]


# --- components as install units -------------------------------------------------------------


def _components(objects: list[dict[str, Any]]) -> set[str]:
    return {
        o["metadata"]["labels"]["app.kubernetes.io/component"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job", "Pod")
    }


def test_third_parties_install_apart(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert _components(rendered["relay-only"]) == {"relay"}
    assert _components(rendered["ledger-witness-only"]) == {"ledger", "witness"}
    assert _components(rendered["gpu-predictor"]) == {"gateway", "predictor"}
    assert _components(rendered["all-in-one"]) == {
        "relay", "gateway", "predictor", "cdn", "verifier", "ledger", "witness", "acs", "redis",
        "release", "test",
    }  # fmt: skip
    relay = find(rendered["relay-only"], "Deployment", "pp-privproc-relay")["spec"]["template"]["spec"]
    assert (
        _args(relay["containers"][0])["--gateway-url"]
        == "https://gateway.privproc.example/.well-known/ohttp-gateway"
    )
    gateway = find(rendered["gpu-predictor"], "Deployment", "pp-privproc-gateway")["spec"]["template"]["spec"]
    args = _args(gateway["containers"][0])
    assert args["--ledger"] == "ledger.transparency.example:50051"
    assert args["--redis-url"] == "redis://redis.privproc-redis.svc.cluster.local:6379/0"


def test_a_missing_peer_address_is_a_clear_error(helm: Path) -> None:
    error = tooling.render_error(helm, VALUE_SETS["relay-only"], "--set", "relay.gatewayUrl=")
    assert "relay.gatewayUrl" in error
    error = tooling.render_error(helm, (), "--set", "ledger.enabled=false")
    assert "external.ledgerTarget" in error


def test_local_values_fit_this_host(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["local"]
    node_ports = {
        (o["metadata"]["name"], p["name"]): p["nodePort"]
        for o in objects
        if o["kind"] == "Service" and o["spec"].get("type") == "NodePort"
        for p in o["spec"]["ports"]
    }
    exposed = {name.removeprefix("pp-privproc-") for name, _ in node_ports}
    assert exposed == {"relay", "cdn", "acs", "ledger", "witness"}
    assert all(30000 <= port <= 32767 for port in node_ports.values())
    assert len(set(node_ports.values())) == len(node_ports)
    cpu = 0.0
    for key, pod in pod_specs(objects).items():
        replicas = next(
            (o["spec"].get("replicas", 1) for o in objects if f"{o['kind']}/{o['metadata']['name']}" == key),
            1,
        )
        for container in pod["containers"]:
            assert container["image"].startswith("localhost/"), key
            assert container["imagePullPolicy"] == "Never", key
            request = str(container["resources"]["requests"]["cpu"])
            cpu += replicas * (float(request[:-1]) / 1000 if request.endswith("m") else float(request))
    assert cpu < 1.5  # two cores, the control plane beside
    assert find(objects, "Deployment", "pp-privproc-gateway")["spec"]["replicas"] == 2
    assert not [o for o in objects if o["kind"] == "StatefulSet" and o["spec"].get("volumeClaimTemplates")]


# --- NetworkPolicies -------------------------------------------------------------------------


def _policy(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, "NetworkPolicy", f"pp-privproc-{component}")["spec"]
    return spec


def _peers(rules: list[dict[str, Any]], key: str) -> set[tuple[str, int]]:
    """(component, port) of every pod peer a rule list allows."""
    found = set()
    for rule in rules or []:
        for peer in rule.get(key, []):
            component = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
            for port in rule.get("ports", []):
                found.add((component, port["port"]))
    return found


def test_network_policies(aio: list[dict[str, Any]]) -> None:
    deny = _policy(aio, "default-deny")
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    assert deny["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "privproc",
        "app.kubernetes.io/instance": "pp",
    }
    dns = _policy(aio, "dns")
    assert {(p["protocol"], p["port"]) for p in dns["egress"][0]["ports"]} == {("UDP", 53), ("TCP", 53)}
    # Only the gateway reaches predictors (their gRPC); only the relay the gateway's OHTTP port.
    predictor = _policy(aio, "predictor")
    assert _peers(predictor["ingress"], "from") == {("gateway", 50051)}
    assert len(predictor["ingress"]) == 1
    gateway = _policy(aio, "gateway")
    assert _peers(gateway["ingress"], "from") == {("relay", 8080)}
    assert len(gateway["ingress"]) == 1
    assert _peers(predictor["egress"], "to") == {("verifier", 50051), ("ledger", 50051), ("cdn", 8080)}
    assert _peers(gateway["egress"], "to") == {
        ("acs", 50051), ("cdn", 50051), ("ledger", 50051), ("predictor", 50051), ("redis", 6379)
    }  # fmt: skip
    assert _peers(_policy(aio, "acs")["egress"], "to") == {("cdn", 50051), ("ledger", 50051)}
    assert _peers(_policy(aio, "ledger")["egress"], "to") == {("witness", 8080)}
    assert _peers(_policy(aio, "verifier")["ingress"], "from") == {("predictor", 50051)}
    assert _peers(_policy(aio, "redis")["ingress"], "from") == {("gateway", 6379)}
    # Reachable from outside, as documented: relay, CDN documents, ACS, ledger, witness.
    for component, ports in [("relay", {8080, 50051}), ("cdn", {8080}), ("acs", {8080, 50051}),
                             ("ledger", {8080, 50051}), ("witness", {8080, 50051})]:  # fmt: skip
        public = [r for r in _policy(aio, component)["ingress"] if "from" not in r]
        assert {p["port"] for r in public for p in r["ports"]} == ports, component
    # The CDN's publishing port: its publishers only.
    assert _peers(_policy(aio, "cdn")["ingress"], "from") == {
        ("gateway", 50051),
        ("acs", 50051),
        ("release", 50051),
    }
    every = {o["metadata"]["name"] for o in aio if o["kind"] == "NetworkPolicy"}
    assert every == {
        f"pp-privproc-{c}"
        for c in ("default-deny", "dns", "relay", "gateway", "predictor", "verifier", "ledger", "witness",
                  "cdn", "acs", "redis", "release", "test")
    }  # fmt: skip


def test_network_policies_can_be_turned_off(helm: Path) -> None:
    objects = render(helm, VALUE_SETS["all-in-one"], "--set", "networkPolicy.enabled=false")
    assert not [o for o in objects if o["kind"] == "NetworkPolicy"]


# --- secrets ---------------------------------------------------------------------------------

#: A signed-note or PEM private key, an ACS credential, or a JSON field named like a secret.
_CREDENTIAL_LIKE = re.compile(r"PRIVATE[ +]KEY|\bpp1\.|\"(?i:credential|password|secret|token)\"\s*:")


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_no_secret_in_a_config_map(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    objects = rendered[name]
    assert not [o for o in objects if o["kind"] == "Secret"]  # Secrets come from `privproc cluster secrets`
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            assert "binaryData" not in obj
            for key, value in obj["data"].items():
                assert not _CREDENTIAL_LIKE.search(value), (obj["metadata"]["name"], key)
    # Secret files are only ever paths into mounted Secrets, never values.
    for key, pod in pod_specs(objects).items():
        for container in pod["containers"] + pod.get("initContainers", []):
            for var in container.get("env", []):
                assert not _CREDENTIAL_LIKE.search(str(var.get("value", ""))), (key, var["name"])


def test_helm_test_reads_a_stack_file_with_public_values(aio: list[dict[str, Any]]) -> None:
    config = find(aio, "ConfigMap", "pp-privproc-test-stack")
    assert config["metadata"]["annotations"]["helm.sh/hook"] == "test"
    document = json.loads(config["data"]["stack.json"])
    stack = StackFile.from_json(document)  # the client's own reader
    assert stack.relay.ohttp_url == "http://pp-privproc-relay.privproc.svc.cluster.local:8080/ohttp-relay"
    assert stack.ledger is not None and stack.ledger.vkey.startswith("log.privproc.local+")
    assert stack.acs is not None and stack.acs.grpc == "pp-privproc-acs.privproc.svc.cluster.local:50051"
    assert stack.demo_account is None
    assert stack.release_keys == ("release+f9cd9a61+AdETR3E4gRojaNCCYi3CUraGDmykDKAV90QUqoxE9/0o",)
    assert stack.development_root is not None
    pod = find(aio, "Pod", "pp-privproc-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["args"][0] == "summarize"
    assert container["args"][-1].endswith("/privproc/examples/team-chat.json")
    assert (
        _args(container)["--account-credential-file"] == "/var/run/secrets/privproc/test-account/credential"
    )
    assert _args(container)["--stack"] == "/var/lib/privproc-client/stack.json"


def test_no_helm_test_outside_development(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("default", "gpu-predictor", "relay-only", "ledger-witness-only"):
        assert not [o for o in rendered[name] if o["kind"] == "Pod"], name


# --- API versions by capability --------------------------------------------------------------


def _versions(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for obj in objects:
        found.setdefault(obj["kind"], set()).add(obj["apiVersion"])
    return found


def test_pdb_and_hpa_versions_follow_the_cluster(helm: Path) -> None:
    files = VALUE_SETS["all-in-one"]
    old = _versions(render(helm, files, "--kube-version", OLD_KUBE))
    assert old["PodDisruptionBudget"] == {"policy/v1beta1"}
    assert old["HorizontalPodAutoscaler"] == {"autoscaling/v2beta2"}
    new = _versions(render(helm, files, "--kube-version", NEW_KUBE))
    assert new["PodDisruptionBudget"] == {"policy/v1"}
    assert new["HorizontalPodAutoscaler"] == {"autoscaling/v2"}
    # What the API server says it serves wins (helm install asks it).
    served = _versions(
        render(
            helm,
            files,
            "--kube-version",
            OLD_KUBE,
            "--api-versions",
            "policy/v1/PodDisruptionBudget",
            "--api-versions",
            "autoscaling/v2/HorizontalPodAutoscaler",
        )
    )
    assert served["PodDisruptionBudget"] == {"policy/v1"}
    assert served["HorizontalPodAutoscaler"] == {"autoscaling/v2"}


# --- the rendered command lines are the CLI's own ---------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_command_line_parses(helm: Path, name: str) -> None:
    """Each container's args (and exec probe, as on 1.20) parse with privproc's own flags and
    environment.

    (The default values, with the public keys an install always gives: without them the
    services refuse to start, naming the missing option.)
    """
    from privproc.cli import build_parser
    from privproc.cli.cluster import cluster_parser
    from privproc.cli.serve import SERVICES
    from privproc.runtime import settings

    files = ("tests/k8s/sample-keys.yaml",) if name == "default" else VALUE_SETS[name]
    objects = render(helm, files, "--kube-version", OLD_KUBE)
    parsed = probes = 0
    for pod in pod_specs(objects).values():
        for container in pod["containers"] + pod.get("initContainers", []):
            args = container.get("args") or []
            if container["image"].startswith(("docker.io/library/redis", "localhost/privproc-redis")):
                continue
            env = {e["name"]: e.get("value", "from-a-secret") for e in container.get("env", [])}
            if args[0] == "serve":
                settings.from_args(SERVICES[args[1]].config_class(), args[2:], env)
            elif args[:2] == ["cluster", "release"]:
                cluster_parser("privproc cluster").parse_args(args[1:])
            else:
                build_parser().parse_args(args)
            probe = container.get("readinessProbe", {}).get("exec")
            if probe is not None:
                assert probe["command"][0] == "/opt/privproc/bin/privproc"
                build_parser().parse_args(probe["command"][1:])
                probes += 1
            parsed += 1
    assert parsed and probes
