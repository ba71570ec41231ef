"""`privproc up` as an operator runs it: separate processes, stack.json, clean shutdown, no leaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privproc.stackfile import StackFile
from privproc.wire import note

MARKER_PATH = "/v1/health?q=PLAINTEXT-MARKER-7f3a"


def _wait_for(path: Path, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, "privproc up exited early"
        assert time.monotonic() < deadline, "stack.json never appeared"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(x) for x in out.stdout.split()]


def _privproc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privproc", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_up_serves_until_sigterm_and_leaks_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PRIVPROC_LOG_LEVEL": "debug"}
    up = subprocess.Popen(
        [sys.executable, "-m", "privproc", "up", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        stack_path = state / "stack.json"
        _wait_for(stack_path, up)
        document = json.loads(stack_path.read_text())
        stack = StackFile.from_json(document)
        assert document["version"] == 1
        assert stack.gateway.origin == "privproc.local"
        assert stack.relay.ohttp_url.startswith("http://127.0.0.1:")
        assert stack.gateway.ohttp_url.endswith("/.well-known/ohttp-gateway")
        assert stack.gateway.keys_url == stack.gateway.ohttp_url
        children = _children(up.pid)
        # cdn, witness, ledger, verifier, acs, gateway, relay: each its own process
        assert len(children) == 7
        assert stack.verifier is not None and stack.verifier.ca_cert.startswith("-----BEGIN CERTIFICATE-----")
        assert stack.development_root is not None and len(stack.development_root) == 32
        assert stack.ledger is not None and stack.witness is not None
        assert stack.ledger.origin == "log.privproc.local"
        assert stack.ledger.vkey.startswith("log.privproc.local+")
        assert stack.acs is not None and stack.demo_account is not None
        assert stack.acs.token_request_url.endswith("/token-request")
        assert oct(stack_path.stat().st_mode & 0o777) == "0o600"  # it holds the demo credential

        for transport in ("http", "grpc"):
            result = _privproc("health", "--stack", str(stack_path), "--transport", transport, "--json")
            assert result.returncode == 0, result.stderr
            answer = json.loads(result.stdout)
            assert answer["status"] == 200 and answer["body"]["status"] == "serving"
            assert answer["receipt"]["relay_transport"] == transport
            assert answer["receipt"]["ohttp_key_log_index"] is not None
            assert answer["receipt"]["witnesses"] == ["witness.privproc.local"]

        # A request whose inner path carries a marker: it must appear in no log line.
        from privproc.client import OhttpClient
        from privproc.wire import bhttp

        async def marked() -> int:
            async with OhttpClient.from_stack(stack) as client:
                response, _ = await client.request(
                    bhttp.Request("GET", "https", "privproc.local", MARKER_PATH)
                )
                return response.status

        import asyncio

        assert asyncio.run(marked()) == 200
    finally:
        up.send_signal(signal.SIGTERM)
        stdout, stderr = up.communicate(timeout=30)
    assert up.returncode == 0
    assert not (state / "stack.json").exists()
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )

    logs = stderr.decode()
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    assert lines, "debug logging produced no events"
    assert all("service" in line and "event" in line["line"] for line in lines)  # only registry events
    assert any(line["line"]["event"] == "gateway.inner_request" for line in lines)
    credential = (state / "secrets" / "cdn-publisher").read_text()
    for key_file in ("ledger.key", "witness.key", "gateway-publisher.key", "acs-publisher.key"):
        secret_key = (state / "secrets" / key_file).read_text().strip()
        assert secret_key.split("+", 4)[4] not in logs  # private key material never logged
    assert oct((state / "secrets" / "cdn-publisher").stat().st_mode & 0o777) == "0o600"
    for secret in ("PLAINTEXT-MARKER", credential, "127.0.0.1:"):
        assert secret not in logs
    assert "stack ready" in stdout.decode()


def test_health_without_a_stack_is_a_clear_error(tmp_path: Path) -> None:
    result = _privproc("health", "--stack", str(tmp_path / "missing.json"))
    assert result.returncode == 2
    assert "privproc up" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["serve", "relay"], ["serve", "cdn"]])
def test_serve_refuses_incomplete_configuration(args: list[str]) -> None:
    result = _privproc(*args)
    assert result.returncode != 0 and "Traceback" not in result.stderr


def test_demo_prints_the_private_answer_and_what_was_verified(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "privproc", "demo", "--state-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("->  200") == 2
    assert "via the relay (http)" in out and "via the relay (grpc)" in out
    assert '"status": "serving"' in out
    assert "the client verified" in out and "authenticated" in out
    assert "/v1/sessions  with a Privacy Pass token  ->  503" in out
    assert "tokens of type 0x0002 were issued blind" in out


def test_ledger_commands_against_a_running_stack(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = subprocess.Popen(
        [sys.executable, "-m", "privproc", "up", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        stack_path = state / "stack.json"
        _wait_for(stack_path, up)
        stack_arg = ["--stack", str(stack_path)]

        checkpoint = _privproc("ledger", "checkpoint", *stack_arg)
        assert checkpoint.returncode == 0, checkpoint.stderr
        assert (
            checkpoint.stdout.startswith("log.privproc.local\n")
            and "— witness.privproc.local " in checkpoint.stdout
        )

        first = json.loads(_privproc("ledger", "monitor", *stack_arg).stdout)
        kinds = {e["entry"]["kind"] for e in first["new_entries"]}
        assert kinds == {
            "ohttp-key-config",
            "token-issuer-key",
            "cvm-release",
        }  # up logs this image's release
        assert first["witnesses"] == ["witness.privproc.local"]

        release = tmp_path / "release.json"
        release.write_text(
            json.dumps(
                {
                    "kind": "cvm-release",
                    "measurements": ["ab" * 48],
                    "image_digest": "sha256:" + "01" * 32,
                    "model_digest": "sha256:" + "02" * 32,
                    "version": "0.1.0",
                    "provenance": {"builder": "test"},
                }
            )
        )
        key_file = state / "secrets" / "release-publisher.key"
        published = _privproc(
            "ledger", "publish", *stack_arg, "--entry", str(release), "--key-file", str(key_file)
        )
        assert published.returncode == 0, published.stderr
        proof_file = tmp_path / "release.tlog-proof"
        proof_file.write_text(published.stdout)
        verified = json.loads(_privproc("ledger", "verify", *stack_arg, "--proof", str(proof_file)).stdout)
        assert verified["entry"]["kind"] == "cvm-release" and verified["witnesses"] == [
            "witness.privproc.local"
        ]

        proved = _privproc("ledger", "prove", *stack_arg, "--index", str(verified["index"]))
        assert proved.returncode == 0 and proved.stdout.startswith("c2sp.org/tlog-proof@v1\n")

        second = json.loads(_privproc("ledger", "monitor", *stack_arg).stdout)
        assert [e["entry"]["version"] for e in second["new_entries"]] == ["0.1.0"]

        # The release of this very image, measured and logged by the CLI.
        measured = json.loads(_privproc("image", "measure", "--json").stdout)
        logged = _privproc("ledger", "publish", "cvm-release", *stack_arg, "--key-file", str(key_file))
        assert logged.returncode == 0, logged.stderr
        proof_file.write_text(logged.stdout)
        release_entry = json.loads(
            _privproc("ledger", "verify", *stack_arg, "--proof", str(proof_file)).stdout
        )["entry"]
        assert release_entry["measurements"] == [measured["measurement"]]
        assert release_entry["image_digest"] == measured["image_digest"]

        # A publisher key the ledger does not know is refused; a tampered proof fails verification.
        rogue = tmp_path / "rogue.key"
        rogue.write_text(note.generate_key("release")[0])
        refused = _privproc(
            "ledger", "publish", *stack_arg, "--entry", str(release), "--key-file", str(rogue)
        )
        assert refused.returncode == 2 and "permission_denied" in refused.stderr
        tampered = published.stdout.replace("index ", "index 1", 1)
        proof_file.write_text(tampered)
        bad = _privproc("ledger", "verify", *stack_arg, "--proof", str(proof_file))
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
