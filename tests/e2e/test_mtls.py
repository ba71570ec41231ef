"""Internal gRPC is mutual TLS under the verifier's CA: nobody else reaches a predictor, and no
predictor without a verifier-issued certificate is reached."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from privproc.attestation.workload import VerifierCA, key_binding, measurement_of, spki
from privproc.errors import PermissionDeniedError
from privproc.runtime import mtls
from privproc.runtime.rpc import GrpcServer


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "predictor")])
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def _workload(ca: VerifierCA) -> mtls.Identity:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = ca.issue_workload(
        _csr(key), bound_report_data=key_binding(spki(key.public_key())), measurement=b"\x07" * 48
    )
    assert measurement_of(cert) == b"\x07" * 48
    return mtls.Identity.of(cert, key)


async def _check(target: str, identity: mtls.Identity, ca_pem: bytes) -> bool:
    credentials = mtls.channel_credentials(identity, ca_pem)
    async with aio.secure_channel(target, credentials, options=mtls.channel_options()) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[no-untyped-call]
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _predictor(identity: mtls.Identity, client_ca_pem: bytes) -> tuple[GrpcServer, str]:
    server = GrpcServer("predictor")
    port = await server.start(
        "127.0.0.1", 0, mtls.RenewableServerIdentity(identity, client_ca_pem).credentials()
    )
    return server, f"127.0.0.1:{port}"


async def test_gateway_reaches_only_predictors_with_verifier_certificates(tmp_path: Path) -> None:
    ca = VerifierCA.load_or_create(tmp_path / "verifier")
    rogue_ca = VerifierCA.load_or_create(tmp_path / "rogue", name="rogue CA")
    gateway_key = ec.generate_private_key(ec.SECP256R1())
    gateway = mtls.Identity.of(ca.issue_service(gateway_key.public_key(), mtls.WORKLOAD_NAME), gateway_key)

    admitted, admitted_target = await _predictor(_workload(ca), ca.pem)
    impostor, impostor_target = await _predictor(_workload(rogue_ca), ca.pem)
    try:
        assert await _check(admitted_target, gateway, ca.pem)
        # A predictor whose certificate the verifier did not issue: the gateway refuses it.
        assert not await _check(impostor_target, gateway, ca.pem)
        # A client without a verifier-issued certificate: the predictor refuses it.
        stranger_key = ec.generate_private_key(ec.SECP256R1())
        stranger = mtls.Identity.of(rogue_ca.issue_service(stranger_key.public_key(), "x"), stranger_key)
        assert not await _check(admitted_target, stranger, ca.pem)
    finally:
        await admitted.stop(0)
        await impostor.stop(0)


def test_workload_certificate_needs_the_evidence_to_bind_the_key(tmp_path: Path) -> None:
    ca = VerifierCA.load_or_create(tmp_path / "verifier")
    key = ec.generate_private_key(ec.SECP384R1())
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(PermissionDeniedError):
        ca.issue_workload(
            _csr(key), bound_report_data=key_binding(spki(other.public_key())), measurement=b"\x00" * 48
        )
    cert = ca.issue_workload(
        _csr(key), bound_report_data=key_binding(spki(key.public_key())), measurement=b"\x01" * 48
    )
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(hours=1)
    # The CA survives a restart (same key, same certificate).
    assert VerifierCA.load_or_create(tmp_path / "verifier").pem == ca.pem
    assert oct((tmp_path / "verifier" / "ca.key").stat().st_mode & 0o777) == "0o600"
