"""The transparency ledger end to end: appends, tiles, witnesses, the client's checks, crash safety."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc import aio

from privproc.client import OhttpClient, TokenWallet
from privproc.errors import UnavailableError
from privproc.ledger.checkpoints import CheckpointStore
from privproc.ledger.log import append_message
from privproc.ledger.publisher import LedgerPublisher
from privproc.ledger.server import LedgerConfig, LedgerService, WitnessEndpoint
from privproc.ledger.store import LedgerStore
from privproc.ledger.witness import AddCheckpoint, Witness, WitnessState
from privproc.ledger.witness_server import WitnessConfig, WitnessService
from privproc.runtime.cdn_publisher import CdnPublisher, ohttp_keys_proof_name
from privproc.stackfile import StackFile
from privproc.v1 import ledger_pb2, ledger_pb2_grpc
from privproc.wire import entries, note, tlog, tlog_tiles
from privproc.wire.tlogclient import (
    EntryMismatchError,
    InconsistentCheckpointError,
    InsufficientCosignaturesError,
    NotLoggedError,
)
from tests.interop import independent_tlog_verifier as independent
from tests.livestack import LOG_ORIGIN, LedgerKeys, Stack, secret_file

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


async def _served_keys(stack: Stack) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(stack.file.cdn.keys_url) as resp:
        return await resp.read()


async def test_independent_verifier_recomputes_the_served_log(stack: Stack) -> None:
    assert stack.file.ledger is not None and stack.file.witness is not None
    audit = await asyncio.to_thread(
        independent.audit, stack.file.ledger.tiles_url, stack.file.ledger.vkey, [stack.file.witness.vkey], 1
    )
    assert audit.checkpoint.size >= 3  # the OHTTP key config and the issuer keys (types 1 and 2)
    index = independent.find_ohttp_key_config(audit.entries, await _served_keys(stack))
    assert index >= 0


async def test_client_receipt_names_the_logged_key(stack: Stack) -> None:
    async with OhttpClient.from_stack(stack.file) as client:
        _, receipt = await client.health()
    assert receipt.ohttp_key_log_index is not None and receipt.witnesses == ("witness.test",)
    assert receipt.checkpoint is not None and receipt.checkpoint["origin"] == LOG_ORIGIN


async def test_unlogged_key_configuration_is_refused_before_anything_is_sent(stack: Stack) -> None:
    body = await _served_keys(stack)
    stack.cdn.store._documents.pop("proof:" + ohttp_keys_proof_name(body))  # the CDN lost (or hid) the proof
    async with OhttpClient.from_stack(stack.file) as client:
        with pytest.raises(NotLoggedError):
            await client.health()
    assert stack.recorder.seen == []  # the gateway received nothing


async def test_too_few_cosignatures_are_refused(stack: Stack) -> None:
    document = {**stack.file.raw, "min_cosignatures": 2}
    async with OhttpClient.from_stack(StackFile.from_json(document)) as client:
        with pytest.raises(InsufficientCosignaturesError):
            await client.health()
    assert stack.recorder.seen == []


async def test_a_proof_for_another_entry_is_refused(stack: Stack) -> None:
    body = await _served_keys(stack)
    publisher = LedgerPublisher(stack.file.ledger.grpc, stack.keys.gateway)  # type: ignore[union-attr]
    try:
        other = await publisher.publish(
            entries.OhttpKeyConfigEntry.describing(b"another key config", 9, 0, 2**40).encode()
        )
    finally:
        await publisher.close()
    # A genuine, logged entry — but for other bytes than the served key configuration.
    credential = Path(stack.gateway.config.cdn_credential_file or "")
    await CdnPublisher(stack.file.cdn.grpc, credential, service="gateway").proof(
        ohttp_keys_proof_name(body), other.encode()
    )
    async with OhttpClient.from_stack(stack.file) as client:
        with pytest.raises(EntryMismatchError):
            await client.health()
    assert stack.recorder.seen == []


async def test_split_view_is_caught_by_the_client(stack: Stack, tmp_path: Path) -> None:
    """The client saw a fork of the log (same key, other history): the real log's proofs are refused."""
    fork = LedgerStore(tmp_path / "fork.sqlite3")
    signer = note.parse_signer_key(stack.keys.log)
    for i in range(50):
        fork.append_batch([entries.OhttpKeyConfigEntry.describing(b"fork %d" % i, 1, 0, 1).encode()])
    forked = note.Checkpoint(LOG_ORIGIN, fork.size, tlog.tree_hash(fork.size, fork))
    store = CheckpointStore(tmp_path / "client.json")
    store.save(forked)
    async with OhttpClient.from_stack(stack.file, checkpoints=store) as client:
        with pytest.raises(InconsistentCheckpointError):
            await client.health()
    assert stack.recorder.seen == []
    assert signer.name == LOG_ORIGIN


async def test_unlogged_token_key_is_refused_before_any_token_is_bought(stack: Stack) -> None:
    assert stack.acs is not None
    for name in [k for k in stack.cdn.store._documents if k.startswith("proof:token-key-")]:
        stack.cdn.store._documents.pop(name)
    before = stack.acs.issuer.limiter.remaining("demo", stack.acs.clock())
    async with OhttpClient.from_stack(stack.file) as client:
        wallet = TokenWallet.from_stack(
            stack.file, transparency=client.transparency, allow_linkable_purchase=True
        )
        try:
            with pytest.raises(NotLoggedError):
                await client.session_request(wallet)
        finally:
            await wallet.close()
    assert stack.acs.issuer.limiter.remaining("demo", stack.acs.clock()) == before


async def test_appends_need_an_authorised_publisher_and_a_known_entry(stack: Stack) -> None:
    assert stack.file.ledger is not None
    entry = entries.OhttpKeyConfigEntry.describing(b"x", 1, 0, 1).encode()
    rogue = note.parse_signer_key(note.generate_key("gateway")[0])  # right name, wrong key
    async with aio.insecure_channel(stack.file.ledger.grpc) as channel:
        stub = ledger_pb2_grpc.LedgerStub(channel)
        forged = rogue.sign(append_message(entry))
        cases = [
            (
                ledger_pb2.AppendRequest(entry=entry, publisher_signature=forged, publisher="gateway"),
                PERMISSION_DENIED,
            ),
            (
                ledger_pb2.AppendRequest(entry=entry, publisher_signature=b"", publisher="nobody"),
                PERMISSION_DENIED,
            ),
        ]
        gateway = note.parse_signer_key(stack.keys.gateway)
        bad_entry = b'{"kind":"nonsense"}'
        cases.append(
            (
                ledger_pb2.AppendRequest(
                    entry=bad_entry,
                    publisher_signature=gateway.sign(append_message(bad_entry)),
                    publisher="gateway",
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
        )
        for request, code in cases:
            with pytest.raises(aio.AioRpcError) as info:
                await stub.Append(request, timeout=5)
            assert info.value.code() == code
        # A batch: each append judged on its own.
        other = entries.OhttpKeyConfigEntry.describing(b"batch", 2, 0, 1).encode()
        batch = await stub.AppendBatch(
            ledger_pb2.AppendBatchRequest(
                appends=[
                    ledger_pb2.AppendRequest(
                        entry=other,
                        publisher_signature=gateway.sign(append_message(other)),
                        publisher="gateway",
                    ),
                    cases[0][0],
                ]
            ),
            timeout=5,
        )
        assert batch.results[0].WhichOneof("result") == "index"
        assert batch.results[1].error.startswith("permission_denied")
        with pytest.raises(aio.AioRpcError):
            await stub.AppendBatch(ledger_pb2.AppendBatchRequest(appends=[]), timeout=5)
        # The same entry twice: one index.
        good = ledger_pb2.AppendRequest(
            entry=entry, publisher_signature=gateway.sign(append_message(entry)), publisher="gateway"
        )
        first = await stub.Append(good, timeout=5)
        again = await stub.Append(good, timeout=5)
        assert first.index == again.index


async def test_tiles_are_served_with_cache_rules(stack: Stack) -> None:
    assert stack.file.ledger is not None
    base = stack.file.ledger.tiles_url
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/checkpoint") as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            size = int((await resp.read()).split(b"\n")[1])
        async with session.get(f"{base}/tile/0/000.p/{size}") as resp:
            assert resp.status == 200 and "max-age=1" in resp.headers["Cache-Control"]
            assert len(await resp.read()) == 32 * size
        async with session.get(f"{base}/tile/entries/000.p/{size}") as resp:
            assert len(tlog_tiles.decode_entry_bundle(await resp.read())) == size
        for missing in (
            f"tile/0/000.p/{size + 1}",
            "tile/0/000",
            "tile/1/000.p/1",
            "tile/0/x",
            "tile/../etc",
        ):
            async with session.get(f"{base}/{missing}") as resp:
                assert resp.status == 404


async def test_no_append_is_acknowledged_before_a_witness_cosigned(tmp_path: Path) -> None:
    """A proof against an unwitnessed checkpoint is refused by every client: the ledger answers
    UNAVAILABLE until its witness cosigns, and the publisher's retry gets the same index."""
    import socket

    keys = LedgerKeys.make()
    with socket.socket() as probe:  # a port the witness will take later; nothing answers there yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ledger = LedgerService(
        LedgerConfig(
            tmp_path / "ledger",
            secret_file(tmp_path / "keys", "ledger.key", keys.log),
            keys.publishers(),
            (WitnessEndpoint(f"http://127.0.0.1:{port}", keys.witness_vkey),),
        )
    )
    endpoints = await ledger.start()
    witness: WitnessService | None = None
    publisher = LedgerPublisher(str(endpoints["grpc"]), keys.gateway)
    entry = entries.OhttpKeyConfigEntry.describing(b"cfg", 1, 0, 1).encode()
    try:
        with pytest.raises(UnavailableError):
            await publisher.publish(entry)
        witness = WitnessService(
            WitnessConfig(
                tmp_path / "witness",
                secret_file(tmp_path / "keys", "witness.key", keys.witness),
                (keys.log_vkey,),
                http_port=port,
            )
        )
        await witness.start()
        proof = await publisher.publish(entry)
        assert proof.index == 0  # the same entry, logged once
        note.open_note(proof.checkpoint, [note.parse_verifier_key(keys.witness_vkey)])
    finally:
        await publisher.close()
        await ledger.stop()
        if witness is not None:
            await witness.stop()


def test_witness_refuses_split_views_loudly(tmp_path: Path) -> None:
    log = note.parse_signer_key(note.generate_key("log.example")[0])
    witness = Witness(
        WitnessState(tmp_path / "w.sqlite3"),
        note.parse_signer_key(note.generate_key("w.example", note.ALG_COSIGNATURE_V1)[0]),  # type: ignore[arg-type]
        {"log.example": [log.verifier()]},
    )
    a, b = tlog.MemoryHashStore(), tlog.MemoryHashStore()
    for i in range(10):
        a.append(b"entry %d" % i)
        b.append(b"entry %d" % i if i < 6 else b"other %d" % i)

    def signed(store: tlog.MemoryHashStore, size: int) -> bytes:
        return note.sign_note(
            note.Checkpoint("log.example", size, tlog.tree_hash(size, store)).encode(), [log]
        )

    assert witness.add_checkpoint(AddCheckpoint(0, (), signed(a, 5)).encode()).status == 200
    proof = tuple(tlog.prove_tree(10, 5, a))
    assert witness.add_checkpoint(AddCheckpoint(5, proof, signed(a, 10)).encode()).status == 200
    # Same size, another root: split view.
    assert witness.add_checkpoint(AddCheckpoint(10, (), signed(b, 10)).encode()).status == 409
    # A fork that does not extend what was cosigned: its proof cannot verify.
    b.append(b"more")
    assert (
        witness.add_checkpoint(
            AddCheckpoint(10, tuple(tlog.prove_tree(11, 10, b)), signed(b, 11)).encode()
        ).status
        == 422
    )
    assert {reason for _, reason in witness.state.incidents()} == {"split_view", "inconsistent"}
    # Stale old size: told the current one.
    stale = witness.add_checkpoint(AddCheckpoint(5, proof, signed(a, 10)).encode())
    assert (stale.status, stale.content_type, stale.body) == (409, "text/x.tlog.size", b"10\n")
    # Unknown origin, bad signature, garbage.
    other = note.parse_signer_key(note.generate_key("log.example")[0])
    forged = note.sign_note(note.Checkpoint("log.example", 10, tlog.tree_hash(10, a)).encode(), [other])
    assert witness.add_checkpoint(AddCheckpoint(10, (), forged).encode()).status == 403
    assert witness.add_checkpoint(b"garbage").status == 400


def test_crash_safety_kill_9_during_appends(tmp_path: Path) -> None:
    """kill -9 the ledger mid-stream: acked entries survive; the tree extends the last checkpoint served."""
    log_key, log_vkey = note.generate_key("log.crash")
    pub_key, pub_vkey = note.generate_key("pub")
    key_file = tmp_path / "log.key"
    key_file.write_text(log_key)
    args = [sys.executable, "-m", "privproc", "serve", "ledger", "--state-dir", str(tmp_path / "state"),
            "--signer-key-file", str(key_file), "--publisher", "ohttp-key-config:" + pub_vkey]  # fmt: skip

    def start() -> tuple[subprocess.Popen[bytes], str]:
        process = subprocess.Popen(args, stdout=subprocess.PIPE)
        assert process.stdout is not None
        return process, str(json.loads(process.stdout.readline())["ready"]["grpc"])

    process, target = start()
    acked: dict[int, bytes] = {}
    served: list[bytes] = []

    async def stream() -> None:
        publisher_signer = note.parse_signer_key(pub_key)
        async with aio.insecure_channel(target) as channel:
            stub = ledger_pb2_grpc.LedgerStub(channel)

            async def worker(w: int) -> None:
                for i in range(100_000):
                    entry = entries.OhttpKeyConfigEntry.describing(b"w%d-%d" % (w, i), i % 256, 0, 1).encode()
                    request = ledger_pb2.AppendRequest(
                        entry=entry,
                        publisher_signature=publisher_signer.sign(append_message(entry)),
                        publisher="pub",
                    )
                    try:
                        reply = await stub.Append(request, timeout=5)
                    except aio.AioRpcError:
                        return
                    acked[reply.index] = entry
                    served.append(bytes(reply.checkpoint.note))

            async def killer() -> None:
                await asyncio.sleep(1.0)
                os.kill(process.pid, signal.SIGKILL)

            await asyncio.gather(*(worker(w) for w in range(8)), killer())

    asyncio.run(stream())
    process.wait()
    assert len(acked) > 50
    last_served = max(
        (note.Checkpoint.parse(n.split(b"\n\n")[0] + b"\n") for n in served), key=lambda c: c.size
    )

    process, target = start()
    try:

        async def check() -> None:
            async with aio.insecure_channel(target) as channel:
                stub = ledger_pb2_grpc.LedgerStub(channel)
                checkpoint_note = (
                    await stub.GetCheckpoint(ledger_pb2.GetLedgerCheckpointRequest(), timeout=5)
                ).note
                checkpoint, _ = note.open_checkpoint(
                    checkpoint_note, "log.crash", [note.parse_verifier_key(log_vkey)]
                )
                assert checkpoint.size >= last_served.size >= max(acked) + 1 - 8
                proof = await stub.GetConsistencyProof(
                    ledger_pb2.GetConsistencyProofRequest(
                        old_size=last_served.size, new_size=checkpoint.size
                    ),
                    timeout=5,
                )
                tlog.check_tree(
                    list(proof.hashes), checkpoint.size, checkpoint.root, last_served.size, last_served.root
                )
                for start_index in range(0, max(acked) + 1, 256):
                    got = await stub.GetEntries(
                        ledger_pb2.GetEntriesRequest(start=start_index, end=start_index + 256), timeout=5
                    )
                    for offset, entry in enumerate(got.entries):
                        if start_index + offset in acked:
                            assert entry == acked[start_index + offset]
                assert checkpoint.size >= max(acked) + 1

        asyncio.run(check())
    finally:
        process.terminate()
        process.wait(timeout=10)
