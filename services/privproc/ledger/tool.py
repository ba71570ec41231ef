"""``privproc ledger ...``: publish, read, prove, verify and monitor the transparency log.

Every command reads the log's policy (origin, log key, witness keys, the
cosignature quorum) from ``stack.json``; ``verify`` needs nothing online.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grpc import aio

from privproc.client.transparency import CheckpointStore, TransparencyVerifier, verifier_from_stack
from privproc.errors import ConfigError, error_from_status
from privproc.ledger.entries import parse_entry
from privproc.ledger.follower import LogFollower, http_fetcher
from privproc.ledger.publisher import LedgerPublisher
from privproc.runtime.rpc import channel_options
from privproc.stackfile import StackFile
from privproc.v1 import ledger_pb2, ledger_pb2_grpc
from privproc.wire.jcs import canonicalize
from privproc.wire.tlogproof import TlogProof


def _stack(path: Path) -> StackFile:
    stack = StackFile.load(path)
    if stack.ledger is None:
        raise ConfigError("stack.json has no ledger")
    return stack


async def _verifier(stack: StackFile, state: Path | None) -> tuple[TransparencyVerifier, Any]:
    made = verifier_from_stack(stack, CheckpointStore(state))
    assert made is not None
    return made


async def publish(stack_path: Path, entry_json: str, signer_key: str) -> bytes:
    """Append an entry (JSON text, canonicalised here); returns its tlog-proof."""
    stack = _stack(stack_path)
    assert stack.ledger is not None
    entry = canonicalize(json.loads(entry_json))
    parse_entry(entry)
    publisher = LedgerPublisher(stack.ledger.grpc, signer_key)
    try:
        return (await publisher.publish(entry)).encode()
    finally:
        await publisher.close()


async def checkpoint(stack_path: Path) -> bytes:
    """The log's latest checkpoint, verified against the stack's policy."""
    stack = _stack(stack_path)
    assert stack.ledger is not None
    async with aio.insecure_channel(stack.ledger.grpc, options=channel_options()) as channel:
        try:
            signed = (await ledger_pb2_grpc.LedgerStub(channel).GetCheckpoint(
                ledger_pb2.GetLedgerCheckpointRequest(), timeout=10
            )).note  # fmt: skip
        except aio.AioRpcError as err:
            raise error_from_status(err.details() or "") from None
    verifier, close = await _verifier(stack, None)
    try:
        verifier.open_checkpoint(bytes(signed))
    finally:
        await close()
    return bytes(signed)


async def prove(stack_path: Path, index: int) -> bytes:
    """A tlog-proof (with the entry as extra data) for entry ``index`` at the latest checkpoint."""
    stack = _stack(stack_path)
    assert stack.ledger is not None
    signed = await checkpoint(stack_path)
    size = int(signed.split(b"\n")[1])
    async with aio.insecure_channel(stack.ledger.grpc, options=channel_options()) as channel:
        stub = ledger_pb2_grpc.LedgerStub(channel)
        try:
            entry = (
                await stub.GetEntries(ledger_pb2.GetEntriesRequest(start=index, end=index + 1), timeout=10)
            ).entries
            proof = await stub.GetInclusionProof(
                ledger_pb2.GetInclusionProofRequest(index=index, tree_size=size), timeout=10
            )
        except aio.AioRpcError as err:
            raise error_from_status(err.details() or "") from None
    if not entry:
        raise ConfigError("no such entry")
    return TlogProof(index, tuple(proof.hashes), signed, bytes(entry[0])).encode()


async def verify(stack_path: Path, proof: bytes) -> dict[str, Any]:
    """Check a tlog-proof offline against the stack's policy; returns what it proves."""
    stack = _stack(stack_path)
    verifier, close = await _verifier(stack, None)
    try:
        verified = await verifier.verify_proof(proof)
    finally:
        await close()
    return {
        "index": verified.index,
        "entry": verified.entry,
        "checkpoint": {"origin": verified.checkpoint.origin, "size": verified.checkpoint.size,
                       "root": verified.checkpoint.root.hex()},
        "witnesses": list(verified.witnesses),
    }  # fmt: skip


async def monitor(stack_path: Path, state: Path) -> dict[str, Any]:
    """Verify the newest checkpoint, its consistency, the tiles; list the entries new since last time."""
    stack = _stack(stack_path)
    assert stack.ledger is not None
    verifier, close = await _verifier(stack, state)
    try:
        synced = await LogFollower(verifier, http_fetcher(stack.ledger.tiles_url)).sync()
    finally:
        await close()
    cp = synced.checkpoint
    return {
        "size": cp.size,
        "root": cp.root.hex(),
        "witnesses": list(synced.witnesses),
        "new_entries": [{"index": i, "entry": json.loads(raw)} for i, raw in synced.new_entries],
    }


def emit(value: bytes | dict[str, Any]) -> None:
    if isinstance(value, bytes):
        sys.stdout.buffer.write(value)
    else:
        print(json.dumps(value, indent=2, sort_keys=True))
