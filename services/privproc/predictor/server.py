"""The predictor process (the CVM): gRPC ``privproc.v1.Predictor`` over mutual TLS.

At start it proves itself to the verifier to get a workload certificate:
a fresh key, a CSR, and evidence whose REPORT_DATA binds that key. Its gRPC
port then speaks mutual TLS under the verifier's CA only, so only the
gateway (or another admitted CVM) reaches it and the gateway reaches only
it. Sessions themselves are RA-TLS to the device (:mod:`.sessions`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio

from privproc import events
from privproc.attestation.sources import EvidenceSource
from privproc.attestation.workload import key_binding, spki
from privproc.errors import BadRequestError, error_from_status
from privproc.predictor.sessions import Processor, SessionEngine
from privproc.runtime import mtls
from privproc.runtime.rpc import GrpcServer, channel_options
from privproc.v1 import predictor_pb2, predictor_pb2_grpc, verifier_pb2, verifier_pb2_grpc

EVIDENCE_REQUEST_DOMAIN = b"privproc-evidence-request/v1\n"


@dataclass
class PredictorConfig:
    verifier_target: str
    verifier_ca_pem: bytes
    host: str = "127.0.0.1"
    grpc_port: int = 0


class PredictorServicer(predictor_pb2_grpc.PredictorServicer):
    def __init__(self, engine: SessionEngine, source: EvidenceSource) -> None:
        self._engine = engine
        self._source = source

    async def OpenSession(
        self, request: predictor_pb2.OpenSessionRequest, context: aio.ServicerContext[Any, Any]
    ) -> predictor_pb2.SessionRecords:
        session_id, records, closed = await self._engine.open(bytes(request.tls_records))
        return predictor_pb2.SessionRecords(session_id=session_id, tls_records=records, closed=closed)

    async def ContinueSession(
        self, request: predictor_pb2.ContinueSessionRequest, context: aio.ServicerContext[Any, Any]
    ) -> predictor_pb2.SessionRecords:
        records, closed = await self._engine.resume(bytes(request.session_id), bytes(request.tls_records))
        return predictor_pb2.SessionRecords(session_id=request.session_id, tls_records=records, closed=closed)

    async def GetEvidence(
        self, request: predictor_pb2.GetEvidenceRequest, context: aio.ServicerContext[Any, Any]
    ) -> predictor_pb2.GetEvidenceResponse:
        if not 16 <= len(request.nonce) <= 64:
            raise BadRequestError("nonce must be 16 to 64 bytes")
        report_data = hashlib.sha512(EVIDENCE_REQUEST_DOMAIN + bytes(request.nonce)).digest()
        return predictor_pb2.GetEvidenceResponse(evidence=[self._source.evidence(report_data).to_proto()])


async def obtain_workload_identity(config: PredictorConfig, source: EvidenceSource) -> mtls.Identity:
    """Prove this CVM to the verifier; its certificate for a fresh key."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, mtls.WORKLOAD_NAME)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA384())
    evidence = source.evidence(key_binding(spki(key.public_key())))
    async with aio.insecure_channel(config.verifier_target, options=channel_options()) as channel:
        try:
            reply = await verifier_pb2_grpc.VerifierStub(channel).IssueWorkloadCertificate(
                verifier_pb2.IssueWorkloadCertificateRequest(
                    evidence=[evidence.to_proto()], csr=csr.public_bytes(serialization.Encoding.DER)
                ),
                timeout=30,
            )
        except aio.AioRpcError as err:
            raise error_from_status(err.details() or "") from None
    certificate = x509.load_der_x509_certificate(bytes(reply.certificate_chain[0]))
    return mtls.Identity.of(certificate, key)


class PredictorService:
    name = "predictor"

    def __init__(self, config: PredictorConfig, source: EvidenceSource, processor: Processor) -> None:
        self.config = config
        self.source = source
        self.engine = SessionEngine(source, processor)
        self.grpc = GrpcServer("predictor")
        self.grpc.add(
            predictor_pb2_grpc.add_PredictorServicer_to_server,
            PredictorServicer(self.engine, source),
            "privproc.v1.Predictor",
        )

    async def start(self) -> dict[str, object]:
        identity = await obtain_workload_identity(self.config, self.source)
        credentials = mtls.server_credentials(identity, self.config.verifier_ca_pem)
        port = await self.grpc.start(self.config.host, self.config.grpc_port, credentials)
        events.emit("service.started", service="predictor", transport="grpc", port=port)
        return {"grpc": f"{self.config.host}:{port}"}

    async def stop(self) -> None:
        await self.grpc.stop(grace=5.0)
