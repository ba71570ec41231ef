"""The device's view of the transparency log: checkpoints it trusts, proofs it checks.

A client accepts a key (or, later, a CVM measurement) only with a proof that
it is logged: a C2SP tlog-proof whose checkpoint carries the log's signature
and at least ``min_cosignatures`` witness cosignatures, and which is
consistent with the last checkpoint this client accepted (kept on disk, so
a log cannot show it a different history tomorrow). Every failure is a
typed :class:`TransparencyError` naming the check that failed.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import grpc
from grpc import aio

from privproc.errors import CryptoError, UpstreamError, WireError
from privproc.ledger.entries import parse_entry
from privproc.runtime.rpc import channel_options
from privproc.stackfile import StackFile
from privproc.v1 import ledger_pb2, ledger_pb2_grpc
from privproc.wire import note, tlog
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


class CheckpointStore:
    """The last checkpoint this client accepted, per log, on disk (0600)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, Any] | None = None

    def load(self, origin: str) -> note.Checkpoint | None:
        data = self._read().get(origin)
        if data is None:
            return None
        return note.Checkpoint(origin, int(data["size"]), base64.b64decode(data["root"]))

    def save(self, checkpoint: note.Checkpoint) -> None:
        data = self._read()
        data[checkpoint.origin] = {
            "size": checkpoint.size,
            "root": base64.b64encode(checkpoint.root).decode(),
        }
        if self.path is None:
            self._memory = data
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.path)

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return dict(self._memory or {})
        try:
            value = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as err:
            raise TransparencyError("checkpoint store is corrupt") from err
        return value if isinstance(value, dict) else {}


class TransparencyVerifier:
    def __init__(self, policy: LogPolicy, store: CheckpointStore, consistency: ConsistencySource) -> None:
        self.policy = policy
        self.store = store
        self._consistency = consistency
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

    async def accept(self, checkpoint: note.Checkpoint) -> None:
        """Accept ``checkpoint`` if consistent with the stored one (either may be newer)."""
        previous = self.store.load(self.policy.origin)
        if previous is not None:
            older, newer = sorted((previous, checkpoint), key=lambda c: c.size)
            if older.size == newer.size:
                if older.root != newer.root:
                    raise InconsistentCheckpointError("two different checkpoints of the same size")
            else:
                try:
                    proof = await self._consistency(older.size, newer.size)
                    tlog.check_tree(proof, newer.size, newer.root, older.size, older.root)
                except CryptoError as err:
                    raise InconsistentCheckpointError(
                        "checkpoint is not consistent with the one seen before"
                    ) from err
        if previous is None or checkpoint.size > previous.size:
            self.store.save(checkpoint)

    async def verify_proof(self, proof_bytes: bytes) -> Verified:
        """Check a tlog-proof whose extra data is the entry; returns the parsed entry."""
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
        await self.accept(checkpoint)
        return Verified(proof.index, entry, checkpoint, witnesses)


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
