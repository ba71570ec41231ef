"""The client's transparency checks on their own: checkpoints, quorum, consistency, inclusion, storage."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc import events
from privproc.attestation.evidence import ReleaseStaple, StapleFormatError
from privproc.client.refresh import FetchDuringSessionError, LogRefresher, SessionGuard
from privproc.client.transparency import split_view_alarm
from privproc.ledger.checkpoints import CheckpointStore
from privproc.wire import entries, note, tlog, tlog_tiles
from privproc.wire.tlogclient import (
    CheckpointSignatureError,
    InclusionProofError,
    InconsistentCheckpointError,
    InsufficientCosignaturesError,
    LogPolicy,
    SplitViewAlarmError,
    StaleCheckpointError,
    TransparencyError,
    TransparencyVerifier,
)
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
        self.fetches: list[tuple[int, int]] = []
        self.tile_fetches: list[str] = []
        self.verifier = TransparencyVerifier(
            LogPolicy(ORIGIN, log_vkey, (w_vkey,), min_cosignatures),
            self.store,
            self.consistency,
            security_error=split_view_alarm,
        )

    async def consistency(self, old: int, new: int) -> list[bytes]:
        self.fetches.append((old, new))
        return tlog.prove_tree(new, old, self.tree)

    def staple(
        self, index: int, size: int, *, since: tuple[int, ...] = (), tree: tlog.MemoryHashStore | None = None
    ) -> ReleaseStaple:
        """What a CVM would staple: the proof of ``index`` at ``size``, consistency from ``since``."""
        tree = tree or self.tree
        hashes = tuple(tlog.prove_record(size, index, tree))
        checkpoint = note.Checkpoint(ORIGIN, size, tlog.tree_hash(size, tree))
        signed = note.sign_note(checkpoint.encode(), [self.log, self.witness])
        proof = TlogProof(index, hashes, signed, self.entries[index]).encode()
        return ReleaseStaple(proof, tuple((old, tuple(tlog.prove_tree(size, old, tree))) for old in since))

    def add(self, n: int) -> None:
        for _ in range(n):
            entry = entries.OhttpKeyConfigEntry.describing(b"%d" % len(self.entries), 1, 0, 10).encode()
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
        and isinstance(verified.entry, entries.OhttpKeyConfigEntry)
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


# --- release staples: checked against the stored checkpoint with no fetch ------------------------


def _stored(world: World) -> int:
    stored = world.store.load(ORIGIN)
    assert stored is not None
    return stored.size


async def test_staple_first_seen_is_stored_and_fetches_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(8)
    verified = world.verifier.verify_staple(world.staple(5, 8))
    assert verified.index == 5 and _stored(world) == 8 and world.fetches == []
    world.verifier.verify_staple(world.staple(2, 8))  # N = M: same root
    assert _stored(world) == 8


async def test_staple_ahead_needs_a_stapled_proof_from_the_stored_size(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(8)
    world.verifier.verify_staple(world.staple(5, 8))
    world.add(4)
    with pytest.raises(StaleCheckpointError):  # no proof from 8: refused, store unchanged
        world.verifier.verify_staple(world.staple(5, 12, since=(9, 10, 11)))
    assert _stored(world) == 8
    world.verifier.verify_staple(world.staple(5, 12, since=(8, 11)))
    assert _stored(world) == 12 and world.fetches == []


async def test_staple_ahead_from_a_fork_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(8)
    world.verifier.verify_staple(world.staple(5, 8))
    fork = tlog.MemoryHashStore()
    for entry in world.entries[:4]:
        fork.append(entry)
    for i in range(8):
        fork.append(b"fork %d" % i)
    world.entries += [b"fork %d" % i for i in range(4, 8)]  # indexes 8..11 (unused by the proof)
    forged = world.staple(2, 12, since=(8,), tree=fork)  # signed by the log and the witness
    with pytest.raises(InconsistentCheckpointError):
        world.verifier.verify_staple(forged)
    assert _stored(world) == 8


async def test_staple_behind_is_accepted_if_seen_or_linked_then_audited(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(6)
    world.verifier.verify_staple(world.staple(1, 6))
    world.add(4)
    world.verifier.verify_staple(world.staple(1, 10, since=(6,)))
    world.add(4)
    world.verifier.verify_staple(world.staple(1, 14, since=(10,)))
    # A CVM still on 10 (a checkpoint this client accepted): fine, nothing to audit.
    world.verifier.verify_staple(world.staple(1, 10, since=(6,)))
    assert world.store.state(ORIGIN).pending == ()
    # A CVM on 12, never seen: linked to 10 by its staple, then audited against 14 outside sessions.
    world.verifier.verify_staple(world.staple(1, 12, since=(10,)))
    assert [c.size for c in world.store.state(ORIGIN).pending] == [12] and world.fetches == []
    assert await world.verifier.audit() == 1
    assert world.fetches == [(12, 14)] and world.store.state(ORIGIN).pending == ()
    # Behind and linked to nothing this client accepted: refused.
    with pytest.raises(StaleCheckpointError):
        world.verifier.verify_staple(world.staple(1, 13, since=(11,)))


async def test_failed_audit_is_an_alarm_that_refuses_everything(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(6)
    world.verifier.verify_staple(world.staple(1, 6))
    world.add(6)
    world.verifier.verify_staple(world.staple(1, 12, since=(6,)))
    # A fork that shares the first 6 entries, shown to this client at size 9.
    fork = tlog.MemoryHashStore()
    for entry in world.entries[:6]:
        fork.append(entry)
    for i in range(3):
        fork.append(b"fork %d" % i)
    world.verifier.verify_staple(world.staple(1, 9, since=(6,), tree=fork))  # linked to 6: pending
    with pytest.raises(SplitViewAlarmError):
        await world.verifier.audit()  # the real log cannot prove 9 (fork root) consistent with 12
    with pytest.raises(SplitViewAlarmError):
        world.verifier.verify_staple(world.staple(1, 12, since=(6,)))
    # The alarm is on disk: a new client process refuses too.
    again = TransparencyVerifier(world.verifier.policy, CheckpointStore(world.store.path), world.consistency)
    with pytest.raises(SplitViewAlarmError):
        again.verify_staple(world.staple(1, 12))


async def test_store_keeps_history_and_never_lowers(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(12)
    for size in (4, 8, 12):
        cp, _ = world.verifier.open_checkpoint(world.signed(size))
        world.store.save(cp)
    cp, _ = world.verifier.open_checkpoint(world.signed(10))
    assert world.store.save(cp) is not None and _stored(world) == 12
    assert [c.size for c in world.store.state(ORIGIN).history] == [4, 8, 12]
    (tmp_path / "client" / "checkpoints.json").write_text('{"log.unit": {"size": "x"}}')
    with pytest.raises(StaleCheckpointError.__mro__[1]):  # TransparencyError: corrupt store
        world.store.state(ORIGIN)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_staple_decoding_never_crashes(data: bytes) -> None:
    try:
        staple = ReleaseStaple.decode(data)
    except StapleFormatError:
        return
    assert ReleaseStaple.decode(staple.encode()) == staple


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**40), st.lists(st.binary(min_size=32, max_size=32), max_size=4)),
        max_size=20,
    )
)
def test_staple_bounds(consistency: list[tuple[int, list[bytes]]]) -> None:
    staple = ReleaseStaple(b"proof", tuple((size, tuple(hashes)) for size, hashes in consistency))
    sizes = [size for size, _ in consistency]
    if len(consistency) > 16 or len(set(sizes)) != len(sizes):
        with pytest.raises(StapleFormatError):
            ReleaseStaple.decode(staple.encode())
    else:
        assert ReleaseStaple.decode(staple.encode()) == staple


# --- the refresher and the session guard -------------------------------------------------------


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    def observe(self, index: int, entry: entries.Entry) -> None:
        self.seen.append((index, entry.kind))


def _tiles(world: World, size: list[int]) -> Callable[[str], Awaitable[bytes]]:
    """The log's HTTP view (checkpoint, hash tiles, entry bundles) at ``size[0]``, from memory."""

    async def fetch(path: str) -> bytes:
        world.tile_fetches.append(path)
        for _ in range(5):  # a round trip: the refresh stays in flight for a while
            await asyncio.sleep(0)
        if path == "checkpoint":
            return world.signed(size[0])
        tile = tlog_tiles.Tile.parse(path)
        if tile.level == tlog_tiles.ENTRIES_LEVEL:
            start = tile.n * tlog_tiles.TILE_WIDTH
            return tlog_tiles.encode_entry_bundle(world.entries[start : start + tile.width])
        return tlog_tiles.tile_data(tile, world.tree)

    return fetch


async def test_refresh_advances_audits_and_feeds_entries_in_order(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(6)
    world.verifier.verify_staple(world.staple(1, 6))
    world.add(6)
    size = [12]
    observer = Observer()
    refresher = LogRefresher(world.verifier, SessionGuard(), _tiles(world, size), observer=observer)
    assert refresher.due
    assert await refresher.refresh() == 12 and not refresher.due
    assert [i for i, _ in observer.seen] == list(range(12))
    # A CVM still at 9 (linked to 6 by its staple) is accepted, then audited by the next refresh.
    world.verifier.verify_staple(world.staple(1, 9, since=(6,)))
    world.add(3)
    size[0] = 15
    assert await refresher.refresh() == 15
    assert world.store.state(ORIGIN).pending == () and (9, 15) in world.fetches
    assert [i for i, _ in observer.seen] == list(range(15))  # each entry once, in log order


async def test_refresh_and_sessions_exclude_each_other(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(4)
    world.verifier.verify_staple(world.staple(1, 4))
    guard = SessionGuard()
    world.verifier.guard = guard
    refresher = LogRefresher(world.verifier, guard, _tiles(world, [4]))
    ticket = guard.ticket()
    await ticket.open()
    refresh = asyncio.create_task(refresher.refresh())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not refresh.done() and world.tile_fetches == []  # never while a session is open
    # Fetches from inside a session are refused outright.
    with pytest.raises(FetchDuringSessionError):
        await world.verifier.accept(note.Checkpoint(ORIGIN, 1, tlog.tree_hash(1, world.tree)))
    ticket.close()
    later = guard.ticket()
    opening = asyncio.create_task(later.open())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not opening.done()  # a session waits for the refresh that was waiting first
    await opening
    assert refresh.done()
    await refresh
    assert later.is_open and world.tile_fetches[0] == "checkpoint"
    later.close()


async def test_refresh_raises_the_split_view_alarm(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.add(6)
    world.verifier.verify_staple(world.staple(1, 6))
    world.add(6)
    refresher = LogRefresher(world.verifier, SessionGuard(), _tiles(world, [12]))
    await refresher.refresh()
    fork = tlog.MemoryHashStore()
    for entry in world.entries[:6]:
        fork.append(entry)
    for i in range(3):
        fork.append(b"fork %d" % i)
    world.verifier.verify_staple(world.staple(1, 9, since=(6,), tree=fork))
    emitted = events.STATS.emitted["client.split_view"]
    with pytest.raises(SplitViewAlarmError):
        await refresher.refresh()
    assert events.STATS.emitted["client.split_view"] == emitted + 1
    with pytest.raises(SplitViewAlarmError):
        world.verifier.verify_staple(world.staple(1, 12, since=(6,)))


def test_refresh_times_are_jittered(tmp_path: Path) -> None:
    class Rng(random.Random):
        def __init__(self, values: list[float]) -> None:
            super().__init__()
            self.values = values

        def random(self) -> float:
            return self.values.pop(0)

    world = World(tmp_path)
    rng = Rng([0.0, 0.5, 0.999])
    refresher = LogRefresher(world.verifier, SessionGuard(), _tiles(world, [0]), interval=100, rng=rng)
    assert [refresher.next_delay() for _ in range(3)] == pytest.approx([50.0, 100.0, 149.9])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**70) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["size", "root", "history", "pending", "alarm", "x"]), _JSON, max_size=5)
)
def test_a_corrupt_store_is_a_typed_error_never_a_crash(value: dict[str, Any]) -> None:
    store = CheckpointStore(None)
    store._memory = {ORIGIN: value}
    try:
        state = store.state(ORIGIN)
    except TransparencyError:
        return
    assert state.checkpoint is None or len(state.checkpoint.root) == 32


# --- the opened-checkpoint memo: the same bytes open the same way, nothing else is remembered -----


def test_an_opened_checkpoint_is_remembered_but_failures_and_other_policies_are_not(tmp_path: Path) -> None:
    world = World(tmp_path, min_cosignatures=1)
    world.add(3)
    signed = world.signed()
    calls: list[bytes] = []
    real = note.open_checkpoint

    def counting(data: bytes, *args: Any) -> Any:
        calls.append(data)
        return real(data, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(note, "open_checkpoint", counting)
        first = world.verifier.open_checkpoint(signed)
        assert world.verifier.open_checkpoint(signed) == first and len(calls) == 1
        # A refusal is checked afresh every time: it is never answered from memory.
        lacking = world.signed(cosign=False)
        for _ in range(2):
            with pytest.raises(InsufficientCosignaturesError):
                world.verifier.open_checkpoint(lacking)
        assert len(calls) == 3
        tampered = signed.replace(b"\n3\n", b"\n2\n")
        with pytest.raises(CheckpointSignatureError):
            world.verifier.open_checkpoint(tampered)
        # The same bytes under a stricter policy are judged under that policy.
        world.verifier.policy = LogPolicy(
            ORIGIN, world.verifier.policy.log_vkey, world.verifier.policy.witness_vkeys, 2
        )
        with pytest.raises(InsufficientCosignaturesError):
            world.verifier.open_checkpoint(signed)
