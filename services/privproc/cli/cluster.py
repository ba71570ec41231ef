"""``privproc cluster secrets | release``: what a Kubernetes install needs from its operator.

``secrets`` makes every key and credential of an install (as ``privproc up``
makes its own, with the same generators and names), keeps them in
``OUT/keys/`` (0600 files in 0700 directories; a key already there is kept,
so running it again changes nothing), and writes them as Kubernetes Secrets
(``OUT/secrets.yaml``, 0600: ``kubectl apply -f`` it) and their public halves
as Helm values (``OUT/keys.yaml``: ``helm install -f`` it).

``release`` logs the predictor image's ``cvm-release`` before any predictor
is admitted (the chart's release Job, a Helm hook): it measures the image as
the predictor measures itself (:func:`privproc.predictor.loading.measure_predictor`),
signs the entry with the release key, appends it to the ledger, puts its
proof on the CDN and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privproc.cli import options
from privproc.errors import ConfigError, UnavailableError, UpstreamError

#: Secret and object names: DNS-1123 labels, leaving room for the longest suffix.
_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?\Z")
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
#: The account ``helm test`` and the cluster tests buy tokens with (``--development`` only).
TEST_ACCOUNT = "cluster-test"
SECRETS_FILE = "secrets.yaml"
VALUES_FILE = "keys.yaml"
KEYS_DIR = "keys"


def register(sub: Any) -> None:
    options.lazy_command(
        sub, "cluster", "a Kubernetes install's secrets and predictor release", cluster_parser, cluster_cmd
    )


def cluster_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    secrets = actions.add_parser(
        "secrets", help="make an install's keys: Secrets (secrets.yaml) and Helm values (keys.yaml)"
    )
    secrets.add_argument("--name", required=True, help="the Helm release's name: the Secrets' prefix")
    secrets.add_argument("--namespace", required=True, help="the namespace the Secrets go in")
    secrets.add_argument("--out", type=Path, required=True, help="directory written (keys kept in it)")
    secrets.add_argument(
        "--development",
        action="store_true",
        help="also the simulated TEE's development root and a test account (never in production)",
    )
    release = actions.add_parser("release", help="log the predictor image's cvm-release (the release Job)")
    release.add_argument("--ledger-target", required=True, metavar="HOST:PORT", help="the ledger's gRPC")
    release.add_argument("--cdn-target", required=True, metavar="HOST:PORT", help="the key CDN's gRPC")
    release.add_argument("--key-file", type=Path, required=True, help="file holding the release key")
    release.add_argument(
        "--cdn-credential-file", type=Path, required=True, help="file holding the release CDN credential"
    )
    options.add_image_digest(release, required=True)
    release.add_argument(
        "--development",
        action="store_true",
        help="the predictors run on the simulated TEE: its TCB is the release's minimum",
    )
    release.add_argument(
        "--min-tcb",
        help="minimum VCEK TCB, bootloader=B,tee=T,snp=S,microcode=M[,fmc=F] (required without "
        "--development)",
    )
    release.add_argument("--valid-days", type=float, default=30.0, help="days the release admits its CVMs")
    release.add_argument(
        "--wait-seconds", type=float, default=300.0, help="how long to wait for the ledger and the CDN"
    )
    options.add_model(release)
    return parser


def cluster_cmd(args: argparse.Namespace) -> int:
    if args.action == "secrets":
        if not _PREFIX.match(args.name):
            raise ConfigError("--name is a lowercase DNS label of at most 40 characters")
        if not _NAMESPACE.match(args.namespace):
            raise ConfigError("--namespace is a lowercase DNS label")
        bundle = make_bundle(args.out / KEYS_DIR, development=args.development)
        write_outputs(bundle, args.out, name=args.name, namespace=args.namespace)
        print(
            f"privproc: {args.out / SECRETS_FILE} (kubectl apply -f) and {args.out / VALUES_FILE} "
            "(helm install -f) written"
        )
        return 0
    result = asyncio.run(release(args))
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


# --- secrets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """An install's secrets: each Secret's files (name -> bytes), and the public values."""

    secrets: dict[str, dict[str, bytes]]
    values: dict[str, str]


def make_bundle(keys_dir: Path, *, development: bool) -> Bundle:
    """Make (or read back) every key of an install in ``keys_dir``.

    The suffixes are the Secrets' names after the install's prefix; the files
    are named as the chart mounts them.
    """
    from privproc.acs.accounts import new_credential
    from privproc.attestation.operator import (
        ACS_PUBLISHER,
        CDN_PUBLISHERS,
        GATEWAY_PUBLISHER,
        LOG_ORIGIN,
        RELEASE_PUBLISHER,
        WITNESS_NAME,
    )
    from privproc.attestation.workload import CA_CERT_FILE, CA_KEY_FILE, VerifierCA
    from privproc.gateway.keys import new_seed
    from privproc.runtime import keyfiles
    from privproc.wire import note

    keys_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def signer(file_name: str, key_name: str, alg: int = note.ALG_ED25519) -> tuple[bytes, str]:
        path, vkey = keyfiles.signer_key_file(keys_dir, file_name, key_name, alg)
        return path.read_bytes(), vkey

    log_key, log_vkey = signer("ledger.key", LOG_ORIGIN)
    witness_key, witness_vkey = signer("witness.key", WITNESS_NAME, note.ALG_COSIGNATURE_V1)
    gateway_key, gateway_vkey = signer("gateway-publisher.key", GATEWAY_PUBLISHER)
    acs_key, acs_vkey = signer("acs-publisher.key", ACS_PUBLISHER)
    release_key, release_vkey = signer("release-publisher.key", RELEASE_PUBLISHER)
    cdn = {name: keyfiles.secret_file(keys_dir, f"cdn-{name}").read_bytes() for name in CDN_PUBLISHERS}
    # One seed for every gateway replica: they derive the same OHTTP keys from it (gateway/keys.py).
    ohttp_seed = keyfiles.secret_file(keys_dir, "gateway-ohttp.seed", new_seed).read_bytes()
    ca_dir = keys_dir / "verifier-ca"
    VerifierCA.load_or_create(ca_dir)
    ca_pem = (ca_dir / CA_CERT_FILE).read_bytes()
    secrets: dict[str, dict[str, bytes]] = {
        "ledger": {"signer.key": log_key},
        "witness": {"signer.key": witness_key},
        "cdn-publishers": dict(cdn),
        "gateway": {
            "ledger-publisher.key": gateway_key,
            "cdn.credential": cdn["gateway"],
            "ohttp.seed": ohttp_seed,
        },
        "acs": {"ledger-publisher.key": acs_key, "cdn.credential": cdn["acs"]},
        "release": {"publisher.key": release_key, "cdn.credential": cdn["release"]},
        "verifier-ca": {CA_CERT_FILE: ca_pem, CA_KEY_FILE: (ca_dir / CA_KEY_FILE).read_bytes()},
    }
    values = {
        "logOrigin": LOG_ORIGIN,
        "log": log_vkey,
        "witness": witness_vkey,
        "gatewayPublisher": gateway_vkey,
        "acsPublisher": acs_vkey,
        "release": release_vkey,
        "verifierCa": ca_pem.decode(),
    }
    if development:
        from privproc.attestation.simulator import DevelopmentRoot

        simulator_dir = keys_dir / "simulator"
        root = DevelopmentRoot.load_or_create(simulator_dir)
        secrets["simulator"] = {
            path.name: path.read_bytes() for path in sorted(simulator_dir.iterdir()) if path.is_file()
        }
        credential = keyfiles.secret_file(
            keys_dir, "test-account.credential", lambda: new_credential(TEST_ACCOUNT)
        )
        secrets["test-account"] = {"id": TEST_ACCOUNT.encode(), "credential": credential.read_bytes()}
        values["developmentRoot"] = root.ark_fingerprint.hex()
    return Bundle(secrets, values)


def secret_manifests(bundle: Bundle, *, name: str, namespace: str) -> list[dict[str, Any]]:
    """The bundle's v1 Secrets, ``NAME-<suffix>`` in ``namespace``, their files base64 in ``data``."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": f"{name}-{suffix}",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "privproc", "app.kubernetes.io/instance": name},
            },
            "type": "Opaque",
            "data": {key: base64.b64encode(value).decode() for key, value in sorted(files.items())},
        }
        for suffix, files in bundle.secrets.items()
    ]


def write_outputs(bundle: Bundle, out: Path, *, name: str, namespace: str) -> None:
    """``out/secrets.yaml`` (0600) and ``out/keys.yaml``, each replaced atomically."""
    import yaml

    from privproc.runtime import keyfiles

    # Multi-line strings (the CA certificate) as literal blocks, as a person would write them; on
    # a dumper of its own (add_representer on SafeDumper would change every caller's output).
    dumper: Any = type("ValuesDumper", (yaml.SafeDumper,), {})

    def string(dumper: Any, value: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    dumper.add_representer(str, string)
    manifests = secret_manifests(bundle, name=name, namespace=namespace)
    keyfiles.replace_file(
        out / SECRETS_FILE, yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True).encode()
    )
    values = yaml.dump({"keys": bundle.values}, Dumper=dumper, sort_keys=False, default_flow_style=False)
    keyfiles.replace_file(out / VALUES_FILE, values.encode())


# --- release -----------------------------------------------------------------------------------


async def _wait_for(targets: tuple[str, ...], seconds: float) -> None:
    """Until every target's gRPC health answers SERVING; ConfigError after ``seconds``."""
    from privproc.runtime.rpc import check_health

    deadline = time.monotonic() + seconds
    waiting = list(targets)
    while waiting:
        waiting = [target for target in waiting if not await check_health(target)]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise ConfigError("the ledger or the CDN did not answer in time (--wait-seconds)")
        await asyncio.sleep(1.0)


async def release(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the predictor image, log its release and put the proof on the CDN."""
    from privproc.attestation.operator import publish_release
    from privproc.attestation.simulator import SIMULATED_TCB
    from privproc.ledger.tool import parse_tcb
    from privproc.predictor.loading import measure_predictor
    from privproc.runtime import settings

    if args.development == (args.min_tcb is not None):
        raise ConfigError("give --min-tcb, or --development (the simulated TEE's TCB), not both")
    min_tcb = SIMULATED_TCB if args.development else parse_tcb(args.min_tcb)
    if not 0 < args.valid_days <= 3650:
        raise ConfigError("--valid-days is more than 0 and at most 3650")
    signer_key = settings.read_secret_file(args.key_file)
    manifest = await asyncio.to_thread(measure_predictor, options.model_spec(args), args.image_digest)
    deadline = time.monotonic() + args.wait_seconds
    await _wait_for((args.ledger_target, args.cdn_target), args.wait_seconds)
    while True:
        try:
            index = await publish_release(
                manifest,
                signer_key,
                ledger_target=args.ledger_target,
                cdn_target=args.cdn_target,
                cdn_credential_file=args.cdn_credential_file,
                min_tcb=min_tcb,
                valid_days=args.valid_days,
                service="release",
            )
            break
        except (UnavailableError, UpstreamError):
            # Up but not ready to acknowledge (its witnesses have not cosigned yet): appends are
            # idempotent, so trying again logs nothing twice.
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(2.0)
    return {
        "measurement": manifest.measurement.hex(),
        "log_index": index,
        "model_digest": manifest.model_digest,
    }
