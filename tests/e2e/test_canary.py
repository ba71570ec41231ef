"""The canary test (issue 13): what a device sends privately is found nowhere an operator can look.

One ``privproc up`` stack, one device (this test process). Every field the device keeps to
itself carries canaries (:mod:`tests.canary`): the chat (id, title, senders, messages), the draft,
the ACS account the device buys its tokens with (its id, so its credential) and the device's
address (its connections to the relay, the key CDN and the log come from a random
``127.x.y.z``). The device also makes requests the services refuse, each carrying canaries,
to collect the error texts they answer with. Afterwards, no canary, nor the credential, nor
the answers (raw, hex or base64) may be in: the stack's stdout and stderr (every child's,
since its ready line), any file under the state directory (databases, telemetry, the
sidecar's output, logs), or an error text. One thing is expected, and checked otherwise: the
ACS keeps the ids of its accounts, so the account's id is in its database, in its
``accounts`` and ``issuance`` tables and nowhere else there.

Only the device and the CVM's memory held them: the memory of every other service is read
while it runs, and holds none of what it was not given (the relay sees the address, the ACS
the account; no service outside the CVM sees content).

``test_the_scan_finds_a_deliberately_leaked_canary`` runs the same request with a test-only
event that leaks the account id, and shows that the same check then fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from privproc.client import OhttpClient
from privproc.client.private import Chat, PrivateProcessingClient
from privproc.client.tokens import TokenWallet
from privproc.errors import PrivprocError
from privproc.runtime.ohttp_transport import GrpcTransport
from privproc.stackfile import StackFile
from privproc.wire import bhttp
from privproc.wire.ohttp import MEDIA_TYPE_REQUEST
from tests.canary import Finding, files_under, new_canary, process_memory, scan

#: A first start converts nothing (tiny model) but loads it and starts nine processes on 2 cores.
STACK_START_SECONDS = 180
UP = (sys.executable, "-m", "privproc", "up")
LEAK_DIRECTORY = Path(__file__).parent / "canary_leak"
#: Answers shorter than this, or made of few distinct characters, are not distinctive enough.
MIN_ANSWER_NEEDLE = 24


@dataclass
class Canaries:
    """Fresh canaries, by the field that carries them."""

    values: dict[str, str] = field(default_factory=dict)
    #: The client address: 127.x.y.z, its text is the canary (any 127/8 address is loopback).
    address: str = ""

    @classmethod
    def new(cls) -> Canaries:
        labels = (
            *("chat id", "chat title", "sender"),
            *(f"message {n}" for n in "abcdef"),
            *(f"draft {n}" for n in "abc"),
            *("account a", "account b"),
            *(f"error {n}" for n in "abcdef"),
        )
        octets = [100 + secrets.randbelow(155) for _ in range(3)]
        return cls({label: new_canary() for label in labels}, "127.{}.{}.{}".format(*octets))

    def __getitem__(self, label: str) -> str:
        return self.values[label]

    @property
    def account(self) -> str:
        """An ACS account id made of two canaries (ids are lower-case identifiers)."""
        return f"{self['account a']}-{self['account b']}"

    def chat(self) -> dict[str, object]:
        """A chat whose fields carry canaries: as words of a sentence, alone, glued by punctuation."""
        c = self.values
        return {
            "chat": {"id": c["chat id"], "title": f"Team {c['chat title']}", "ai_disabled": False},
            "messages": [
                {"sender": c["sender"], "time": "2026-11-25T09:00:00Z", "text": "The release moves on."},
                {
                    "sender": "bo",
                    "time": "2026-11-25T09:01:00Z",
                    "text": f"The code word is {c['message a']} and the room is {c['message b']}.",
                },
                {"sender": "chen", "time": "2026-11-25T09:02:00Z", "text": c["message c"]},
                {
                    "sender": "dee",
                    "time": "2026-11-25T09:03:00Z",
                    "text": f"{c['message d']},{c['message e']} then {c['message f']}!",
                },
            ],
        }

    def draft(self) -> str:
        return f"please send {self['draft a']} the file {self['draft b']} before {self['draft c']} today"


@dataclass
class Evidence:
    """Where to look afterwards: the state directory's files and the texts captured."""

    state_dir: Path
    texts: dict[str, str | bytes]
    #: Every secret, by label: the canaries, the credential, the answers.
    secrets: dict[str, str]
    #: Secrets found in the memory of a service outside the CVM that was never given them.
    memory: list[Finding]


def _secrets(canaries: Canaries, credential: str, answers: list[str]) -> dict[str, str]:
    found = {**canaries.values, "client address": canaries.address, "credential": credential}
    # The credential's MAC (base64url): the part of it that is not the account id.
    found["credential mac"] = credential.rsplit(".", 1)[1]
    for n, answer in enumerate(answers):  # what the device got back is content too
        if len(answer) >= MIN_ANSWER_NEEDLE and len(set(answer)) >= 8:
            found[f"answer {n}"] = answer
    return found


#: Services outside the CVM whose memory is read while they run, and the secrets each was given
#: (besides the canaries of the refused requests, which each was sent in the clear): the relay
#: sees the device's address, the ACS its account and credential, the key CDN and the log the
#: address the device fetches from. None of them, nor the gateway, ever sees content.
MEMORY_MAY_HOLD = {
    "relay": {"client address"},
    "gateway": set(),
    "acs": {"account a", "account b", "credential", "credential mac"},
    "cdn": {"client address"},
    "ledger": {"client address"},
    "witness": set(),
    "verifier": set(),
}


def _memory_findings(pids: dict[str, int], secrets_by_label: dict[str, str]) -> list[Finding]:
    """Secrets in the memory of services outside the CVM that were never given them.

    Raw bytes only (Python keeps an ASCII string as its bytes); each process's writable memory
    is read once, while it runs, and not kept. What a service was given is looked for too, in
    the ACS (the account it authenticated): proof that the memory read sees such things.
    """
    findings = []
    for name, may_hold in MEMORY_MAY_HOLD.items():
        memory = process_memory(pids[name])
        if name == "acs":
            assert secrets_by_label["account a"].encode() in memory
        for label, secret in secrets_by_label.items():
            if label not in may_hold and not label.startswith("error ") and secret.encode() in memory:
                findings.append(Finding(f"{name} memory", label, "raw"))
    return findings


def _privproc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privproc", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(x) for x in out.stdout.split()]


def _tap_output(pid: int, own: set[str]) -> dict[str, int]:
    """A reader of each of a child's stdout/stderr pipes that ``own`` does not already read.

    ``privproc up`` reads a child's stdout only up to its ready line; opening the pipe through
    /proc gives this test a reader of its own, which keeps whatever the child writes later
    (up to the pipe's buffer), its shutdown included.
    """
    taps = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("pipe:") and link not in own:
                taps[name] = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    return taps


def _drain(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


async def _device(stack: StackFile, canaries: Canaries, credential: str) -> tuple[list[str], dict[str, str]]:
    """The device's part: two private requests, then requests the services refuse.

    Returns the answers and the error texts (each refusal's text, status and headers).
    Everything the device keeps (tokens, checkpoints) stays in its memory: the stack document
    is read without its path, so no client state goes to the state directory.
    """
    errors: dict[str, str] = {}
    async with PrivateProcessingClient.from_stack(
        stack, local_address=canaries.address, credential=credential, refill=None
    ) as client:
        assert await client.wallet.refill(wait_quiet=False) > 0
        summary, _ = await client.summarize(Chat.from_json(canaries.chat()))
        suggestion, _ = await client.suggest_rewrite(canaries.draft())
    for response in (summary, suggestion):
        assert response.text and not response.refusal_reason, response  # processed to the end
    c = canaries.values

    # The ACS, shown a credential for an account that does not exist.
    forged = TokenWallet.from_stack(stack, credential=f"pp1.{c['error a']}.{c['error b']}", refill=None)
    try:
        with pytest.raises(PrivprocError) as refused:
            await forged.refill(wait_quiet=False)
        errors["acs: unknown account"] = f"{refused.value.reason}: {refused.value}"
    finally:
        await forged.close()
    # The gateway, through the relay: a session that does not exist, a resource that does not.
    async with OhttpClient.from_stack(stack, local_address=canaries.address) as ohttp:
        for label, request in (
            (
                "gateway: unknown session",
                bhttp.Request(
                    "POST",
                    "https",
                    stack.gateway.origin,
                    f"/v1/sessions/{c['error c']}",
                    headers=(("content-type", "application/octet-stream"),),
                    content=c["error d"].encode(),
                ),
            ),
            (
                "gateway: unknown resource",
                bhttp.Request("GET", "https", stack.gateway.origin, f"/v1/{c['error e']}?q={c['error f']}"),
            ),
        ):
            response, _ = await ohttp.request(request)
            assert response.status >= 400
            errors[label] = f"{response.status} {response.headers} {response.content!r}"
    # The relay itself, sent something that is no encapsulated request (over HTTP and gRPC).
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(canaries.address, 0))) as session,
        session.post(
            stack.relay.ohttp_url,
            data=c["error a"].encode(),
            headers={"Content-Type": MEDIA_TYPE_REQUEST, "X-Note": c["error b"]},
        ) as answer,
    ):
        assert answer.status >= 400
        errors["relay: http"] = f"{answer.status} {dict(answer.headers)} {await answer.read()!r}"
    relay = GrpcTransport(stack.relay.grpc, "relay")
    try:
        with pytest.raises(PrivprocError) as refused:
            await relay.send(c["error c"].encode())
        errors["relay: grpc"] = f"{refused.value.reason}: {refused.value}"
    finally:
        await relay.close()
    return [summary.text, suggestion.text], errors


def run_stack_and_device(
    tmp_path: Path,
    canaries: Canaries,
    *,
    leak: bool = False,
    read_memory: bool = True,
    up_args: tuple[str, ...] = (),
) -> Evidence:
    """Start ``privproc up``, make the device's requests, stop it; what there is to scan.

    ``leak`` puts :data:`LEAK_DIRECTORY` (a test-only event) on the stack's path;
    ``read_memory`` reads the services' memory (~10 s on 2 cores) before they stop; ``up_args``
    are more flags for ``privproc up`` (``--otlp-endpoint`` to a test collector, whose
    received payloads the caller then adds to the evidence's texts).
    """
    state = tmp_path / "state"
    env = {**os.environ, "PRIVPROC_LOG_LEVEL": "debug"}
    if leak:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LEAK_DIRECTORY), env.get("PYTHONPATH")]))
    # Files, not pipes: nothing blocks a child however much it writes, and nothing is lost.
    up_stdout, up_stderr = tmp_path / "up.stdout", tmp_path / "up.stderr"
    with up_stdout.open("wb") as stdout, up_stderr.open("wb") as stderr:
        up = subprocess.Popen(
            [*UP, "--state-dir", str(state), "--model", "tiny-random", *up_args],
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    taps: dict[str, int] = {}
    try:
        stack_path = state / "stack.json"
        deadline = time.monotonic() + STACK_START_SECONDS
        while not stack_path.exists():
            assert up.poll() is None, up_stderr.read_text()[-4000:]
            assert time.monotonic() < deadline, "stack.json never appeared"
            time.sleep(0.1)
        own = {os.readlink(f"/proc/{up.pid}/fd/{fd}") for fd in (1, 2)}
        pids = {
            Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[4].decode(): pid  # serve NAME
            for pid in _children(up.pid)
        }
        for name, pid in pids.items():
            for stream, fd in _tap_output(pid, own).items():
                taps[f"{name} {stream}"] = fd
        # An operator creates the device's account; the credential is the device's from then on.
        created = _privproc("account", "create", canaries.account, "--state-dir", str(state / "acs"))
        assert created.returncode == 0, created.stderr
        credential = created.stdout.strip()
        stack = StackFile.from_json(json.loads(stack_path.read_text()))  # no path: no client files
        answers, errors = asyncio.run(_device(stack, canaries, credential))
        secrets_by_label = _secrets(canaries, credential, answers)
        memory = _memory_findings(pids, secrets_by_label) if read_memory else []
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
    assert up.returncode == 0
    texts: dict[str, str | bytes] = {"up stdout": up_stdout.read_bytes(), "up stderr": up_stderr.read_bytes()}
    texts.update({f"{name} (after its ready line)": _drain(fd) for name, fd in taps.items()})
    texts.update({f"error text, {label}": text for label, text in errors.items()})
    return Evidence(state, texts, secrets_by_label, memory)


def _acs_database(where: str, state_dir: Path) -> bool:
    return Path(where).parent == state_dir / "acs" and Path(where).name.startswith("acs.sqlite3")


def _account_columns(database: Path, account: str) -> set[tuple[str, str]]:
    """The (table, column) pairs of the ACS's database where a value contains ``account``."""
    found = set()
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')  # names from sqlite_master itself
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                    if account in text:
                        found.add((table, column))
    return found


def unexpected_findings(evidence: Evidence, canaries: Canaries) -> list[Finding]:
    """Every canary found where it must not be (see the module doc for the one exception)."""
    findings = scan(evidence.secrets, files=files_under(evidence.state_dir), texts=evidence.texts)
    account_labels = {"account a", "account b"}
    # The ACS's database holds its accounts' ids, so the file does: there, the rows tell where.
    assert _account_columns(evidence.state_dir / "acs" / "acs.sqlite3", canaries.account) <= {
        ("accounts", "id"),
        ("issuance", "account"),
    }
    return [
        finding
        for finding in findings
        if not (finding.secret in account_labels and _acs_database(finding.where, evidence.state_dir))
    ]


@pytest.mark.timeout(STACK_START_SECONDS + 120)
@pytest.mark.parametrize("export", ["files", "otlp"])
def test_no_canary_leaves_the_device_or_the_cvm(
    tmp_path: Path, export: str, request: pytest.FixtureRequest
) -> None:
    """``files``: telemetry in the state directory; ``otlp``: exported to a collector, scanned too."""
    canaries = Canaries.new()
    receiver = request.getfixturevalue("otlp_receiver") if export == "otlp" else None
    up_args = ("--otlp-endpoint", receiver.endpoint) if receiver is not None else ()
    evidence = run_stack_and_device(tmp_path, canaries, up_args=up_args)
    exported = b""
    if receiver is not None:
        exported = receiver.raw()
        assert receiver.services() and receiver.spans()  # metrics and spans of the stack arrived
        evidence.texts["otlp export"] = exported
    # The scan had something to look at: every service's events (the predictor's may be in the
    # telemetry files its log sidecar writes, or exported), files of every service.
    stderr = evidence.texts["up stderr"]
    assert isinstance(stderr, bytes)
    telemetry = b"".join(path.read_bytes() for path in files_under(evidence.state_dir / "telemetry"))
    for event in ("acs.issued", "relay.forwarded", "gateway.token_redeemed", "predictor.session_answered"):
        assert event.encode() in stderr + telemetry + exported, event
    assert len(files_under(evidence.state_dir)) > 20
    assert len(evidence.texts) > 8  # stdout, stderr, children's output, six error texts
    assert unexpected_findings(evidence, canaries) == []
    assert evidence.memory == []  # only the device and the CVM held what the device sent


@pytest.mark.timeout(STACK_START_SECONDS + 120)
def test_the_scan_finds_a_deliberately_leaked_canary(tmp_path: Path) -> None:
    """The same request with :mod:`tests.e2e.canary_leak` on the stack's path: the scan must fail.

    The test-only event carries the account id (two canaries) from the ACS, which
    authenticates the device's account when it buys tokens (see that module for why there).
    """
    canaries = Canaries.new()
    evidence = run_stack_and_device(tmp_path, canaries, leak=True, read_memory=False)
    stderr = evidence.texts["up stderr"]
    assert isinstance(stderr, bytes) and b'"test.canary_leak"' in stderr  # the leak happened
    findings = unexpected_findings(evidence, canaries)
    assert {finding.secret for finding in findings} == {"account a", "account b"}
    assert {finding.where for finding in findings} >= {"up stderr"}
