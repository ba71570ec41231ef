"""The verifier service: appraisal against logged releases, and key-bound workload certificates."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio

from privproc.attestation.measure import measure_image
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.attestation.verifier import VerifierConfig, VerifierService
from privproc.attestation.workload import key_binding, measurement_of, spki
from privproc.ledger.publisher import LedgerPublisher
from privproc.v1 import verifier_pb2, verifier_pb2_grpc
from tests.livestack import Stack, signed_release_entry


async def _verifier(stack: Stack, root: DevelopmentRoot, tmp_path: Path) -> VerifierService:
    assert stack.file.ledger is not None and stack.file.witness is not None
    service = VerifierService(
        VerifierConfig(
            state_dir=tmp_path / "verifier",
            ledger_grpc=stack.file.ledger.grpc,
            ledger_tiles_url=stack.file.ledger.tiles_url,
            log_vkey=stack.file.ledger.vkey,
            witness_vkeys=(stack.file.witness.vkey,),
            development_root=root.ark_fingerprint,
            release_keys=(stack.keys.release_vkey,),
        )
    )
    await service.start()
    return service


async def _publish(stack: Stack, entry: bytes) -> int:
    assert stack.file.ledger is not None
    publisher = LedgerPublisher(stack.file.ledger.grpc, stack.keys.release)
    try:
        return (await publisher.publish(entry)).index
    finally:
        await publisher.close()


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "predictor")])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


async def test_appraise_and_certify_against_logged_releases(
    stack: Stack, root: DevelopmentRoot, tmp_path: Path
) -> None:
    manifest = measure_image()
    index = await _publish(stack, signed_release_entry(manifest, stack.keys))
    verifier = await _verifier(stack, root, tmp_path)
    try:
        simulator = SimulatedSnp(root, measurement=manifest.measurement, host_data=manifest.host_data)
        async with aio.insecure_channel(verifier.config.host + ":" + verifier_target(verifier)) as channel:
            stub = verifier_pb2_grpc.VerifierStub(channel)
            appraisal = await stub.Appraise(
                verifier_pb2.AppraiseRequest(
                    evidence=[simulator.evidence(b"\x05" * 64).to_proto()], expected_report_data=b"\x05" * 64
                ),
                timeout=10,
            )
            assert appraisal.verified and appraisal.claims.release_log_index == index

            # A workload certificate for a key the evidence binds.
            key = ec.generate_private_key(ec.SECP384R1())
            bound = simulator.evidence(key_binding(spki(key.public_key())))
            issued = await stub.IssueWorkloadCertificate(
                verifier_pb2.IssueWorkloadCertificateRequest(evidence=[bound.to_proto()], csr=_csr(key)),
                timeout=10,
            )
            certificate = x509.load_der_x509_certificate(issued.certificate_chain[0])
            assert measurement_of(certificate) == manifest.measurement
            assert certificate.issuer == verifier.ca.certificate.subject
            lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
            assert lifetime.total_seconds() <= 16 * 60

            # Evidence that binds another key: refused.
            other = ec.generate_private_key(ec.SECP384R1())
            with pytest.raises(aio.AioRpcError) as info:
                await stub.IssueWorkloadCertificate(
                    verifier_pb2.IssueWorkloadCertificateRequest(
                        evidence=[bound.to_proto()], csr=_csr(other)
                    ),
                    timeout=10,
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

            # A changed image is refused until its release is logged.
            changed = tmp_path / "image"
            changed.mkdir()
            (changed / "predictor.py").write_text("CHANGED = True\n")
            new = measure_image(root=changed)
            new_sim = SimulatedSnp(root, measurement=new.measurement, host_data=new.host_data)
            request = verifier_pb2.AppraiseRequest(evidence=[new_sim.evidence(bytes(64)).to_proto()])
            refused = await stub.Appraise(request, timeout=10)
            assert not refused.verified and list(refused.reasons) == ["measurement_not_logged"]
            with pytest.raises(aio.AioRpcError):
                await stub.IssueWorkloadCertificate(
                    verifier_pb2.IssueWorkloadCertificateRequest(
                        evidence=[new_sim.evidence(key_binding(spki(key.public_key()))).to_proto()],
                        csr=_csr(key),
                    ),
                    timeout=10,
                )
            await _publish(stack, signed_release_entry(new, stack.keys))
            await verifier.sync_releases()
            assert (await stub.Appraise(request, timeout=10)).verified
    finally:
        await verifier.stop()


def verifier_target(verifier: VerifierService) -> str:
    return str(verifier.bound_port)
