"""Issue 11, item 1, the CVM's side: the release staple a lying log or CDN cannot bend.

The predictor staples its release's proof (and consistency proofs from earlier sizes) to every
RA-TLS certificate, so clients never fetch it mid-session. A log that rolls back, forks or shows
two roots, and a CDN that hands out another release's proof, must not get a staple out of the
CVM (it keeps the last good one and says so); and what it staples must let a client whose stored
checkpoint is a little older, or equal, check it with no fetch at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from privproc.ledger.checkpoints import CheckpointStore
from privproc.predictor.staple import RECENT_SIZES, ReleaseStapler, StapleError
from privproc.wire import entries, note, tlog
from privproc.wire.tlogclient import LogPolicy, TransparencyVerifier
from privproc.wire.tlogproof import TlogProof

ORIGIN = "log.staple"
MEASUREMENT = bytes(range(48))


class Log:
    """A log (and a CDN) in memory, able to lie: it serves whatever tree ``serving`` names."""

    def __init__(self) -> None:
        log_key, self.log_vkey = note.generate_key(ORIGIN)
        witness_key, self.witness_vkey = note.generate_key("w.staple", note.ALG_COSIGNATURE_V1)
        self._signers = [note.parse_signer_key(log_key), note.parse_signer_key(witness_key)]
        self.tree = tlog.MemoryHashStore()
        self.entries: list[bytes] = []
        self.serving: tuple[tlog.MemoryHashStore, int] | None = None
        self.release_index = -1
        self.cdn_entry: bytes | None = None
        self.calls = 0

    def add(self, entry: bytes) -> int:
        self.entries.append(entry)
        self.tree.append(entry)
        return len(self.entries) - 1

    def _view(self) -> tuple[tlog.MemoryHashStore, int]:
        return self.serving or (self.tree, self.tree.size)

    def signed(self, tree: tlog.MemoryHashStore, size: int) -> bytes:
        body = note.Checkpoint(ORIGIN, size, tlog.tree_hash(size, tree)).encode()
        return note.sign_note(body, self._signers)

    # --- the StapleSource protocol ---------------------------------------------------------

    async def release_proof(self, measurement: bytes) -> bytes:
        entry = self.cdn_entry or self.entries[self.release_index]
        size = self.release_index + 1
        hashes = tuple(tlog.prove_record(size, self.release_index, self.tree))
        return TlogProof(self.release_index, hashes, self.signed(self.tree, size), entry).encode()

    async def checkpoint(self) -> bytes:
        self.calls += 1
        return self.signed(*self._view())

    async def inclusion(self, index: int, size: int) -> list[bytes]:
        return tlog.prove_record(size, index, self._view()[0])

    async def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        return tlog.prove_tree(new_size, old_size, self._view()[0])

    def client(self, path: Path) -> TransparencyVerifier:
        async def no_fetch(old: int, new: int) -> list[bytes]:
            raise AssertionError("the client fetched a consistency proof")

        policy = LogPolicy(ORIGIN, self.log_vkey, (self.witness_vkey,), 1)
        return TransparencyVerifier(policy, CheckpointStore(path), no_fetch)


RELEASE_KEY = note.parse_signer_key(note.generate_key("release")[0])


def _release(measurement: bytes = MEASUREMENT) -> bytes:
    return entries.CvmReleaseEntry.sign(
        track="predictor",
        version="1.0.0",
        measurements=[measurement.hex()],
        files_digest="sha256:" + "1" * 64,
        image_digest="sha256:" + "5" * 64,
        model_digest="sha256:" + "2" * 64,
        allowlist_digest="sha256:" + "4" * 64,
        host_data="3" * 64,
        min_tcb={"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0},
        supersedes_at=0,
        not_after=2**40,
        provenance={},
        signer=RELEASE_KEY,
    ).encode()


def _key(i: int) -> bytes:
    return entries.OhttpKeyConfigEntry.describing(b"key %d" % i, 1, 0, 10).encode()


@pytest.fixture
def log() -> Log:
    log = Log()
    for i in range(3):
        log.add(_key(i))
    log.release_index = log.add(_release())
    for i in range(3, 8):
        log.add(_key(i))
    return log


def _fork(log: Log, keep: int, size: int) -> tlog.MemoryHashStore:
    fork = tlog.MemoryHashStore()
    for entry in log.entries[:keep]:
        fork.append(entry)
    for i in range(size - keep):
        fork.append(b"fork %d" % i)
    return fork


async def test_a_rolled_back_forked_or_two_faced_log_gets_no_staple(log: Log) -> None:
    stapler = ReleaseStapler(MEASUREMENT, log)
    assert await stapler.refresh() and stapler.checkpoint is not None and stapler.checkpoint.size == 9
    good = stapler.current()
    for lie in (
        (log.tree, 6),  # rolled back
        (_fork(log, 5, 9), 9),  # the same size, another root
        (_fork(log, 5, 12), 12),  # grown, but not from what it served before
    ):
        log.serving = lie
        with pytest.raises(StapleError):
            await stapler.refresh()
        assert stapler.current() == good  # the last good staple still serves
    log.serving = None
    for i in range(8, 10):
        log.add(_key(i))
    assert await stapler.refresh() and stapler.checkpoint.size == 11  # type: ignore[union-attr]


async def test_a_cdn_proof_of_another_release_gets_no_staple(log: Log) -> None:
    log.cdn_entry = _release(bytes(48))  # the CDN swaps in another measurement's release
    with pytest.raises(StapleError):
        await ReleaseStapler(MEASUREMENT, log).refresh()


async def test_what_the_cvm_staples_a_client_checks_without_any_fetch(log: Log, tmp_path: Path) -> None:
    stapler = ReleaseStapler(MEASUREMENT, log)
    await stapler.refresh()  # 9
    client_at_9 = log.client(tmp_path / "a.json")
    client_at_9.verify_staple(stapler.current())  # type: ignore[arg-type]
    for i in range(8, 20):
        log.add(_key(i))
    await stapler.refresh()  # 21: proofs from 9 (seen) and the last few sizes
    staple = stapler.current()
    assert staple is not None
    sizes = {size for size, _ in staple.consistency}
    assert 9 in sizes and set(range(21 - RECENT_SIZES, 21)) <= sizes
    verified = client_at_9.verify_staple(staple)
    assert verified.index == log.release_index and verified.checkpoint.size == 21
    stored = client_at_9.store.load(ORIGIN)
    assert stored is not None and stored.size == 21
    # A client that stored size 15 (from a refresh) is covered by the recent sizes.
    client_at_15 = log.client(tmp_path / "b.json")
    body = log.signed(log.tree, 15)
    checkpoint, _ = client_at_15.open_checkpoint(body)
    client_at_15.store.save(checkpoint)
    client_at_15.verify_staple(staple)
    assert client_at_15.store.load(ORIGIN).size == 21  # type: ignore[union-attr]
