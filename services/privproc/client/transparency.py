"""The device's view of the transparency log: checkpoints it trusts, proofs it checks.

A client accepts a key (or, later, a CVM measurement) only with a proof that
it is logged: a C2SP tlog-proof whose checkpoint carries the log's signature
and at least ``min_cosignatures`` witness cosignatures, and which is
consistent with the last checkpoint this client accepted (kept on disk, so
a log cannot show it a different history tomorrow). Every failure is a
typed :class:`TransparencyError` naming the check that failed.

Two paths check proofs. :meth:`TransparencyVerifier.verify_proof` is for
proofs fetched outside sessions (key configurations, token keys): it may
fetch a consistency proof from the log. :meth:`TransparencyVerifier.verify_staple`
checks the release proof a CVM staples to its RA-TLS certificate while the
session is open: synchronous, no I/O but the local store, so nothing can be
fetched then. Checkpoints it accepts that are older than the stored one are
audited later, outside sessions (:meth:`TransparencyVerifier.audit`, run by
:class:`privproc.client.refresh.LogRefresher`); a failed audit raises an
alarm, kept on disk, that refuses everything from this log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import grpc
from grpc import aio

from privproc import events
from privproc.attestation.evidence import ReleaseStaple
from privproc.errors import CryptoError, UpstreamError, WireError
from privproc.runtime.rpc import channel_options
from privproc.stackfile import StackFile
from privproc.v1 import ledger_pb2, ledger_pb2_grpc
from privproc.wire import note, tlog
from privproc.wire.entries import parse_entry
from privproc.wire.tlogproof import TlogProof


class TransparencyError(CryptoError):
    reason = "transparency"


class CheckpointSignatureError(TransparencyError):
    reason = "checkpoint_signature"


class InsufficientCosignaturesError(TransparencyError):
    reason = "insufficient_cosignatures"


class InconsistentCheckpointError(TransparencyError):
    """The log showed a checkpoint that does not extend the one accepted before (split view)."""

    reason = "inconsistent_checkpoint"


class InclusionProofError(TransparencyError):
    reason = "inclusion_proof"


class NotLoggedError(TransparencyError):
    """No proof that the thing about to be trusted is in the log."""

    reason = "not_logged"


class EntryMismatchError(TransparencyError):
    """The logged entry does not describe what the client is about to trust."""

    reason = "entry_mismatch"


@dataclass(frozen=True)
class LogPolicy:
    origin: str
    log_vkey: str
    witness_vkeys: tuple[str, ...]
    min_cosignatures: int


@dataclass(frozen=True)
class Verified:
    """What a checked proof established."""

    index: int
    entry: dict[str, Any]
    checkpoint: note.Checkpoint
    witnesses: tuple[str, ...]


#: Fetches a consistency proof between two tree sizes from the log.
ConsistencySource = Callable[[int, int], Awaitable[list[bytes]]]
MAX_PROOF_FETCH = 64 << 10
#: Checkpoints a client remembers having accepted (to recognise a CVM's slightly older one).
HISTORY = 16
#: Older checkpoints accepted from staples whose consistency with the stored one awaits an audit.
MAX_PENDING_AUDITS = 32
#: How many times a read-check-write is retried when another process moved the store meanwhile.
_CAS_ATTEMPTS = 4


class StaleCheckpointError(TransparencyError):
    """No proof links the CVM's checkpoint to this client's: refresh outside a session, then retry."""

    reason = "checkpoint_stale"


class SplitViewAlarmError(TransparencyError):
    """An audit proved the log showed this client two histories: every request is refused."""

    reason = "split_view"


@dataclass(frozen=True)
class OriginState:
    """What a client keeps about one log: its newest checkpoint and what is left to audit."""

    checkpoint: note.Checkpoint | None = None
    #: Checkpoints accepted before (oldest first), the current one included.
    history: tuple[note.Checkpoint, ...] = ()
    #: Older checkpoints taken from staples, to prove consistent with ``checkpoint`` later.
    pending: tuple[note.Checkpoint, ...] = ()
    #: An audit failed: nothing from this log is trusted any more.
    alarm: bool = False

    def knows(self, checkpoint: note.Checkpoint) -> bool | None:
        """True if ``checkpoint`` was accepted, False if a different root of its size was, else None."""
        for seen in (*self.history, *self.pending, *((self.checkpoint,) if self.checkpoint else ())):
            if seen.size == checkpoint.size:
                return bool(seen.root == checkpoint.root)
        return None

    def advanced(self, checkpoint: note.Checkpoint) -> OriginState:
        """This state with ``checkpoint`` as the newest (never lowers the size)."""
        current = self.checkpoint
        if current is not None and current.size >= checkpoint.size:
            if current.size == checkpoint.size and current.root != checkpoint.root:
                raise InconsistentCheckpointError("two different checkpoints of the same size")
            return self
        history = (*(c for c in self.history if c.size < checkpoint.size), checkpoint)
        return dataclasses.replace(self, checkpoint=checkpoint, history=history[-HISTORY:])

    def to_json(self) -> dict[str, Any]:
        def pair(c: note.Checkpoint) -> list[Any]:
            return [c.size, base64.b64encode(c.root).decode()]

        value: dict[str, Any] = {
            "history": [pair(c) for c in self.history],
            "pending": [pair(c) for c in self.pending],
            "alarm": self.alarm,
        }
        if self.checkpoint is not None:
            value.update(size=self.checkpoint.size, root=base64.b64encode(self.checkpoint.root).decode())
        return value

    @classmethod
    def from_json(cls, origin: str, value: object) -> OriginState:
        if not isinstance(value, dict):
            raise TransparencyError("checkpoint store is corrupt")
        try:

            def parse(pair: Any) -> note.Checkpoint:
                size, root = pair
                digest = base64.b64decode(root, validate=True)
                if type(size) is not int or size < 0 or len(digest) != tlog.HASH_SIZE:
                    raise ValueError("not a checkpoint")
                return note.Checkpoint(origin, size, digest)

            checkpoint = parse((value["size"], value["root"])) if "size" in value else None
            return cls(
                checkpoint,
                tuple(parse(p) for p in value.get("history", ()))[-HISTORY:],
                tuple(parse(p) for p in value.get("pending", ()))[:MAX_PENDING_AUDITS],
                value.get("alarm") is True,
            )
        except (TypeError, ValueError, KeyError, binascii.Error) as err:
            raise TransparencyError("checkpoint store is corrupt") from err


class CheckpointStore:
    """What this client accepted, per log, on disk (0600) or in memory (``path=None``).

    Every change is a compare-and-swap (:meth:`swap`): under an exclusive
    lock on the file, the state is read again and the change is written only
    if nobody changed it meanwhile; :meth:`OriginState.advanced` never lowers
    the size. :meth:`lock` is the per-origin lock that serialises the
    read, prove, write of :meth:`TransparencyVerifier.accept` within a process.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, origin: str) -> asyncio.Lock:
        return self._locks.setdefault(origin, asyncio.Lock())

    def load(self, origin: str) -> note.Checkpoint | None:
        return self.state(origin).checkpoint

    def state(self, origin: str) -> OriginState:
        return OriginState.from_json(origin, self._read().get(origin, {}))

    def save(self, checkpoint: note.Checkpoint) -> note.Checkpoint | None:
        """Store ``checkpoint`` unless a larger one is stored; returns what is stored after."""
        return self.update(checkpoint.origin, lambda state: state.advanced(checkpoint)).checkpoint

    def swap(self, origin: str, expected: OriginState, new: OriginState) -> OriginState:
        """Write ``new`` if the stored state is still ``expected``; returns the stored state after."""
        return self.update(origin, lambda state: new if state == expected else state)

    def update(self, origin: str, change: Callable[[OriginState], OriginState]) -> OriginState:
        """Apply ``change`` to the stored state atomically (across processes too); returns the result."""
        with self._file_lock():
            data = self._read()
            before = OriginState.from_json(origin, data.get(origin, {}))
            after = change(before)
            if after != before:
                data[origin] = after.to_json()
                self._write(data)
            return after

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, data: dict[str, Any]) -> None:
        if self.path is None:
            self._memory = data
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.path)

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            copy: dict[str, Any] = json.loads(json.dumps(self._memory))  # callers change it
            return copy
        try:
            value = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as err:
            raise TransparencyError("checkpoint store is corrupt") from err
        return value if isinstance(value, dict) else {}


def default_store(stack: StackFile) -> CheckpointStore:
    """The client's checkpoint store for ``stack``: ``client/checkpoints.json`` beside its stack.json.

    (In memory when the stack document was not read from a file.)
    """
    path = stack.raw.get("_path")
    return CheckpointStore(Path(path).parent / "client" / "checkpoints.json" if path else None)


class SessionCheck(Protocol):
    """Refuses a fetch while a private session is open (:class:`privproc.client.refresh.SessionGuard`)."""

    def check_outside(self) -> None: ...


class TransparencyVerifier:
    def __init__(self, policy: LogPolicy, store: CheckpointStore, consistency: ConsistencySource) -> None:
        self.policy = policy
        self.store = store
        self._consistency = consistency
        #: Set by the client that owns this verifier: no consistency fetch while a session is open.
        self.guard: SessionCheck | None = None
        self._log = note.parse_verifier_key(policy.log_vkey)
        if self._log.name != policy.origin:
            raise ValueError("the log key is named after the origin")
        self._witnesses = [note.parse_verifier_key(v) for v in policy.witness_vkeys]

    def open_checkpoint(self, signed: bytes) -> tuple[note.Checkpoint, tuple[str, ...]]:
        """Check the log signature and the cosignature quorum of a signed checkpoint."""
        try:
            checkpoint, opened = note.open_checkpoint(
                signed, self.policy.origin, [self._log, *self._witnesses]
            )
        except (CryptoError, WireError) as err:
            raise CheckpointSignatureError("checkpoint signature does not verify") from err
        signers = {s.name for s in opened.signatures}
        if self.policy.origin not in signers:
            raise CheckpointSignatureError("checkpoint is not signed by the log")
        witnesses = tuple(sorted(signers & {w.name for w in self._witnesses}))
        if len(witnesses) < self.policy.min_cosignatures:
            raise InsufficientCosignaturesError("too few witness cosignatures")
        return checkpoint, witnesses

    def _state(self) -> OriginState:
        state = self.store.state(self.policy.origin)
        if state.alarm:
            raise SplitViewAlarmError("this log showed two histories: nothing from it is trusted")
        return state

    async def accept(self, checkpoint: note.Checkpoint) -> None:
        """Accept ``checkpoint`` if consistent with the stored one (either may be newer).

        Fetches a consistency proof from the log: never call it while a session is open.
        """
        async with self.store.lock(self.policy.origin):
            for _ in range(_CAS_ATTEMPTS):
                state = self._state()
                previous = state.checkpoint
                if previous is not None:
                    older, newer = sorted((previous, checkpoint), key=lambda c: c.size)
                    if older.size == newer.size:
                        if older.root != newer.root:
                            raise InconsistentCheckpointError("two different checkpoints of the same size")
                    else:
                        await self._check_consistent(older, newer)
                stored = self.store.swap(self.policy.origin, state, state.advanced(checkpoint))
                if stored.checkpoint == state.advanced(checkpoint).checkpoint:
                    return
                # Another process stored a checkpoint meanwhile: prove against that one too.
        raise TransparencyError("the checkpoint store keeps changing")

    async def _check_consistent(self, older: note.Checkpoint, newer: note.Checkpoint) -> None:
        if self.guard is not None:
            self.guard.check_outside()
        try:
            proof = await self._consistency(older.size, newer.size)
            tlog.check_tree(proof, newer.size, newer.root, older.size, older.root)
        except CryptoError as err:
            raise InconsistentCheckpointError(
                "checkpoint is not consistent with the one seen before"
            ) from err

    async def verify_proof(self, proof_bytes: bytes) -> Verified:
        """Check a tlog-proof whose extra data is the entry; returns the parsed entry.

        May fetch a consistency proof (:meth:`accept`): for proofs fetched outside sessions.
        """
        verified = self._open_proof(proof_bytes)
        await self.accept(verified.checkpoint)
        return verified

    def _open_proof(self, proof_bytes: bytes) -> Verified:
        try:
            proof = TlogProof.decode(proof_bytes)
        except WireError as err:
            raise InclusionProofError("not a tlog-proof") from err
        checkpoint, witnesses = self.open_checkpoint(proof.checkpoint)
        if proof.extra is None:
            raise InclusionProofError("proof does not carry its entry")
        try:
            tlog.check_record(
                list(proof.hashes), checkpoint.size, checkpoint.root, proof.index, tlog.leaf_hash(proof.extra)
            )
        except CryptoError as err:
            raise InclusionProofError("inclusion proof does not verify") from err
        try:
            entry = parse_entry(proof.extra)
        except WireError as err:
            raise EntryMismatchError("logged entry is malformed") from err
        return Verified(proof.index, entry, checkpoint, witnesses)

    def verify_staple(self, staple: ReleaseStaple) -> Verified:
        """Check a CVM's release staple against the stored checkpoint, with no I/O but the store.

        Synchronous on purpose: it runs while a session is open and can fetch
        nothing. Let N be the staple's checkpoint and M the stored one:
        N = M needs the same root; M < N needs a stapled consistency proof
        from M (the store then moves to N); M > N needs N to be a checkpoint
        this client accepted before, or a stapled proof from one it accepted
        (size P ≤ N) — N is then recorded for an audit against the stored one
        outside sessions (:meth:`audit`). Anything else is refused.
        """
        verified = self._open_proof(staple.tlog_proof)
        checkpoint = verified.checkpoint
        for _ in range(_CAS_ATTEMPTS):
            state = self._state()
            new = self._staple_state(state, checkpoint, staple)
            if self.store.swap(self.policy.origin, state, new) == new:
                return verified
        raise TransparencyError("the checkpoint store keeps changing")

    def _staple_state(
        self, state: OriginState, checkpoint: note.Checkpoint, staple: ReleaseStaple
    ) -> OriginState:
        stored = state.checkpoint
        if stored is None:
            return state.advanced(checkpoint)  # the first checkpoint this client sees
        if stored.size == checkpoint.size:
            if stored.root != checkpoint.root:
                raise InconsistentCheckpointError("two different checkpoints of the same size")
            return state
        if stored.size < checkpoint.size:
            self._check_stapled(staple, stored, checkpoint, missing="no stapled proof from this checkpoint")
            return state.advanced(checkpoint)
        known = state.knows(checkpoint)
        if known is not None:
            if not known:
                raise InconsistentCheckpointError("two different checkpoints of the same size")
            return state
        bases = [c for c in state.history if c.size < checkpoint.size and staple.consistency_from(c.size)]
        if not bases:
            raise StaleCheckpointError("the CVM's checkpoint is older than any this client can link it to")
        base = max(bases, key=lambda c: c.size)
        self._check_stapled(staple, base, checkpoint, missing="")
        if len(state.pending) >= MAX_PENDING_AUDITS:
            raise StaleCheckpointError("too many checkpoints await an audit: refresh outside a session")
        return dataclasses.replace(state, pending=(*state.pending, checkpoint))

    @staticmethod
    def _check_stapled(
        staple: ReleaseStaple, older: note.Checkpoint, newer: note.Checkpoint, *, missing: str
    ) -> None:
        hashes = staple.consistency_from(older.size)
        if hashes is None:
            raise StaleCheckpointError(missing)
        try:
            tlog.check_tree(list(hashes), newer.size, newer.root, older.size, older.root)
        except CryptoError as err:
            raise InconsistentCheckpointError(
                "the CVM's checkpoint is not consistent with the one seen before"
            ) from err

    async def audit(self) -> int:
        """Prove every pending checkpoint consistent with the stored one (outside sessions).

        Returns how many were audited. A failed proof is a split view: the
        store raises its alarm (kept on disk), ``client.split_view`` is
        emitted and :class:`SplitViewAlarmError` raised; every later check
        refuses. A log that cannot be reached leaves them pending.
        """
        async with self.store.lock(self.policy.origin):
            state = self._state()
            if state.checkpoint is None or not state.pending:
                return 0
            for pending in state.pending:
                try:
                    await self._check_consistent(pending, state.checkpoint)
                except InconsistentCheckpointError:
                    self.store.update(self.policy.origin, lambda s: dataclasses.replace(s, alarm=True))
                    events.emit("client.split_view", origin=self.policy.origin)
                    raise SplitViewAlarmError(
                        "the log showed this client two histories: nothing from it is trusted"
                    ) from None
            done = set(state.pending)
            self.store.update(
                self.policy.origin,
                lambda s: dataclasses.replace(s, pending=tuple(c for c in s.pending if c not in done)),
            )
            return len(done)


def grpc_consistency_source(target: str) -> tuple[ConsistencySource, Callable[[], Awaitable[None]]]:
    """Consistency proofs from the ledger's gRPC API; returns (source, close)."""
    channel = aio.insecure_channel(target, options=channel_options())
    stub = ledger_pb2_grpc.LedgerStub(channel)

    async def source(old: int, new: int) -> list[bytes]:
        try:
            reply = await stub.GetConsistencyProof(
                ledger_pb2.GetConsistencyProofRequest(old_size=old, new_size=new), timeout=10.0
            )
        except aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                # The log cannot prove the two sizes consistent: it does not have the
                # tree the client saw (a fork was shown to it, or the log rolled back).
                raise InconsistentCheckpointError(
                    "the log cannot prove consistency with the checkpoint seen before"
                ) from err
            raise UpstreamError("ledger unavailable") from err
        return list(reply.hashes)

    async def close() -> None:
        await channel.close(None)

    return source, close


async def fetch_proof(
    session: aiohttp.ClientSession,
    proofs_url: str,
    name: str,
    what: Literal["key configuration", "issuer key", "release"],
) -> bytes:
    """A tlog-proof from the key CDN (``<proofs_url><name>``); NotLoggedError if there is none.

    ``what`` names the thing proved, for the error message (a fixed string).
    """
    try:
        async with session.get(proofs_url + name) as resp:
            body = await resp.content.read(MAX_PROOF_FETCH + 1)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError):
        raise UpstreamError("key CDN unavailable") from None
    if status == 404:
        raise NotLoggedError(f"no proof that this {what} is logged")
    if status != 200 or len(body) > MAX_PROOF_FETCH:
        raise UpstreamError("key CDN gave no proof")
    return bytes(body)


def check_validity(entry: dict[str, Any], now: float) -> None:
    if not entry["not_before"] <= now <= entry["not_after"]:
        raise EntryMismatchError("logged key is outside its validity window")


def verifier_from_stack(
    stack: StackFile, store: CheckpointStore
) -> tuple[TransparencyVerifier, Callable[[], Awaitable[None]]] | None:
    """The verifier a local stack's clients use (None if the stack has no ledger)."""
    if stack.ledger is None:
        return None
    witnesses = (stack.witness.vkey,) if stack.witness is not None else ()
    policy = LogPolicy(stack.ledger.origin, stack.ledger.vkey, witnesses, stack.min_cosignatures)
    source, close = grpc_consistency_source(stack.ledger.grpc)
    return TransparencyVerifier(policy, store, source), close
