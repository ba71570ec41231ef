"""Issue 11, item 15: the client's stored checkpoint must never move backwards.

Two accepts racing (sizes 10 and 12) each loaded the stored checkpoint, awaited a consistency
proof from the log, then overwrote the store: whichever proof came back last won, so a slow
proof for 10 left 10 after 12 had been stored. A log that answers slowly on purpose could roll
every client back to a checkpoint it later forks from. Now a per-origin lock serialises accepts
and each save is a compare-and-swap that never lowers the size, also across processes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from privproc.ledger.checkpoints import CheckpointStore
from privproc.wire import entries, note, tlog
from privproc.wire.tlogclient import LogPolicy, TransparencyVerifier

ORIGIN = "log.race"


class Log:
    """A real Merkle log whose consistency proofs for size 10 come back slower than for 12."""

    def __init__(self) -> None:
        log_key, self.log_vkey = note.generate_key(ORIGIN)
        witness_key, self.witness_vkey = note.generate_key("w.race", note.ALG_COSIGNATURE_V1)
        self._signers = [note.parse_signer_key(log_key), note.parse_signer_key(witness_key)]
        self.tree = tlog.MemoryHashStore()
        for i in range(12):
            self.tree.append(entries.OhttpKeyConfigEntry.describing(b"%d" % i, 1, 0, 10).encode())

    def verifier(self, store: CheckpointStore) -> TransparencyVerifier:
        policy = LogPolicy(ORIGIN, self.log_vkey, (self.witness_vkey,), 1)
        return TransparencyVerifier(policy, store, self.consistency)

    async def consistency(self, old: int, new: int) -> list[bytes]:
        # The proof that ends at 10 is slow: without a lock it lands after the one for 12.
        for _ in range(1 if new == 12 else 25):
            await asyncio.sleep(0)
        return tlog.prove_tree(new, old, self.tree)

    def checkpoint(self, size: int, verifier: TransparencyVerifier) -> note.Checkpoint:
        body = note.Checkpoint(ORIGIN, size, tlog.tree_hash(size, self.tree)).encode()
        checkpoint, _ = verifier.open_checkpoint(note.sign_note(body, self._signers))
        return checkpoint


@pytest.mark.parametrize("first", [10, 12])
async def test_concurrent_accepts_of_10_and_12_leave_12(tmp_path: Path, first: int) -> None:
    log = Log()
    store = CheckpointStore(tmp_path / "client" / "checkpoints.json")
    verifier = log.verifier(store)
    await verifier.accept(log.checkpoint(5, verifier))
    order = [first, 22 - first]
    await asyncio.gather(*(verifier.accept(log.checkpoint(size, verifier)) for size in order))
    stored = store.load(ORIGIN)
    assert stored is not None and stored.size == 12
    assert stored.root == tlog.tree_hash(12, log.tree)


@pytest.mark.parametrize("first", [10, 12])
async def test_two_processes_sharing_the_store_never_lower_it(tmp_path: Path, first: int) -> None:
    """Two clients (two store objects on one file, as two processes) race the same way."""
    log = Log()
    path = tmp_path / "client" / "checkpoints.json"
    a, b = log.verifier(CheckpointStore(path)), log.verifier(CheckpointStore(path))
    await a.accept(log.checkpoint(5, a))
    racers = {first: a, 22 - first: b}
    await asyncio.gather(*(v.accept(log.checkpoint(size, v)) for size, v in racers.items()))
    stored = CheckpointStore(path).load(ORIGIN)
    assert stored is not None and stored.size == 12


async def test_the_store_persists_in_the_client_state_dir_by_default(tmp_path: Path) -> None:
    from privproc.client.transparency import default_store
    from privproc.stackfile import StackFile

    stack_json = tmp_path / "stack.json"
    stack_json.write_text(
        '{"relay": {"grpc": "r", "ohttp_url": "u"},'
        ' "gateway": {"grpc": "g", "origin": "o", "ohttp_url": "u", "keys_url": "k"},'
        ' "cdn": {"grpc": "c", "http_url": "h", "keys_url": "k", "issuer_directory_url": "i",'
        ' "checkpoint_url": "c", "proofs_url": "p"}}'
    )
    store = default_store(StackFile.load(stack_json))
    assert store.path == tmp_path / "client" / "checkpoints.json"
    log = Log()
    verifier = log.verifier(store)
    await verifier.accept(log.checkpoint(12, verifier))
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    assert oct(store.path.parent.stat().st_mode & 0o777) == "0o700"
    assert CheckpointStore(store.path).load(ORIGIN) == log.checkpoint(12, verifier)
