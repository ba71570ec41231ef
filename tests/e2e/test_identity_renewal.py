"""Short-lived mTLS certificates are renewed while the stack serves — and a CVM that cannot
attest again drops out of the gateway's admission once its certificate expires."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from privproc import events
from privproc.attestation.workload import VerifierCA
from privproc.client.private import PrivateProcessingClient
from privproc.errors import PrivprocError
from privproc.gateway.predictors import GrpcPredictorPool
from privproc.runtime import mtls
from privproc.v1 import predictor_pb2
from tests.livestack import Stack, start_stack, stop_stack

#: Six-second workload certificates; connections recycled within a second.
SHORT_LIVED = {
    "certificate_minutes": 0.1,
    "predictor_options": {
        "max_connection_age_seconds": 0.5,
        "connection_age_grace_seconds": 0.5,
        "renewal_retry_seconds": 0.5,
    },
}
FAST_ADMISSION = {"admission_seconds": 0.2}


class Recorder:
    def __init__(self) -> None:
        self.requests: list[predictor_pb2.ProcessRequest] = []

    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        self.requests.append(request)
        return predictor_pb2.ProcessResponse(text=request.draft.upper(), model_id="test-model")


async def _sleep_until(moment: datetime.datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.datetime.now(datetime.UTC)).total_seconds()))


def _expiry_and_margin(certificate: x509.Certificate) -> datetime.datetime:
    """When no connection made with ``certificate`` can be left (age + grace) and admission re-ran."""
    return certificate.not_valid_after_utc + datetime.timedelta(seconds=2)


@dataclass
class World:
    stack: Stack
    recorder: Recorder
    identity: mtls.RenewableServerIdentity
    first: x509.Certificate


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A stack whose predictor holds six-second certificates, and its first one."""
    recorder = Recorder()
    stack = await start_stack(
        tmp_path, processor=recorder, cvm_options=SHORT_LIVED, gateway_config=FAST_ADMISSION
    )
    try:
        assert stack.cvm is not None and stack.gateway.pool is not None
        identity = stack.cvm.predictor.identity
        assert identity is not None
        yield World(stack, recorder, identity, identity.certificate)
    finally:
        await stop_stack(stack)


async def test_predictor_renews_its_certificate_and_stays_admitted(world: World) -> None:
    stack, identity, first = world.stack, world.identity, world.first
    assert stack.cvm is not None and stack.gateway.pool is not None
    renewed = events.STATS.emitted["predictor.identity_renewed"]
    await _sleep_until(_expiry_and_margin(first))
    # The first certificate has expired; every connection made with it is gone.
    assert identity.certificate.serial_number != first.serial_number
    assert identity.certificate.not_valid_after_utc > first.not_valid_after_utc
    assert events.STATS.emitted["predictor.identity_renewed"] > renewed
    assert stack.gateway.pool.admitted() == [stack.cvm.predictor_target]
    async with PrivateProcessingClient.from_stack(stack.file, refill=None) as client:
        await client.wallet.refill(wait_quiet=False)  # tokens are bought outside requests
        response, _ = await client.suggest_rewrite("still served", "polite")
    assert response.text == "STILL SERVED" and len(world.recorder.requests) == 1


async def test_a_cvm_that_cannot_attest_again_drops_out(world: World) -> None:
    stack, identity, first = world.stack, world.identity, world.first
    assert stack.cvm is not None and stack.gateway.pool is not None
    failed = events.STATS.emitted["predictor.identity_renewal_failed"]
    await stack.cvm.verifier.stop()  # no more certificates
    await _sleep_until(_expiry_and_margin(first))
    assert identity.certificate.serial_number == first.serial_number
    assert events.STATS.emitted["predictor.identity_renewal_failed"] > failed
    assert stack.gateway.pool.admitted() == []
    async with PrivateProcessingClient.from_stack(stack.file, refill=None) as client:
        await client.wallet.refill(wait_quiet=False)  # so that only the missing predictor can fail
        with pytest.raises(PrivprocError):
            await client.suggest_rewrite("nobody to ask", "polite")
    assert world.recorder.requests == []


async def test_gateway_takes_a_renewed_certificate_and_refuses_a_mismatched_pair(tmp_path: Path) -> None:
    recorder = Recorder()
    stack = await start_stack(tmp_path, processor=recorder, cvm_options=SHORT_LIVED)
    assert stack.cvm is not None
    ca = stack.cvm.verifier.ca
    cert_file, key_file = tmp_path / "gateway.pem", tmp_path / "gateway.key"

    def issue(validity: datetime.timedelta) -> tuple[mtls.Identity, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = ca.issue_service(key.public_key(), mtls.WORKLOAD_NAME, validity=validity)
        identity = mtls.Identity.of(certificate, key)
        cert_file.write_bytes(identity.certificate_pem)
        key_file.write_bytes(identity.key_pem)
        return identity, certificate

    short, short_certificate = issue(datetime.timedelta(seconds=6))
    pool = GrpcPredictorPool(
        [stack.cvm.predictor_target],
        short,
        ca.pem,
        identity_source=mtls.file_identity(cert_file, key_file),
    )
    try:
        assert await pool.refresh() == [stack.cvm.predictor_target]
        # Half-written renewal: a new certificate beside the old key is refused, the old pair kept.
        refused = events.STATS.emitted["gateway.identity_refused"]
        other_key = ec.generate_private_key(ec.SECP256R1())
        cert_file.write_bytes(
            mtls.Identity.of(
                ca.issue_service(other_key.public_key(), mtls.WORKLOAD_NAME), other_key
            ).certificate_pem
        )
        assert await pool.refresh() == [stack.cvm.predictor_target]
        assert events.STATS.emitted["gateway.identity_refused"] == refused + 1
        # A whole renewed pair is taken, and keeps the gateway admitted past the old one's expiry.
        reloaded = events.STATS.emitted["gateway.identity_reloaded"]
        issue(datetime.timedelta(minutes=10))
        assert await pool.refresh() == [stack.cvm.predictor_target]
        assert events.STATS.emitted["gateway.identity_reloaded"] == reloaded + 1
        await _sleep_until(_expiry_and_margin(short_certificate))
        assert await pool.refresh() == [stack.cvm.predictor_target]
    finally:
        await pool.close()
        await stop_stack(stack)


async def test_without_renewal_the_gateway_is_refused_after_its_certificate_expires(tmp_path: Path) -> None:
    """The control for the test above: the predictor enforces the gateway's expiry."""
    stack = await start_stack(tmp_path, processor=Recorder(), cvm_options=SHORT_LIVED)
    assert stack.cvm is not None
    ca = stack.cvm.verifier.ca
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = ca.issue_service(
        key.public_key(), mtls.WORKLOAD_NAME, validity=datetime.timedelta(seconds=4)
    )
    pool = GrpcPredictorPool([stack.cvm.predictor_target], mtls.Identity.of(certificate, key), ca.pem)
    try:
        assert await pool.refresh() == [stack.cvm.predictor_target]
        await _sleep_until(_expiry_and_margin(certificate))
        assert await pool.refresh() == []
    finally:
        await pool.close()
        await stop_stack(stack)


async def test_up_reissues_the_gateway_certificate_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's renewal (``privproc up``, ``serve gateway-identity``): a fresh pair replaces
    the files (0600), half-way to expiry."""
    from privproc.attestation import identity

    ca_dir, out_dir = tmp_path / "ca", tmp_path / "identity"
    VerifierCA.load_or_create(ca_dir)
    cert_file, key_file = identity.issue(ca_dir, out_dir)
    assert (cert_file.name, key_file.name) == ("tls.crt", "tls.key")
    first = mtls.file_identity(cert_file, key_file)()
    first_certificate = mtls.certificate_of(first)
    lifetime = (first_certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).total_seconds()
    assert abs(identity.renewal_delay(cert_file) - lifetime / 2) < 5
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) > 1:
            raise asyncio.CancelledError
        await real_sleep(0)

    monkeypatch.setattr(identity.asyncio, "sleep", no_wait)
    with pytest.raises(asyncio.CancelledError):
        await identity.renew_forever(ca_dir, out_dir)
    second = mtls.file_identity(cert_file, key_file)()
    assert second != first and second.key_pem != first.key_pem
    assert mtls.certificate_of(second).serial_number != first_certificate.serial_number
    assert cert_file.stat().st_mode & 0o777 == 0o600 and key_file.stat().st_mode & 0o777 == 0o600
    assert len(delays) == 2 and delays[1] > 60
