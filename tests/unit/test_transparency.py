"""The client's transparency checks on their own: checkpoints, quorum, consistency, inclusion, storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from privproc.client.transparency import (
    CheckpointSignatureError,
    CheckpointStore,
    InclusionProofError,
    InconsistentCheckpointError,
    InsufficientCosignaturesError,
    LogPolicy,
    TransparencyVerifier,
)
from privproc.ledger import entries
from privproc.wire import note, tlog
from privproc.wire.tlogproof import TlogProof

ORIGIN = "log.unit"


class World:
    def __init__(self, tmp_path: Path, min_cosignatures: int = 1) -> None:
        log_key, log_vkey = note.generate_key(ORIGIN)
        w_key, w_vkey = note.generate_key("w.unit", note.ALG_COSIGNATURE_V1)
        self.log = note.parse_signer_key(log_key)
        self.witness = note.parse_signer_key(w_key)
        self.tree = tlog.MemoryHashStore()
        self.entries: list[bytes] = []
        self.store = CheckpointStore(tmp_path / "client" / "checkpoints.json")
        self.verifier = TransparencyVerifier(
            LogPolicy(ORIGIN, log_vkey, (w_vkey,), min_cosignatures), self.store, self.consistency
        )

    async def consistency(self, old: int, new: int) -> list[bytes]:
        return tlog.prove_tree(new, old, self.tree)

    def add(self, n: int) -> None:
        for _ in range(n):
            entry = entries.ohttp_key_config_entry(b"%d" % len(self.entries), 1, 0, 10)
            self.entries.append(entry)
            self.tree.append(entry)

    def signed(self, size: int | None = None, cosign: bool = True, root: bytes | None = None) -> bytes:
        size = self.tree.size if size is None else size
        checkpoint = note.Checkpoint(ORIGIN, size, root or tlog.tree_hash(size, self.tree))
        return note.sign_note(checkpoint.encode(), [self.log, *([self.witness] if cosign else [])])

    def proof(self, index: int, size: int | None = None, **kw: object) -> bytes:
        size = self.tree.size if size is None else size
        hashes = tuple(tlog.prove_record(size, index, self.tree))
        return TlogProof(index, hashes, self.signed(size, **kw), self.entries[index]).encode()  # type: ignore[arg-type]


async def test_valid_proof_is_accepted_and_its_checkpoint_stored(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(10)
    verified = await world.verifier.verify_proof(world.proof(3))
    assert (
        verified.index == 3
        and verified.witnesses == ("w.unit",)
        and verified.entry["kind"] == "ohttp-key-config"
    )
    assert world.store.load(ORIGIN) == verified.checkpoint
    assert oct((tmp_path / "client" / "checkpoints.json").stat().st_mode & 0o777) == "0o600"
    # An older proof (smaller checkpoint) is fine if consistent; the stored one stays the newest.
    world.add(5)
    await world.verifier.verify_proof(world.proof(12))
    await world.verifier.verify_proof(world.proof(3, size=10))
    assert world.store.load(ORIGIN).size == 15  # type: ignore[union-attr]


async def test_same_size_other_root_is_a_split_view(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(4)
    await world.verifier.verify_proof(world.proof(0))
    other = tlog.MemoryHashStore()
    for i in range(4):
        other.append(b"other %d" % i)
    forged = world.signed(4, root=tlog.tree_hash(4, other))  # the log really signed it: a split view
    with pytest.raises(InconsistentCheckpointError):
        cp, _ = world.verifier.open_checkpoint(forged)
        await world.verifier.accept(cp)


async def test_rejections(tmp_path: Path) -> None:
    world = World(tmp_path, min_cosignatures=1)
    world.add(6)
    with pytest.raises(InsufficientCosignaturesError):
        await world.verifier.verify_proof(world.proof(1, cosign=False))
    bad = TlogProof.decode(world.proof(1))
    with pytest.raises(InclusionProofError):  # the entry is not the one at that index
        await world.verifier.verify_proof(
            TlogProof(bad.index, bad.hashes, bad.checkpoint, world.entries[2]).encode()
        )
    with pytest.raises(InclusionProofError):
        await world.verifier.verify_proof(
            TlogProof(bad.index, bad.hashes[:-1], bad.checkpoint, bad.extra).encode()
        )
    with pytest.raises(CheckpointSignatureError):
        await world.verifier.verify_proof(bad.encode().replace(b"\n6\n", b"\n5\n"))
    with pytest.raises(InclusionProofError):
        await world.verifier.verify_proof(b"not a proof")
