"""The CLI pieces a Kubernetes install runs: ``privproc cluster secrets|release``,
``serve gateway-identity``, ``serve verifier --ca-dir``, ``health HOST:PORT``, the ACS's
operator-chosen demo credential and the log sidecar writing to stderr."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509

from privproc.acs.accounts import AccountStore, new_credential
from privproc.acs.store import Database
from privproc.attestation.measure import release_proof_name
from privproc.attestation.simulator import DevelopmentRoot
from privproc.attestation.verifier import VerifierConfig, VerifierService
from privproc.attestation.workload import VerifierCA
from privproc.cli import cluster
from privproc.cli.serve import service_parser
from privproc.errors import ConfigError
from privproc.gateway.keys import parse_seed
from privproc.predictor.loading import measure_predictor
from privproc.runtime import mtls, settings
from privproc.wire import logrecord, note
from privproc.wire.entries import CvmReleaseEntry, parse_entry
from tests.adversarial.cdn_ledger.test_release_key_scope import _entries
from tests.livestack import Stack, secret_file

IMAGE_DIGEST = "sha256:" + "5a" * 32
#: A predictor's required flags (what is measured comes after them).
PREDICTOR_FLAGS = ("--verifier", "x:1", "--verifier-ca-file", "ca")


def _privproc(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privproc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _secrets(out: Path) -> dict[str, dict[str, bytes]]:
    """The Secrets of ``out/secrets.yaml`` by name, their data decoded."""
    documents = list(yaml.safe_load_all((out / "secrets.yaml").read_text()))
    assert all(d["apiVersion"] == "v1" and d["kind"] == "Secret" for d in documents)
    assert {d["metadata"]["namespace"] for d in documents} == {"pp-ns"}
    return {
        d["metadata"]["name"]: {k: base64.b64decode(v, validate=True) for k, v in d["data"].items()}
        for d in documents
    }


def _materialise(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    """A Secret as a pod sees it mounted: one file per key, in a directory it does not write."""
    directory = tmp_path / "mounted" / name
    directory.mkdir(parents=True)
    for key, value in files.items():
        (directory / key).write_bytes(value)
        (directory / key).chmod(0o400)
    directory.chmod(0o500)
    return directory


def test_cluster_secrets_round_trip_through_the_manifests(tmp_path: Path) -> None:
    out = tmp_path / "out"
    made = _privproc(
        "cluster", "secrets", "--name", "pp", "--namespace", "pp-ns", "--out", str(out), "--development"
    )
    assert made.returncode == 0, made.stderr
    assert (out / "secrets.yaml").stat().st_mode & 0o777 == 0o600
    secrets = _secrets(out)
    assert {name: sorted(files) for name, files in secrets.items()} == {
        "pp-ledger": ["signer.key"],
        "pp-witness": ["signer.key"],
        "pp-cdn-publishers": ["acs", "gateway", "release"],
        "pp-gateway": ["cdn.credential", "ledger-publisher.key", "ohttp.seed"],
        "pp-acs": ["cdn.credential", "ledger-publisher.key"],
        "pp-release": ["cdn.credential", "publisher.key"],
        "pp-verifier-ca": ["ca.key", "ca.pem"],
        "pp-simulator": sorted(secrets["pp-simulator"]),
        "pp-test-account": ["credential", "id"],
    }
    keys = yaml.safe_load((out / "keys.yaml").read_text())["keys"]
    assert keys["logOrigin"] == "log.privproc.local"

    def vkey(secret: str, file: str) -> str:
        return note.parse_signer_key(secrets[secret][file].decode().strip()).verifier().key_string()

    # Each public value is the one of the private key in its Secret, named as the services expect.
    assert vkey("pp-ledger", "signer.key") == keys["log"] and keys["log"].startswith("log.privproc.local+")
    assert vkey("pp-witness", "signer.key") == keys["witness"]
    assert keys["witness"].startswith("witness.privproc.local+")
    assert vkey("pp-gateway", "ledger-publisher.key") == keys["gatewayPublisher"]
    assert vkey("pp-acs", "ledger-publisher.key") == keys["acsPublisher"]
    assert vkey("pp-release", "publisher.key") == keys["release"]
    assert keys["release"].startswith("release+") and keys["gatewayPublisher"].startswith("gateway+")
    # The CDN's credentials are the publishers' own, each distinct.
    publishers = secrets["pp-cdn-publishers"]
    assert publishers["gateway"] == secrets["pp-gateway"]["cdn.credential"]
    assert publishers["acs"] == secrets["pp-acs"]["cdn.credential"]
    assert publishers["release"] == secrets["pp-release"]["cdn.credential"]
    assert len(set(publishers.values())) == 3
    # The gateway reads its OHTTP seed from its read-only mount; the seed is no public value.
    gateway_mount = _materialise(tmp_path, "gateway", secrets["pp-gateway"])
    seed_text = settings.read_secret_file(gateway_mount / "ohttp.seed")
    assert len(parse_seed(seed_text)) == 32 and seed_text not in (out / "keys.yaml").read_text()
    # The CA loads from a read-only mount, and is the one keys.yaml pins.
    ca = VerifierCA.load(_materialise(tmp_path, "ca", secrets["pp-verifier-ca"]))
    assert ca.pem.decode() == keys["verifierCa"]
    # The simulated TEE's root loads from a read-only mount, its ARK the one keys.yaml trusts.
    root = DevelopmentRoot.load_or_create(_materialise(tmp_path, "simulator", secrets["pp-simulator"]))
    assert root.ark_fingerprint.hex() == keys["developmentRoot"]
    # The test account's credential is accepted by an ACS given it, for that account.
    account = secrets["pp-test-account"]["id"].decode()
    credential = secrets["pp-test-account"]["credential"].decode()
    db = Database(tmp_path / "acs.sqlite3")
    try:
        accounts = AccountStore(db)
        accounts.create(account, credential)
        assert accounts.verify(credential) == account
    finally:
        db.close()

    # Again: every key is kept, nothing changes; without --development, no development material.
    again = _privproc("cluster", "secrets", "--name", "pp", "--namespace", "pp-ns", "--out", str(out))
    assert again.returncode == 0, again.stderr
    production = _secrets(out)
    assert "pp-simulator" not in production and "pp-test-account" not in production
    assert "developmentRoot" not in yaml.safe_load((out / "keys.yaml").read_text())["keys"]
    assert production == {k: v for k, v in secrets.items() if k not in ("pp-simulator", "pp-test-account")}


@pytest.mark.parametrize(
    "args", [("--name", "PP", "--namespace", "ns"), ("--name", "pp", "--namespace", "a_b")]
)
def test_cluster_secrets_refuses_names_kubernetes_refuses(tmp_path: Path, args: tuple[str, ...]) -> None:
    refused = _privproc("cluster", "secrets", *args, "--out", str(tmp_path / "out"))
    assert refused.returncode == 2 and "DNS label" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_gateway_identity_once_writes_a_pair_from_the_ca_and_exits(tmp_path: Path) -> None:
    ca = VerifierCA.load_or_create(tmp_path / "ca-made")
    ca_dir = _materialise(
        tmp_path, "ca", {"ca.pem": ca.pem, "ca.key": (tmp_path / "ca-made" / "ca.key").read_bytes()}
    )
    out = tmp_path / "identity"
    done = _privproc("serve", "gateway-identity", "--ca-dir", str(ca_dir), "--out-dir", str(out), "--once")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["service"] == "gateway-identity"
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem"]  # nothing written there
    identity = mtls.file_identity(out / "tls.crt", out / "tls.key")()
    certificate = mtls.certificate_of(identity)  # the key is the certificate's
    assert certificate.issuer == ca.certificate.subject
    certificate.verify_directly_issued_by(ca.certificate)
    assert (out / "tls.key").stat().st_mode & 0o777 == 0o600
    assert "identity.issued" in done.stderr

    # Without --once it keeps running (renewing) until stopped.
    process = subprocess.Popen(
        [sys.executable, "-m", "privproc", "serve", "gateway-identity", "--ca-dir", str(ca_dir),
         "--out-dir", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["ready"] == {"cert_file": str(out / "tls.crt"), "key_file": str(out / "tls.key")}
        renewed = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
        assert renewed.serial_number != certificate.serial_number
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_gateway_identity_without_a_ca_fails_clearly(tmp_path: Path) -> None:
    failed = _privproc(
        "serve", "gateway-identity", "--ca-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "o"),
        "--once",
    )  # fmt: skip
    assert failed.returncode != 0 and "ca.key and ca.pem" in failed.stderr
    assert "Traceback" not in failed.stderr


async def test_verifier_takes_its_ca_from_ca_dir(tmp_path: Path) -> None:
    ca = VerifierCA.load_or_create(tmp_path / "ca-made")
    ca_dir = _materialise(
        tmp_path, "ca", {"ca.pem": ca.pem, "ca.key": (tmp_path / "ca-made" / "ca.key").read_bytes()}
    )
    parser, kind = service_parser("verifier")
    log_vkey = note.generate_key("log.test")[1]
    argv = ["--state-dir", str(tmp_path / "v"), "--ledger", "127.0.0.1:9", "--ledger-tiles-url",
            "http://127.0.0.1:9/", "--log-vkey", log_vkey]  # fmt: skip
    config = settings.load(kind, parser.parse_args([*argv, "--ca-dir", str(ca_dir)]), {})
    service = VerifierService(config)
    assert service.ca.pem == ca.pem
    assert not (tmp_path / "v" / "ca").exists()
    # Without it, the CA is made in STATE_DIR/ca, as privproc up has it.
    default = VerifierService(settings.load(kind, parser.parse_args(argv), {}))
    assert default.ca.pem != ca.pem and (tmp_path / "v" / "ca" / "ca.key").exists()
    assert isinstance(config, VerifierConfig)


def test_the_predictor_and_cluster_release_measure_the_same_image() -> None:
    """The measurement the release Job logs is the one a predictor given the same flags reports."""
    parser, kind = service_parser("predictor")
    flags = ["--model", "tiny-random", "--embedder", "none", "--image-digest", IMAGE_DIGEST]
    config = settings.load(
        kind, parser.parse_args(["--verifier", "x:1", "--verifier-ca-file", "ca", *flags]), {}
    )
    release_args = cluster.cluster_parser("privproc cluster").parse_args(
        ["release", "--ledger-target", "x:1", "--cdn-target", "x:1", "--key-file", "k",
         "--cdn-credential-file", "c", "--development", *flags]
    )  # fmt: skip
    from privproc.cli import options

    predictor = measure_predictor(config.model, config.image_digest)
    released = measure_predictor(options.model_spec(release_args), release_args.image_digest)
    assert predictor.measurement == released.measurement
    assert predictor.image_digest == IMAGE_DIGEST and predictor.to_json()["image_digest"] == IMAGE_DIGEST
    # The image digest is measured: another image, another measurement.
    other = measure_predictor(config.model, "sha256:" + "5b" * 32)
    assert other.measurement != predictor.measurement and other.host_data == predictor.host_data
    assert measure_predictor(config.model).measurement != predictor.measurement
    for bad in ("5a" * 32, "sha256:" + "5A" * 32, "sha256:" + "5a" * 31, "sha256:" + "5a" * 32 + "\n"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--verifier", "x:1", "--verifier-ca-file", "ca", "--image-digest", bad])


async def test_cluster_release_logs_the_image_and_puts_its_proof_on_the_cdn(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.file.ledger is not None
    key_file = secret_file(tmp_path / "keys", "release.key", stack.keys.release)
    flags = ["--model", "tiny-random", "--embedder", "none", "--image-digest", IMAGE_DIGEST]
    args = cluster.cluster_parser("privproc cluster").parse_args(
        ["release", "--ledger-target", stack.file.ledger.grpc, "--cdn-target", stack.file.cdn.grpc,
         "--key-file", str(key_file), "--cdn-credential-file", str(stack.credentials["release"]),
         "--development", "--wait-seconds", "10", *flags]
    )  # fmt: skip
    result: dict[str, Any] = await cluster.release(args)
    parser, kind = service_parser("predictor")
    config = settings.load(
        kind, parser.parse_args(["--verifier", "x:1", "--verifier-ca-file", "ca", *flags]), {}
    )
    measured = measure_predictor(config.model, config.image_digest)
    assert result == {
        "measurement": measured.measurement.hex(),
        "log_index": result["log_index"],
        "model_digest": measured.model_digest,
    }
    logged = dict(await _entries(stack.file.ledger.grpc, stack.file.ledger.tiles_url, stack.keys.log_vkey))
    entry = parse_entry(logged[result["log_index"]])
    assert isinstance(entry, CvmReleaseEntry)
    assert entry.measurements == (measured.measurement.hex(),) and entry.image_digest == IMAGE_DIGEST
    assert entry.release_key.startswith("release+")
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.file.cdn.proofs_url + release_proof_name(measured.measurement)) as reply,
    ):
        assert reply.status == 200
        assert (await reply.read()).startswith(b"c2sp.org/tlog-proof@v1\n")


async def test_cluster_release_waits_then_gives_up_on_an_absent_ledger(tmp_path: Path) -> None:
    key_file = secret_file(tmp_path, "release.key", note.generate_key("release")[0])
    args = cluster.cluster_parser("privproc cluster").parse_args(
        ["release", "--ledger-target", "127.0.0.1:9", "--cdn-target", "127.0.0.1:9", "--key-file",
         str(key_file), "--cdn-credential-file", str(key_file), "--image-digest", IMAGE_DIGEST,
         "--development", "--wait-seconds", "1", "--model", "tiny-random", "--embedder", "none"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="did not answer in time"):
        await cluster.release(args)
    args.development, args.min_tcb = False, None
    with pytest.raises(ConfigError, match="--min-tcb"):
        await cluster.release(args)


async def test_health_probe_exit_status(stack: Stack) -> None:
    # In a thread: the stack serves in this test's event loop.
    up = await asyncio.to_thread(_privproc, "health", stack.file.cdn.grpc, "--timeout", "3")
    assert up.returncode == 0 and up.stdout == ""
    down = await asyncio.to_thread(_privproc, "health", "127.0.0.1:9", "--timeout", "1")
    assert down.returncode == 1 and down.stdout == ""


def test_acs_demo_account_takes_the_operators_credential(tmp_path: Path) -> None:
    credential = new_credential("cluster-test")
    credential_file = secret_file(tmp_path, "credential", credential)
    process = subprocess.Popen(
        [sys.executable, "-m", "privproc", "serve", "acs", "--state-dir", str(tmp_path / "acs"),
         "--demo-account", "cluster-test", "--demo-account-credential-file", str(credential_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert json.loads(line)["ready"]["demo_account"] == {"id": "cluster-test"}
        assert credential.rpartition(".")[2] not in line
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert credential.encode() not in stderr and credential.rpartition(".")[2].encode() not in stderr
    db = Database(tmp_path / "acs" / "acs.sqlite3")
    try:
        accounts = AccountStore(db)
        assert accounts.verify(credential) == "cluster-test"
        assert accounts.verify(new_credential("cluster-test")) is None
        # Only a digest is stored, never the credential.
        dump = "\n".join(db.conn.iterdump())
        assert credential.rpartition(".")[2] not in dump
    finally:
        db.close()


def test_an_account_credential_must_name_its_account(tmp_path: Path) -> None:
    db = Database(tmp_path / "acs.sqlite3")
    try:
        accounts = AccountStore(db)
        with pytest.raises(ValueError):
            accounts.create("one", new_credential("two"))
        with pytest.raises(ValueError):
            accounts.create("one", "not a credential")
        minted = accounts.create("one")
        chosen = accounts.create("one", new_credential("one"))
        assert accounts.verify(minted) == accounts.verify(chosen) == "one"
        accounts.disable("one")
        assert accounts.verify(chosen) is None
    finally:
        db.close()


async def test_client_commands_take_a_credential_file(stack: Stack, tmp_path: Path) -> None:
    """``--account-credential-file``: tokens are bought with that account, not stack.json's."""
    from privproc.cli import options
    from privproc.cli.private import refill_wallet
    from privproc.errors import UnauthenticatedError

    assert stack.acs is not None
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(stack.file.raw))
    credential = stack.acs.accounts.create("cluster-test", new_credential("cluster-test"))
    credential_file = secret_file(tmp_path, "credential", credential + "\n")
    parser = argparse.ArgumentParser()
    options.add_stack(parser)
    options.add_account_credential(parser)
    given = options.load_stack(
        parser.parse_args(["--stack", str(stack_file), "--account-credential-file", str(credential_file)])
    )
    assert given.demo_account is not None and given.demo_account.credential == credential
    plain = options.load_stack(parser.parse_args(["--stack", str(stack_file)]))
    assert plain.demo_account == stack.file.demo_account
    bought, held = await refill_wallet(given)
    assert bought > 0 and held == bought
    # A credential the ACS never saw buys nothing.
    credential_file.write_text(new_credential("cluster-test"))
    refused = options.load_stack(
        parser.parse_args(["--stack", str(stack_file), "--account-credential-file", str(credential_file)])
    )
    with pytest.raises(UnauthenticatedError):
        await refill_wallet(refused)


def test_the_log_sidecar_writes_to_stderr_without_output() -> None:
    """Without --output what it lets out goes to its stderr (``kubectl logs``)."""
    import socket
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a Unix socket's path is short
        socket_path = Path(short) / "s.sock"
        process = subprocess.Popen(
            [sys.executable, "-m", "privproc", "serve", "log-sidecar", "--socket-path", str(socket_path),
             "--interval-seconds", "0.3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        seen: list[dict[str, Any]] = []
        try:
            assert process.stdout is not None and process.stderr is not None
            json.loads(process.stdout.readline())
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(str(socket_path))
                conn.sendall(logrecord.encode("gateway.key_retired", {"key_id": 7}))
                conn.sendall(logrecord.encode("gateway.key_retired", {"key_id": "secret text"}))
            # Its drop totals follow every interval: read until they count both records.
            while not any(r.get("event") == "sidecar.dropped" and r["accepted"] == 1 for r in seen):
                line = process.stderr.readline()
                assert line, "the sidecar's stderr ended"
                assert b"secret text" not in line
                if line.startswith(b"{"):
                    seen.append(json.loads(line))
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
    assert process.returncode == 0
    assert {"event": "gateway.key_retired", "key_id": 7} in [
        {k: v for k, v in r.items() if k != "ts"} for r in seen
    ]
    assert [r["value"] for r in seen if r["event"] == "sidecar.dropped"][-1] == 1
