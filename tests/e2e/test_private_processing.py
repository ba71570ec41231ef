"""The whole private path: token, OHTTP, RA-TLS to an attested predictor, logged release — and
every way it must fail closed, each asserting the predictor received no application data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc import aio

from privproc.attestation.appraisal import SnpPolicy
from privproc.attestation.evidence import Evidence
from privproc.attestation.ratls import BindingError, EvidenceRefusedError
from privproc.client import OhttpClient, TokenWallet
from privproc.client.private import (
    AiDisabledError,
    Chat,
    ChatMessage,
    PrivateProcessingClient,
    release_proof_name,
)
from privproc.client.transparency import NotLoggedError
from privproc.errors import UpstreamError
from privproc.v1 import ledger_pb2, ledger_pb2_grpc, predictor_pb2
from tests.livestack import Stack, start_stack, stop_stack

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


async def _client(stack: Stack) -> tuple[PrivateProcessingClient, OhttpClient, TokenWallet]:
    ohttp = OhttpClient.from_stack(stack.file)
    wallet = TokenWallet.from_stack(stack.file, transparency=ohttp.transparency)
    assert stack.file.development_root is not None and ohttp.transparency is not None
    client = PrivateProcessingClient(
        ohttp,
        wallet,
        policy=SnpPolicy().with_development_root(stack.file.development_root),
        transparency=ohttp.transparency,
        proofs_url=stack.file.cdn.proofs_url,
    )
    return client, ohttp, wallet


async def _close(ohttp: OhttpClient, wallet: TokenWallet) -> None:
    await wallet.close()
    await ohttp.close()


async def test_summarize_and_rewrite_with_receipts_we_reverify(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    assert stack.cvm is not None and stack.file.ledger is not None
    client, ohttp, wallet = await _client(stack)
    try:
        summary, receipt = await client.summarize(CHAT)
        rewrite, _ = await client.suggest_rewrite("send me the file", "polite")
    finally:
        await _close(ohttp, wallet)
    assert summary.text == "2 messages" and rewrite.text == "SEND ME THE FILE"
    assert [r.task for r in recorder.requests] == [
        predictor_pb2.TASK_SUMMARIZE,
        predictor_pb2.TASK_SUGGEST_REWRITE,
    ]
    assert receipt.measurement == stack.cvm.measurement.hex()
    assert receipt.measurement_log_index == stack.cvm.release_index
    assert receipt.token_type == 2 and receipt.ohttp_key_log_index is not None
    assert receipt.witnesses == ("witness.test",) and receipt.model_id == "test-model"
    assert len(receipt.predictor_cert_sha256) == 64 and receipt.tcb["snp"] == stack.cvm.root.tcb.snp
    # Re-verify the receipt's claims against the log independently.
    async with aio.insecure_channel(stack.file.ledger.grpc) as channel:
        stub = ledger_pb2_grpc.LedgerStub(channel)
        entries = await stub.GetEntries(
            ledger_pb2.GetEntriesRequest(
                start=receipt.measurement_log_index, end=receipt.measurement_log_index + 1
            ),
            timeout=5,
        )
    assert receipt.measurement.encode() in entries.entries[0]
    assert receipt.checkpoint["size"] > receipt.measurement_log_index


async def test_ai_disabled_chat_never_leaves_the_device(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    client, ohttp, wallet = await _client(stack)
    try:
        with pytest.raises(AiDisabledError):
            await client.summarize(Chat("c2", "private", CHAT.messages, ai_disabled=True))
    finally:
        await _close(ohttp, wallet)
    assert stack.recorder.seen == [] and recorder.requests == []


async def test_unlogged_measurement_fails_closed(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    assert stack.cvm is not None
    stack.cdn.store._documents.pop("proof:" + release_proof_name(stack.cvm.measurement))
    client, ohttp, wallet = await _client(stack)
    try:
        with pytest.raises(NotLoggedError):
            await client.summarize(CHAT)
    finally:
        await _close(ohttp, wallet)
    assert recorder.requests == []


async def test_debug_evidence_fails_closed(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    assert stack.cvm is not None
    stack.cvm.predictor.source.policy = 0x30000 | 1 << 19  # type: ignore[attr-defined]
    client, ohttp, wallet = await _client(stack)
    try:
        with pytest.raises(EvidenceRefusedError):
            await client.summarize(CHAT)
    finally:
        await _close(ohttp, wallet)
    assert recorder.requests == []


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
                return honest.evidence(bytes(64))  # type: ignore[attr-defined]

        engine._source = Wrong()  # type: ignore[assignment]
    else:
        replaying = _Replaying(honest)
        replaying.captured = honest.evidence(b"\x01" * 64)  # type: ignore[attr-defined]
        engine._source = replaying  # type: ignore[assignment]
    client, ohttp, wallet = await _client(stack)
    try:
        with pytest.raises(BindingError):
            await client.summarize(CHAT)
    finally:
        await _close(ohttp, wallet)
    assert recorder.requests == []


async def test_no_admitted_predictor_fails_closed(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    assert stack.gateway.pool is not None
    stack.gateway.pool._admitted = []  # e.g. its workload certificate expired or never verified
    client, ohttp, wallet = await _client(stack)
    try:
        with pytest.raises(UpstreamError):
            await client.summarize(CHAT)
    finally:
        await _close(ohttp, wallet)
    assert recorder.requests == []
