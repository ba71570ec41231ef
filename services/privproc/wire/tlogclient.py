"""A client of a C2SP transparency log, sans-I/O: checkpoints it trusts, proofs it checks.

A reader accepts a key (or a CVM release) only with a proof that it is
logged: a C2SP tlog-proof whose checkpoint carries the log's signature and
at least ``min_cosignatures`` witness cosignatures, and which is consistent
with the last checkpoint this reader accepted (kept in its store, so a log
cannot show it a different history tomorrow). Every failure is a typed
:class:`TransparencyError` naming the check that failed.

Two paths check proofs. :meth:`TransparencyVerifier.verify_proof` is for
proofs fetched outside sessions (key configurations, token keys): it may
fetch a consistency proof from the log. :meth:`TransparencyVerifier.verify_staple`
checks the release proof a CVM staples to its RA-TLS certificate while the
session is open: synchronous, no I/O but the store, so nothing can be
fetched then. Checkpoints it accepts that are older than the stored one are
audited later, outside sessions (:meth:`TransparencyVerifier.audit`); a
failed audit raises an alarm, kept in the store, that refuses everything
from this log.

The I/O is the caller's, behind two small protocols, as Go's ``sumdb``
client keeps it behind ``ClientOps``: :class:`CheckpointStorage` reads and
stores what was accepted, and a :data:`ConsistencySource` reads consistency
proofs from the log. The client (:mod:`privproc.client.transparency`), the
operator's verifier and the ledger tooling each bring their own.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from privproc.errors import CryptoError, WireError
from privproc.wire import note, tlog
from privproc.wire.entries import Entry, OhttpKeyConfigEntry, TokenIssuerKeyEntry, parse_entry
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
    entry: Entry
    checkpoint: note.Checkpoint
    witnesses: tuple[str, ...]


#: Signed checkpoints a verifier remembers as opened (see :meth:`TransparencyVerifier.open_checkpoint`).
OPENED_CHECKPOINTS = 32

#: Fetches a consistency proof between two tree sizes from the log.
ConsistencySource = Callable[[int, int], Awaitable[list[bytes]]]
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


class CheckpointStorage(Protocol):
    """Where a reader keeps what it accepted, per log origin (a file, memory...)."""

    def lock(self, origin: str) -> AbstractAsyncContextManager[object]:
        """Serialises a read, prove, write of one origin's state within a process."""
        ...

    def load(self, origin: str) -> note.Checkpoint | None:
        """The newest checkpoint accepted from ``origin``."""
        ...

    def state(self, origin: str) -> OriginState:
        """Everything kept about ``origin``."""
        ...

    def swap(self, origin: str, expected: OriginState, new: OriginState) -> OriginState:
        """Store ``new`` if the stored state is still ``expected``; returns the stored state after."""
        ...

    def update(self, origin: str, change: Callable[[OriginState], OriginState]) -> OriginState:
        """Apply ``change`` to the stored state atomically; returns the result."""
        ...


class Staple(Protocol):
    """A tlog-proof with consistency proofs stapled to it (a CVM's release staple)."""

    @property
    def tlog_proof(self) -> bytes: ...

    def consistency_from(self, old_size: int) -> Sequence[bytes] | None:
        """The stapled proof from ``old_size`` to the proof's checkpoint, if any."""
        ...


class SessionCheck(Protocol):
    """Refuses a fetch while a private session is open (the client's session guard)."""

    def check_outside(self) -> None: ...


class TransparencyVerifier:
    """A client of one transparency log: its checkpoints, inclusion and consistency proofs, checked.

    ``store`` keeps what was accepted and ``consistency`` fetches proofs;
    ``security_error`` is told, once, when an audit proves a split view
    (Go's ``sumdb`` ``ClientOps.SecurityError``). Everything else is here,
    with no I/O of its own.
    """

    def __init__(
        self,
        policy: LogPolicy,
        store: CheckpointStorage,
        consistency: ConsistencySource,
        *,
        security_error: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self._consistency = consistency
        self._security_error = security_error
        #: Set by the client that owns this verifier: no consistency fetch while a session is open.
        self.guard: SessionCheck | None = None
        self._log = note.parse_verifier_key(policy.log_vkey)
        if self._log.name != policy.origin:
            raise ValueError("the log key is named after the origin")
        self._witnesses = [note.parse_verifier_key(v) for v in policy.witness_vkeys]
        self._opened: OrderedDict[tuple[bytes, LogPolicy], tuple[note.Checkpoint, tuple[str, ...]]] = (
            OrderedDict()
        )
        self._opened_lock = threading.Lock()

    def open_checkpoint(self, signed: bytes) -> tuple[note.Checkpoint, tuple[str, ...]]:
        """Check the log signature and the cosignature quorum of a signed checkpoint.

        A note this verifier already opened is answered from memory: opening is
        a pure function of the note's bytes and the policy's keys and quorum
        (no clock, no store), so the same bytes under the same policy open the
        same way; only successes are kept, keyed by both, and the result is
        immutable. Every CVM staples the same signed checkpoint until the log
        grows, and its signatures cost ~0.3 ms per session otherwise. What
        depends on state — consistency with the stored checkpoint, the
        inclusion proof, the entry — is still checked by every caller.
        """
        key = (bytes(signed), self.policy)
        with self._opened_lock:
            cached = self._opened.get(key)
            if cached is not None:
                self._opened.move_to_end(key)
                return cached
        opened = self._open_checkpoint(key[0])
        with self._opened_lock:
            self._opened[key] = opened
            while len(self._opened) > OPENED_CHECKPOINTS:
                self._opened.popitem(last=False)
        return opened

    def _open_checkpoint(self, signed: bytes) -> tuple[note.Checkpoint, tuple[str, ...]]:
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

    def verify_staple(self, staple: Staple) -> Verified:
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

    def _staple_state(self, state: OriginState, checkpoint: note.Checkpoint, staple: Staple) -> OriginState:
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
        staple: Staple, older: note.Checkpoint, newer: note.Checkpoint, *, missing: str
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
        store raises its alarm (kept on disk), ``security_error`` is
        told and :class:`SplitViewAlarmError` raised; every later check
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
                    if self._security_error is not None:
                        self._security_error(self.policy.origin)
                    raise SplitViewAlarmError(
                        "the log showed this client two histories: nothing from it is trusted"
                    ) from None
            done = set(state.pending)
            self.store.update(
                self.policy.origin,
                lambda s: dataclasses.replace(s, pending=tuple(c for c in s.pending if c not in done)),
            )
            return len(done)


def check_validity(entry: OhttpKeyConfigEntry | TokenIssuerKeyEntry, now: float) -> None:
    """Refuse a logged key outside its validity window at ``now``."""
    if not entry.not_before <= now <= entry.not_after:
        raise EntryMismatchError("logged key is outside its validity window")
