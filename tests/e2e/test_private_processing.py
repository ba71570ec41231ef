"""The whole private path: token, OHTTP, RA-TLS to an attested predictor, its release's stapled
proof — and every way it must fail closed, each asserting the predictor received no application
data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio

from privproc import events
from privproc.attestation.evidence import Evidence, ReleaseStaple
from privproc.attestation.measure import measure_image
from privproc.attestation.ratls import BindingError, EvidenceRefusedError
from privproc.attestation.ratls_session import RaTlsServer
from privproc.attestation.simulator import SimulatedSnp
from privproc.client.private import (
    AiDisabledError,
    Chat,
    ChatMessage,
    PrivateProcessingClient,
    release_proof_name,
)
from privproc.errors import UpstreamError
from privproc.gateway.predictors import GrpcPredictorPool
from privproc.ledger.checkpoints import CheckpointStore
from privproc.ledger.store import LedgerStore
from privproc.predictor.server import PredictorConfig, PredictorService
from privproc.runtime.cdn_publisher import ohttp_keys_proof_name
from privproc.v1 import ledger_pb2, ledger_pb2_grpc, predictor_pb2
from privproc.wire import entries, note, tlog
from privproc.wire.tlogclient import EntryMismatchError, InconsistentCheckpointError, NotLoggedError
from privproc.wire.tlogproof import TlogProof
from tests.livestack import LOG_ORIGIN, Stack, start_stack, stop_stack

CHAT = Chat(
    "c1",
    "Team",
    (
        ChatMessage("ana", "2026-11-25T09:00:00Z", "The release moves to Thursday."),
        ChatMessage("bo", "2026-11-25T09:05:00Z", "Then the demo is on Friday."),
    ),
)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[predictor_pb2.ProcessRequest] = []

    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        self.requests.append(request)
        if request.task == predictor_pb2.TASK_SUMMARIZE:
            return predictor_pb2.ProcessResponse(
                text=f"{len(request.messages)} messages", model_id="test-model"
            )
        return predictor_pb2.ProcessResponse(text=request.draft.upper(), model_id="test-model")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Stack, Recorder]]:
    recorder = Recorder()
    stack = await start_stack(tmp_path, processor=recorder)
    try:
        yield stack, recorder
    finally:
        await stop_stack(stack)


async def _client(stack: Stack, **options: Any) -> PrivateProcessingClient:
    """A fresh client of ``stack`` whose wallet was filled beforehand (never inside a request)."""
    client = PrivateProcessingClient.from_stack(stack.file, refill=None, **options)
    await client.wallet.refill(wait_quiet=False)
    return client


def _rfc6962_root(entries: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle tree hash, written out here so the receipt is checked independently."""
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    split = 1 << ((len(entries) - 1).bit_length() - 1)  # the largest power of two below the size
    return hashlib.sha256(b"\x01" + _rfc6962_root(entries[:split]) + _rfc6962_root(entries[split:])).digest()


async def test_summarize_and_rewrite_with_receipts_we_reverify(
    world: tuple[Stack, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, recorder = world
    assert stack.cvm is not None and stack.file.ledger is not None
    presented: list[bytes] = []  # what the CVM's TLS actually presented, seen on the CVM's side
    make_certificate = RaTlsServer._make_certificate

    def recording(
        server: RaTlsServer, key: ec.EllipticCurvePrivateKey, evidence: Evidence
    ) -> x509.Certificate:
        certificate = make_certificate(server, key, evidence)
        presented.append(certificate.public_bytes(serialization.Encoding.DER))
        return certificate

    monkeypatch.setattr(RaTlsServer, "_make_certificate", recording)
    client = await _client(stack)
    try:
        summary, receipt = await client.summarize(CHAT)
        rewrite, rewrite_receipt = await client.suggest_rewrite("send me the file", "polite")
    finally:
        await client.close()
    assert summary.text == "2 messages" and rewrite.text == "SEND ME THE FILE"
    assert [r.task for r in recorder.requests] == [
        predictor_pb2.TASK_SUMMARIZE,
        predictor_pb2.TASK_SUGGEST_REWRITE,
    ]
    # Every claim of the receipt, checked against what the servers and the log hold.
    assert receipt.token_type == 2 and receipt.model_id == "test-model"
    assert receipt.measurement == stack.cvm.measurement.hex()
    assert receipt.measurement_log_index == stack.cvm.release_index
    assert receipt.release_key is not None and receipt.release_key.startswith("release+")
    tcb = stack.cvm.root.tcb
    assert receipt.tcb == {
        "bootloader": tcb.bootloader,
        "tee": tcb.tee,
        "snp": tcb.snp,
        "microcode": tcb.microcode,
        "fmc": tcb.fmc,
    }
    assert [receipt.predictor_cert_sha256, rewrite_receipt.predictor_cert_sha256] == [
        hashlib.sha256(der).hexdigest() for der in presented
    ]
    size = receipt.checkpoint["size"]
    assert receipt.checkpoint["origin"] == LOG_ORIGIN and receipt.witnesses == ("witness.test",)
    assert receipt.ohttp_key_log_index is not None
    async with aio.insecure_channel(stack.file.ledger.grpc) as channel:
        ledger = ledger_pb2_grpc.LedgerStub(channel)
        reply = await ledger.GetEntries(ledger_pb2.GetEntriesRequest(start=0, end=size), timeout=5)
        key_reply = await ledger.GetEntries(
            ledger_pb2.GetEntriesRequest(
                start=receipt.ohttp_key_log_index, end=receipt.ohttp_key_log_index + 1
            ),
            timeout=5,
        )
    logged = [bytes(entry) for entry in reply.entries]
    assert len(logged) == size and _rfc6962_root(logged).hex() == receipt.checkpoint["root"]
    release = json.loads(logged[receipt.measurement_log_index])
    assert release["kind"] == "cvm-release" and receipt.measurement in release["measurements"]
    key_entry = json.loads(key_reply.entries[0])
    async with aiohttp.ClientSession() as session, session.get(stack.file.cdn.keys_url) as served:
        key_configs = await served.read()
    assert key_entry["kind"] == "ohttp-key-config" and key_entry["key_id"] == receipt.ohttp_key_id
    assert key_entry["sha256"] == hashlib.sha256(key_configs).hexdigest()


async def test_the_staple_is_checked_each_session_without_the_cdn(world: tuple[Stack, Recorder]) -> None:
    """The release proof travels in each CVM certificate: the CDN's copy is not needed (it is gone
    here), each session checks the staple again, and the AMD chain is reused."""
    stack, recorder = world
    assert stack.cvm is not None
    stack.cdn.store._documents.pop("proof:" + release_proof_name(stack.cvm.measurement))
    client = await _client(stack)
    try:
        _, first = await client.suggest_rewrite("one", "polite")
        _, second = await client.suggest_rewrite("two", "polite")
        assert len(client.chains) == 1
        assert second.measurement_log_index == first.measurement_log_index == stack.cvm.release_index
        assert second.predictor_cert_sha256 != first.predictor_cert_sha256  # a fresh session each time
    finally:
        await client.close()
    assert [r.draft for r in recorder.requests] == ["one", "two"]


async def test_ai_disabled_chat_never_leaves_the_device(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    client = await _client(stack)
    try:
        with pytest.raises(AiDisabledError):
            await client.summarize(Chat("c2", "private", CHAT.messages, ai_disabled=True))
    finally:
        await client.close()
    assert stack.recorder.seen == [] and recorder.requests == []


async def _refused(stack: Stack, recorder: Recorder, error: type[Exception], **options: Any) -> None:
    client = await _client(stack, **options)
    try:
        with pytest.raises(error):
            await client.summarize(CHAT)
    finally:
        await client.close()
    assert recorder.requests == []


async def test_a_cvm_stapling_no_proof_fails_closed(
    world: tuple[Stack, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, recorder = world
    assert stack.cvm is not None and stack.cvm.predictor.stapler is not None
    monkeypatch.setattr(stack.cvm.predictor.stapler, "current", lambda: None)
    await _refused(stack, recorder, NotLoggedError)


async def _head_staple(stack: Stack, index: int) -> ReleaseStaple:
    """A staple, at the log's newest checkpoint, of the (real, logged) entry at ``index``."""
    assert stack.file.ledger is not None
    async with aio.insecure_channel(stack.file.ledger.grpc) as channel:
        ledger = ledger_pb2_grpc.LedgerStub(channel)
        signed = bytes((await ledger.GetCheckpoint(ledger_pb2.GetLedgerCheckpointRequest(), timeout=5)).note)
        size = note.Checkpoint.parse(signed.split(b"\n\n", 1)[0] + b"\n").size
        hashes = (
            await ledger.GetInclusionProof(
                ledger_pb2.GetInclusionProofRequest(index=index, tree_size=size), timeout=5
            )
        ).hashes
        entry = (
            await ledger.GetEntries(ledger_pb2.GetEntriesRequest(start=index, end=index + 1), timeout=5)
        ).entries[0]
    return ReleaseStaple(TlogProof(index, tuple(hashes), signed, bytes(entry)).encode())


async def test_a_cvm_stapling_a_proof_of_something_else_fails_closed(
    world: tuple[Stack, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A genuine, witnessed proof at the log's head — of a logged entry that is not this CVM's release."""
    stack, recorder = world
    assert stack.cvm is not None and stack.cvm.predictor.stapler is not None
    other = 0 if stack.cvm.release_index != 0 else 1
    forged = await _head_staple(stack, other)
    monkeypatch.setattr(stack.cvm.predictor.stapler, "current", lambda: forged)
    await _refused(stack, recorder, EntryMismatchError)


async def test_debug_evidence_fails_closed(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    assert stack.cvm is not None
    stack.cvm.predictor.source.policy = 0x30000 | 1 << 19  # type: ignore[attr-defined]
    await _refused(stack, recorder, EvidenceRefusedError)


class _Replaying:
    """An evidence source that answers with evidence captured for an earlier session."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.captured: Evidence | None = None

    def evidence(self, report_data: bytes) -> Evidence:
        if self.captured is None:
            self.captured = self.inner.evidence(report_data)  # type: ignore[attr-defined]
        return self.captured


@pytest.mark.parametrize("attack", ["wrong_report_data", "replayed_evidence"])
async def test_unbound_evidence_fails_closed(world: tuple[Stack, Recorder], attack: str) -> None:
    stack, recorder = world
    assert stack.cvm is not None
    engine = stack.cvm.predictor.engine
    honest = engine._source
    if attack == "wrong_report_data":

        class Wrong:
            def evidence(self, report_data: bytes) -> Evidence:
                return honest.evidence(bytes(64))

        engine._source = Wrong()
    else:
        replaying = _Replaying(honest)
        replaying.captured = honest.evidence(b"\x01" * 64)
        engine._source = replaying
    await _refused(stack, recorder, BindingError)


async def test_no_admitted_predictor_fails_closed(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    assert stack.gateway.pool is not None
    stack.gateway.pool._admitted = []  # e.g. its workload certificate expired or never verified
    await _refused(stack, recorder, UpstreamError)


async def test_gateway_routing_to_an_unadmitted_predictor_fails_closed(
    world: tuple[Stack, Recorder], tmp_path: Path
) -> None:
    """A hostile operator runs an unlogged image, admits it in its own verifier and routes to it."""
    stack, recorder = world
    assert stack.cvm is not None and stack.gateway.pool is not None
    rogue_manifest = measure_image(config={"image": "not released"})
    stack.cvm.verifier.config.unlogged_measurements = (rogue_manifest.measurement,)
    rogue_recorder = Recorder()
    rogue = PredictorService(
        PredictorConfig(f"127.0.0.1:{stack.cvm.verifier.bound_port}", stack.cvm.verifier_ca_file),
        SimulatedSnp(
            stack.cvm.root, measurement=rogue_manifest.measurement, host_data=rogue_manifest.host_data
        ),
        rogue_recorder,
    )
    rogue_ep = await rogue.start()
    pool = stack.gateway.pool
    rogue_pool = GrpcPredictorPool(
        [str(rogue_ep["grpc"])], stack.cvm.gateway_identity, stack.cvm.verifier.ca.pem
    )
    assert await rogue_pool.refresh() == [str(rogue_ep["grpc"])]
    honest = (pool._channels, pool._admitted)
    try:
        # Route every new session to the rogue CVM (what a compromised gateway would do).
        pool._channels, pool._admitted = rogue_pool._channels, list(rogue_pool.admitted())
        client = await _client(stack)
        try:
            with pytest.raises(NotLoggedError):  # its CVM has no release to staple
                await client.summarize(CHAT)
        finally:
            await client.close()
        # The client never finished the TLS handshake with it, let alone sent data.
        pending = list(rogue.engine._sessions.values())
        assert len(pending) == 1 and not pending[0].tls.handshake_complete
    finally:
        pool._channels, pool._admitted = honest
        await rogue_pool.close()
        await rogue.stop()
    assert rogue_recorder.requests == [] and recorder.requests == []


async def test_key_config_not_in_the_log_fails_closed(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    async with aiohttp.ClientSession() as session, session.get(stack.file.cdn.keys_url) as resp:
        body = await resp.read()
    stack.cdn.store._documents.pop("proof:" + ohttp_keys_proof_name(body))
    await _refused(stack, recorder, NotLoggedError)
    assert stack.recorder.seen == []


@pytest.mark.parametrize("fork_size", ["same", "ahead"])
async def test_a_cvm_stapling_a_proof_from_a_fork_fails_closed(
    world: tuple[Stack, Recorder], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fork_size: str
) -> None:
    """The CVM staples its release 'proved' on a fork signed with the log's and the witness's keys
    (a split view), at the size the client holds or ahead of it with a consistency proof computed
    on the fork: the client refuses after the handshake, and keeps the real log's checkpoint."""
    stack, recorder = world
    assert stack.cvm is not None and stack.ledger is not None and stack.cvm.predictor.stapler is not None
    real = stack.ledger.served_size
    size = real if fork_size == "same" else real + 2
    release = await _release_entry(stack)
    fork = LedgerStore(tmp_path / "fork.sqlite3")
    fork.append_batch(
        [entries.OhttpKeyConfigEntry.describing(b"fork %d" % i, 1, 0, 1).encode() for i in range(size - 1)]
    )
    fork.append_batch([release])
    checkpoint = note.Checkpoint(LOG_ORIGIN, size, tlog.tree_hash(size, fork))
    signed = note.sign_note(
        checkpoint.encode(),
        [note.parse_signer_key(stack.keys.log), note.parse_signer_key(stack.keys.witness)],
    )
    proof = TlogProof(size - 1, tuple(tlog.prove_record(size, size - 1, fork)), signed, extra=release)
    since = () if size == real else ((real, tuple(tlog.prove_tree(size, real, fork))),)
    fork.close()
    forged = ReleaseStaple(proof.encode(), since)
    monkeypatch.setattr(stack.cvm.predictor.stapler, "current", lambda: forged)
    store = CheckpointStore(tmp_path / "client-checkpoints.json")
    await _refused(stack, recorder, InconsistentCheckpointError, checkpoints=store)
    stored = store.load(LOG_ORIGIN)
    assert stored is not None and stored.size == real  # the real log was seen first (refreshed)


async def _release_entry(stack: Stack) -> bytes:
    assert stack.cvm is not None and stack.file.ledger is not None
    async with aio.insecure_channel(stack.file.ledger.grpc) as channel:
        reply = await ledger_pb2_grpc.LedgerStub(channel).GetEntries(
            ledger_pb2.GetEntriesRequest(start=stack.cvm.release_index, end=stack.cvm.release_index + 1),
            timeout=5,
        )
    return bytes(reply.entries[0])


async def test_the_cvm_keeps_its_last_staple_when_the_log_fails_and_says_so(
    world: tuple[Stack, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, recorder = world
    assert stack.cvm is not None and stack.cvm.predictor.stapler is not None
    stapler = stack.cvm.predictor.stapler
    staple = stapler.current()

    async def unreachable() -> bytes:
        raise UpstreamError("ledger unavailable")

    monkeypatch.setattr(stapler._source, "checkpoint", unreachable)
    failed = events.STATS.emitted["predictor.staple_failed"]
    assert await stack.cvm.predictor.refresh_staple() is False
    assert events.STATS.emitted["predictor.staple_failed"] == failed + 1
    assert stapler.current() == staple is not None
    client = await _client(stack)
    try:
        response, _ = await client.suggest_rewrite("still here", "polite")
    finally:
        await client.close()
    assert response.text == "STILL HERE" and [r.draft for r in recorder.requests] == ["still here"]
