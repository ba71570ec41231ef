"""`privproc up` as an operator runs it: separate processes, stack.json, clean shutdown, no leaks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privproc.stackfile import StackFile
from privproc.wire import entries, note

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
    up = _up(state, env)
    try:
        stack_path = state / "stack.json"
        _wait_for(stack_path, up, PREDICTOR_START_SECONDS)
        document = json.loads(stack_path.read_text())
        stack = StackFile.from_json(document)
        assert document["version"] == 1
        assert stack.gateway.origin == "privproc.local"
        assert stack.relay.ohttp_url.startswith("http://127.0.0.1:")
        assert stack.gateway.ohttp_url.endswith("/.well-known/ohttp-gateway")
        assert stack.gateway.keys_url == stack.gateway.ohttp_url
        children = _children(up.pid)
        # cdn, witness, ledger, verifier, log-sidecar, predictor, acs, gateway, relay: each its own process
        assert len(children) == 9
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

        # Private requests, the marker in the chat and in the draft; the predictor writes nothing.
        predictor = _predictor_pid(children)
        written_before = _written_bytes(predictor)
        chat_file = tmp_path / "chat.json"
        chat_file.write_text(json.dumps(_marked_chat()))
        # An empty wallet refuses to buy inside the request; tokens are bought ahead of it.
        empty = _privproc("summarize", str(chat_file), "--stack", str(stack_path), "--json")
        assert empty.returncode == 2 and "wallet_empty" in empty.stderr and empty.stdout == ""
        refill = _privproc("wallet", "refill", "--stack", str(stack_path))
        assert refill.returncode == 0, refill.stderr
        wallet_file = state / "client" / "wallet.json"
        assert oct(wallet_file.stat().st_mode & 0o777) == "0o600"
        summary = _privproc("summarize", str(chat_file), "--stack", str(stack_path), "--json")
        assert summary.returncode == 0, summary.stderr
        result = json.loads(summary.stdout)
        assert result["refused"] is None and result["summary"]
        assert result["receipt"]["measurement"] == document["attestation"]["measurement"]
        assert result["receipt"]["measurement_log_index"] == document["attestation"]["release_log_index"]
        suggestion = _privproc("suggest", "send the PLAINTEXT-MARKER-7f3a file", "--stack", str(stack_path))
        assert suggestion.returncode == 0, suggestion.stderr
        assert "suggestion:" in suggestion.stdout and "logged cvm-release" in suggestion.stdout
        # The kernel's count of bytes this process caused to be written to storage.
        assert _written_bytes(predictor) == written_before
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
    # One CDN credential per publisher, each 0600 and never logged.
    cdn_credentials = [state / "secrets" / f"cdn-{name}" for name in ("gateway", "acs", "release")]
    for key_file in ("ledger.key", "witness.key", "gateway-publisher.key", "acs-publisher.key"):
        secret_key = (state / "secrets" / key_file).read_text().strip()
        assert secret_key.split("+", 4)[4] not in logs  # private key material never logged
    assert all(oct(path.stat().st_mode & 0o777) == "0o600" for path in cdn_credentials)
    assert len({path.read_text() for path in cdn_credentials}) == 3
    for secret in ("PLAINTEXT-MARKER", *(path.read_text() for path in cdn_credentials), "127.0.0.1:"):
        assert secret not in logs
    assert "stack ready" in stdout.decode()
    # The CVM logs through its sidecar only: nothing of the predictor on the supervisor's stderr,
    # and private requests (and its start and stop) wrote nothing to its own stderr.
    assert not any(line["service"] == "predictor" for line in lines)
    assert (state / "logs" / "predictor.stderr").read_bytes() == b""
    records = _sidecar_records(state)
    names = [record["event"] for record in records]
    assert "predictor.hardened" in names  # write guard on, core dumps off
    assert names.count("predictor.session_answered") == 2
    assert "predictor.write_refused" not in names  # it never even tried to write
    assert "predictor.session_totals" in names  # the aggregates it reported on its way out
    # Two requests are fewer than the threshold: their outcomes, tokens and times stay in the CVM.
    assert "predictor.task_totals" not in names and "predictor.generation_totals" not in names
    [sink] = [record for record in records if record["event"] == "log_sink.totals"]
    assert sink["sent"] > 0 and sink["dropped"] == sink["lost"] == 0
    # It let out only what it got: the predictor sent nothing the allow-list refuses.
    last = [record for record in records if record["event"] == "sidecar.dropped"][-1]
    assert last["accepted"] > 0
    assert last["undeclared"] == last["fields"] == last["value"] == last["malformed"] == last["oversize"] == 0
    text = (state / "telemetry" / "predictor-events.jsonl").read_text()
    assert MARKER not in text and "127.0.0.1" not in text
    assert oct((state / "log-sidecar").stat().st_mode & 0o777) == "0o700"


def _sidecar_records(state: Path) -> list[dict[str, object]]:
    """What the predictor's log sidecar let out, each line checked against the allow-list."""
    from privproc import events

    records = [json.loads(line) for line in (state / "telemetry" / "predictor-events.jsonl").open()]
    for record in records:
        fields = {key: value for key, value in record.items() if key not in ("ts", "event")}
        assert events.rejection(str(record["event"]), fields) is None, record
        assert isinstance(record["ts"], int) and record["ts"] % 60 == 0, record  # coarse time
    return records


PREDICTOR_START_SECONDS = 120
MARKER = "PLAINTEXT-MARKER-7f3a"


def _up(state: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    """``privproc up`` with the tiny model (the real ones run in the slow suite)."""
    return subprocess.Popen(
        [sys.executable, "-m", "privproc", "up", "--state-dir", str(state), "--model", "tiny-random", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _marked_chat() -> dict[str, object]:
    return {
        "chat": {"id": "t1", "title": "Team", "ai_disabled": False},
        "messages": [
            {"sender": "ana", "time": "2026-11-25T09:00:00Z", "text": "The release moves to Thursday."},
            {"sender": "bo", "time": "2026-11-25T09:01:00Z", "text": f"The code word is {MARKER}."},
            {"sender": "chen", "time": "2026-11-25T09:02:00Z", "text": "Then the demo is on Friday."},
            {"sender": "dee", "time": "2026-11-25T09:03:00Z", "text": "I will book the room for it."},
        ],
    }


def _predictor_pid(children: list[int]) -> int:
    for pid in children:
        if b"predictor" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            return pid
    raise AssertionError("no predictor process")


def _written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/PID/io")


def test_up_skip_publish_every_request_fails_closed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = _up(state, {**os.environ, "PRIVPROC_LOG_LEVEL": "debug"}, "--skip-publish")
    try:
        stack_path = state / "stack.json"
        _wait_for(stack_path, up, PREDICTOR_START_SECONDS)
        document = json.loads(stack_path.read_text())
        assert document["attestation"]["release_log_index"] is None
        chat_file = tmp_path / "chat.json"
        chat_file.write_text(json.dumps(_marked_chat()))
        assert _privproc("wallet", "refill", "--stack", str(stack_path)).returncode == 0
        for command in (
            ("summarize", str(chat_file)),
            ("suggest", f"send the {MARKER} file"),
        ):
            result = _privproc(*command, "--stack", str(stack_path), "--json")
            assert result.returncode == 2 and result.stdout == ""
            assert "not logged" in result.stderr.lower() or "no proof" in result.stderr.lower()
            assert MARKER not in result.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        _, stderr = up.communicate(timeout=30)
    names = [record["event"] for record in _sidecar_records(state)]
    # The gateway routed both sessions to the (operator-admitted) CVM; the client finished neither.
    assert names.count("predictor.session_opened") == 2
    assert "predictor.session_answered" not in names
    assert MARKER not in stderr.decode()
    assert (state / "logs" / "predictor.stderr").read_bytes() == b""


def test_health_without_a_stack_is_a_clear_error(tmp_path: Path) -> None:
    result = _privproc("health", "--stack", str(tmp_path / "missing.json"))
    assert result.returncode == 2
    assert "privproc up" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["serve", "relay"], ["serve", "cdn"]])
def test_serve_refuses_incomplete_configuration(args: list[str]) -> None:
    result = _privproc(*args)
    assert result.returncode != 0 and "Traceback" not in result.stderr


def run_demo(state_dir: Path, *model: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "privproc", "demo", "--state-dir", str(state_dir), *model],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("->  200") == 1 and "via the relay (http)" in out
    assert "the client verified" in out and "authenticated" in out
    # The summary and the rewrite, each with what the client verified before sending.
    assert "summary:" in out and "suggestion:" in out
    assert out.count("is a logged cvm-release") == 2
    assert out.count("Privacy Pass token type 0x0002") == 2
    # The fail-closed case: refused by the client, before the request left the device.
    assert "refused by the client, before the request left the device" in out
    assert "THIS IS A BUG" not in result.stderr
    # One event per line: no progress bar (a first start converts the GGUF model) reaches the terminal.
    assert "it/s" not in result.stderr and "Converting" not in result.stderr
    return out


def test_demo_prints_private_answers_receipts_and_the_fail_closed_case(tmp_path: Path) -> None:
    out = run_demo(tmp_path / "demo", "--model", "tiny-random")
    assert "answered by model tiny-random-llama-0" in out


def test_ledger_commands_against_a_running_stack(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = subprocess.Popen(
        [sys.executable, "-m", "privproc", "up", "--state-dir", str(state), "--model", "tiny-random"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        stack_path = state / "stack.json"
        _wait_for(stack_path, up, PREDICTOR_START_SECONDS)
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
        key_file = state / "secrets" / "release-publisher.key"
        # A release is signed inside by the release key (clients pin it), then appended with it.
        signed = entries.CvmReleaseEntry.sign(
            track="predictor",
            version="0.1.0",
            measurements=["ab" * 48],
            files_digest="sha256:" + "01" * 32,
            image_digest="",
            model_digest="sha256:" + "02" * 32,
            allowlist_digest="sha256:" + "04" * 32,
            host_data="03" * 32,
            min_tcb={"bootloader": 4, "tee": 0, "snp": 22, "microcode": 213},
            supersedes_at=0,
            not_after=2**40,
            provenance={"builder": "test"},
            signer=note.parse_signer_key(key_file.read_text().strip()),
        ).encode()
        release.write_bytes(signed)
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
        logged = _privproc(
            "ledger", "publish", "cvm-release", *stack_arg, "--key-file", str(key_file),
            "--min-tcb", "bootloader=4,tee=0,snp=22,microcode=213",
        )  # fmt: skip
        assert logged.returncode == 0, logged.stderr
        proof_file.write_text(logged.stdout)
        release_entry = json.loads(
            _privproc("ledger", "verify", *stack_arg, "--proof", str(proof_file)).stdout
        )["entry"]
        assert release_entry["measurements"] == [measured["measurement"]]
        assert release_entry["files_digest"] == measured["files_digest"]
        assert release_entry["image_digest"] == measured["image_digest"] == ""
        assert release_entry["allowlist_digest"] == measured["allowlist_digest"]

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


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie awaiting its reaper does not: it holds no port)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def _ports(document: dict[str, object]) -> set[int]:
    """Every loopback port stack.json names (gRPC targets and URLs)."""
    ports = set()
    for text in json.dumps(document).split('"'):
        if text.startswith(("127.0.0.1:", "http://127.0.0.1:")):
            ports.add(int(text.split("127.0.0.1:", 1)[1].split("/", 1)[0]))
    return ports


def test_a_sigkilled_up_leaves_no_child_and_no_port_held(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = _up(state, dict(os.environ))
    try:
        stack_path = state / "stack.json"
        _wait_for(stack_path, up, PREDICTOR_START_SECONDS)
        ports = _ports(json.loads(stack_path.read_text()))
        children = _children(up.pid)
        assert len(children) == 9 and len(ports) >= 8
    finally:
        up.kill()  # SIGKILL: no handler runs, nothing in `up` stops its children
        up.communicate(timeout=30)
    deadline = time.monotonic() + 20  # each child stops gracefully on its SIGTERM
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in children if _alive(pid)]
    for pid in survivors:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    for port in ports:
        with socket.socket() as probe:
            # As a restarted service binds: past the closed connections' TIME_WAIT, refused while
            # any process still listens on the port.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
