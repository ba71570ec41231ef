"""Attack (issue 11, item 11): a host on stale firmware, or a CVM whose release is old, is admitted.

The attacker controls the host (and, for the client tests, the operator's
verifier, which admits the CVM for routing anyway). Each release entry now
carries a minimum TCB, the HOST_DATA its CVMs launch with and an expiry, and
a later ``cvm-revocation`` withdraws it: the device refuses before it sends
anything, and the operator's verifier refuses to certify such a CVM.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from privproc.attestation import releases
from privproc.attestation.abi import TcbVersion
from privproc.attestation.evidence import Evidence
from privproc.attestation.measure import measure_image
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.client.private import Chat, ChatMessage, PrivateProcessingClient
from privproc.ledger.publisher import LedgerPublisher
from privproc.v1 import predictor_pb2
from privproc.wire import entries, note
from tests.livestack import Stack, start_stack, stop_stack

CHAT = Chat("c1", "Team", (ChatMessage("ana", "2026-11-25T09:00:00Z", "The release moves to Thursday."),))
STALE_TCB = TcbVersion(0, 0, 0, 0)


class Recorder:
    """The CVM's model: records what reached it (nothing may, in these attacks)."""

    def __init__(self) -> None:
        self.requests: list[predictor_pb2.ProcessRequest] = []

    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        self.requests.append(request)
        return predictor_pb2.ProcessResponse(text="answer", model_id="test-model")


#: The operator's verifier admits the CVM for routing whatever the release says (it trusts no
#: release key, and stages the measurement unlogged): only the device's own checks remain.
COMPLICIT_VERIFIER: dict[str, Any] = {"verifier_options": {"release_keys": ()}, "admit_unlogged": True}


async def _world(tmp_path: Path, **cvm_options: Any) -> tuple[Stack, Recorder]:
    recorder = Recorder()
    stack = await start_stack(tmp_path, processor=recorder, cvm_options=cvm_options)
    return stack, recorder


@pytest.fixture
async def honest(tmp_path: Path) -> AsyncIterator[tuple[Stack, Recorder]]:
    stack, recorder = await _world(tmp_path)
    try:
        yield stack, recorder
    finally:
        await stop_stack(stack)


async def _summarize(stack: Stack, **options: Any) -> None:
    async with PrivateProcessingClient.from_stack(stack.file, **options) as client:
        # What the device does in the background, ahead of any request: tokens and the log.
        await client.wallet.refill(wait_quiet=False)
        if client.refresher is not None:
            await client.refresher.refresh()
        await client.summarize(CHAT)


async def test_stale_firmware_is_refused_by_the_device(tmp_path: Path) -> None:
    """The host runs the CVM on TCB 0.0.0.0: the VCEK chains to the trusted root, the report
    verifies, but the release requires the current TCB."""
    stack, recorder = await _world(tmp_path, simulator_tcb=STALE_TCB, **COMPLICIT_VERIFIER)
    try:
        with pytest.raises(releases.ReleaseTcbError):
            await _summarize(stack)
    finally:
        await stop_stack(stack)
    assert recorder.requests == []


async def test_other_configuration_is_refused_by_the_device(tmp_path: Path) -> None:
    """The CVM image is the released one but launched with another configuration (HOST_DATA)."""
    stack, recorder = await _world(tmp_path, launch_host_data=b"\x07" * 32, **COMPLICIT_VERIFIER)
    try:
        with pytest.raises(releases.ReleaseHostDataError):
            await _summarize(stack)
    finally:
        await stop_stack(stack)
    assert recorder.requests == []


async def test_expired_release_is_refused_by_the_device(honest: tuple[Stack, Recorder]) -> None:
    stack, recorder = honest
    # The release is valid a day: two days on, the same CVM is refused.
    with pytest.raises(releases.ReleaseExpiredError):
        await _summarize(stack, clock=lambda: time.time() + 2 * 86400)
    assert recorder.requests == []


async def test_revoked_release_is_refused_by_the_device_and_the_verifier(
    honest: tuple[Stack, Recorder],
) -> None:
    stack, recorder = honest
    assert stack.cvm is not None and stack.file.ledger is not None
    await _summarize(stack)  # admitted while its release stands
    assert len(recorder.requests) == 1
    revocation = entries.CvmRevocationEntry.sign(
        signer=note.parse_signer_key(stack.keys.release), release_index=stack.cvm.release_index
    ).encode()
    publisher = LedgerPublisher(stack.file.ledger.grpc, stack.keys.release)
    try:
        await publisher.publish(revocation)
    finally:
        await publisher.close()
    with pytest.raises(releases.ReleaseRevokedError):
        await _summarize(stack)
    assert len(recorder.requests) == 1
    # The operator's verifier applies the same rule: no workload certificate for it any more.
    verifier = stack.cvm.verifier
    await verifier.sync_releases()
    evidence = SimulatedSnp(
        stack.cvm.root, measurement=stack.cvm.measurement, host_data=measure_image().host_data
    ).evidence(bytes(64))
    assert "release_revoked" in verifier.appraise(evidence, None).reasons


def _stale_root(stack: Stack, tmp_path: Path) -> DevelopmentRoot:
    """The same chip and AMD root, its firmware rolled back: a VCEK for TCB 0.0.0.0."""
    source = tmp_path / "simulator"
    stale = tmp_path / "stale-simulator"
    stale.mkdir()
    for name in ("ark.key", "ask.key", "vcek.key", "chip_id", "ARK-Milan.der", "SEV-Milan.der"):
        (stale / name).write_bytes((source / name).read_bytes())
    return DevelopmentRoot.load_or_create(stale, tcb=STALE_TCB)


async def test_the_operators_verifier_refuses_stale_firmware_and_other_configurations(
    honest: tuple[Stack, Recorder], tmp_path: Path
) -> None:
    stack, _ = honest
    cvm = stack.cvm
    assert cvm is not None
    verifier = cvm.verifier
    manifest = measure_image()  # for its HOST_DATA, the configuration digest the CVM launched with

    def reasons(root: DevelopmentRoot, host_data: bytes) -> tuple[str, ...]:
        source = SimulatedSnp(root, measurement=cvm.measurement, host_data=host_data)
        evidence: Evidence = source.evidence(bytes(64))
        return tuple(verifier.appraise(evidence, None).reasons)

    assert reasons(stack.cvm.root, manifest.host_data) == ()
    assert reasons(_stale_root(stack, tmp_path), manifest.host_data) == ("release_tcb_below_minimum",)
    assert reasons(stack.cvm.root, b"\x07" * 32) == ("release_host_data",)
    verifier.clock = lambda: time.time() + 2 * 86400
    assert reasons(stack.cvm.root, manifest.host_data) == ("release_expired",)
