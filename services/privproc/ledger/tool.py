"""``privproc ledger ...``: publish, read, prove, verify and monitor the transparency log.

Every command reads the log's policy (origin, log key, witness keys, the
cosignature quorum) from ``stack.json``; ``verify`` needs nothing online.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from grpc import aio

from privproc.attestation.abi import TcbVersion
from privproc.attestation.measure import DEFAULT_RELEASE_DAYS, ImageManifest, release_entry
from privproc.client.transparency import verifier_from_stack
from privproc.errors import ConfigError, WireError
from privproc.ledger.checkpoints import CheckpointStore
from privproc.ledger.follower import LogFollower, http_fetcher
from privproc.ledger.keyconsistency import (
    DEFAULT_MAX_GRACE_SECONDS,
    LoggedKeyConfig,
    key_config_alerts,
    live_key_configs,
)
from privproc.ledger.publisher import LedgerPublisher
from privproc.runtime.rpc import channel_options
from privproc.runtime.status import error_from_rpc
from privproc.stackfile import StackFile
from privproc.v1 import ledger_pb2, ledger_pb2_grpc
from privproc.wire import note
from privproc.wire.entries import (
    CvmReleaseEntry,
    CvmRevocationEntry,
    ReleaseSignatureError,
    parse_entry,
    release_key_name,
    verify_release_signature,
)
from privproc.wire.jcs import canonicalize
from privproc.wire.tlogclient import TransparencyVerifier
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


_TCB = re.compile(r"^(bootloader|tee|snp|microcode|fmc)=([0-9]{1,3})$")


def parse_tcb(text: str) -> TcbVersion:
    """``bootloader=B,tee=T,snp=S,microcode=M[,fmc=F]``: a minimum TCB, every component named."""
    parts: dict[str, int] = {}
    for item in text.split(","):
        match = _TCB.match(item.strip())
        if match is None or match.group(1) in parts:
            raise ConfigError("a TCB is bootloader=B,tee=T,snp=S,microcode=M[,fmc=F]")
        parts[match.group(1)] = int(match.group(2))
    if not {"bootloader", "tee", "snp", "microcode"} <= set(parts):
        raise ConfigError("a TCB names bootloader, tee, snp and microcode")
    try:
        return TcbVersion(**parts)
    except WireError:
        raise ConfigError("TCB components are 0 to 255") from None


def release_json(
    manifest: ImageManifest,
    signer_key: str,
    *,
    version: str,
    min_tcb: str,
    host_data: str | None = None,
    not_after: int | None = None,
    valid_days: float = DEFAULT_RELEASE_DAYS,
    rollout_hours: float = 0.0,
    now: float | None = None,
) -> str:
    """The signed ``cvm-release`` entry of ``manifest`` (``privproc ledger publish cvm-release``).

    ``host_data`` (hex) defaults to the manifest's configuration digest;
    ``not_after`` (POSIX seconds) to ``valid_days`` from now; lower versions
    of the track are superseded ``rollout_hours`` from now.
    """
    moment = int(time.time() if now is None else now)
    expiry = not_after if not_after is not None else moment + int(valid_days * 86400)
    if expiry <= moment:
        raise ConfigError("a release must expire in the future")
    try:
        data = bytes.fromhex(host_data) if host_data is not None else None
    except ValueError:
        raise ConfigError("--host-data is 32 bytes of hex") from None
    if data is not None and len(data) != 32:
        raise ConfigError("--host-data is 32 bytes of hex")
    try:
        entry = release_entry(
            manifest,
            version=version,
            signer=note.parse_signer_key(signer_key),
            min_tcb=parse_tcb(min_tcb),
            host_data=data,
            not_after=expiry,
            supersedes_at=moment + int(rollout_hours * 3600),
        )
    except WireError:
        raise ConfigError("the release does not form a valid entry (version is dotted numbers)") from None
    return entry.decode()


def revocation_json(
    signer_key: str, *, release_index: int | None, measurement: str | None, reason: str = "withdrawn"
) -> str:
    """The signed ``cvm-revocation`` entry (``privproc ledger publish cvm-revocation``)."""
    try:
        return (
            CvmRevocationEntry.sign(
                signer=note.parse_signer_key(signer_key),
                release_index=release_index,
                measurement=measurement,
                reason=reason,
            )
            .encode()
            .decode()
        )
    except ValueError:
        raise ConfigError("a revocation names --index or --measurement, exactly one") from None
    except WireError:
        raise ConfigError("the revocation does not form a valid entry") from None


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
            raise error_from_rpc(err) from None
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
            raise error_from_rpc(err) from None
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
        "entry": verified.entry.to_json(),
        "checkpoint": {"origin": verified.checkpoint.origin, "size": verified.checkpoint.size,
                       "root": verified.checkpoint.root.hex()},
        "witnesses": list(verified.witnesses),
    }  # fmt: skip


async def monitor(
    stack_path: Path,
    state: Path,
    *,
    max_grace_seconds: int = DEFAULT_MAX_GRACE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify the newest checkpoint, its consistency, the tiles; list the entries new since last time.

    Also reports the OHTTP key configurations live now and flags (``alerts``)
    more than one live at once beyond a rotation's grace period (a gateway
    could hand each user a different one), and any new release or revocation
    not signed by a release key ``stack.json`` pins. The key configurations
    seen are kept next to ``state`` so each run judges the whole log.
    """
    stack = _stack(stack_path)
    assert stack.ledger is not None
    verifier, close = await _verifier(stack, state)
    try:
        synced = await LogFollower(verifier, http_fetcher(stack.ledger.tiles_url)).sync()
    finally:
        await close()
    cp = synced.checkpoint
    moment = time.time() if now is None else now
    keys_path = state.with_name(state.stem + ".key-configs.json")
    configs = {c.index: c for c in _load_key_configs(keys_path)}
    release_keys = [note.parse_verifier_key(vkey) for vkey in stack.release_keys]
    pinned = {release_key_name(key): key for key in release_keys}
    new_entries = []
    release_alerts: list[dict[str, Any]] = []
    for i, raw in synced.new_entries:
        new_entries.append({"index": i, "entry": json.loads(raw)})
        try:
            entry = parse_entry(raw)
        except WireError:
            continue  # an entry of an older format: listed, not interpreted
        record = LoggedKeyConfig.of(i, entry)
        if record is not None:
            configs[i] = record
        if isinstance(entry, CvmReleaseEntry | CvmRevocationEntry):
            try:
                verify_release_signature(entry, pinned)
            except ReleaseSignatureError:
                release_alerts.append({"alert": "release_not_signed_by_a_pinned_key", "index": i})
    # Forget configurations long expired: they can never be live again.
    kept = [c for c in configs.values() if c.not_after >= moment - 86400]
    _save_key_configs(keys_path, kept)
    return {
        "size": cp.size,
        "root": cp.root.hex(),
        "witnesses": list(synced.witnesses),
        "new_entries": new_entries,
        "live_key_configs": [c.to_json() for c in live_key_configs(kept, moment)],
        "alerts": key_config_alerts(kept, moment, max_grace_seconds=max_grace_seconds) + release_alerts,
    }


def _load_key_configs(path: Path) -> list[LoggedKeyConfig]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except ValueError as err:
        raise ConfigError("the monitor's key configuration file is corrupt") from err
    try:
        return [LoggedKeyConfig(**item) for item in value]
    except TypeError as err:
        raise ConfigError("the monitor's key configuration file is corrupt") from err


def _save_key_configs(path: Path, configs: list[LoggedKeyConfig]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump([c.to_json() for c in sorted(configs, key=lambda c: c.index)], handle)
    os.replace(tmp, path)


def emit(value: bytes | dict[str, Any]) -> None:
    if isinstance(value, bytes):
        sys.stdout.buffer.write(value)
    else:
        print(json.dumps(value, indent=2, sort_keys=True))
