"""The predictor process (the CVM): gRPC ``privproc.v1.Predictor`` over mutual TLS.

At start it proves itself to the verifier to get a workload certificate:
a fresh key, a CSR, and evidence whose REPORT_DATA binds that key. Its gRPC
port then speaks mutual TLS under the verifier's CA only, so only the
gateway (or another admitted CVM) reaches it and the gateway reaches only
it. Sessions themselves are RA-TLS to the device (:mod:`.sessions`).

Workload certificates are short-lived (15 minutes by default). Half-way
through one's remaining validity the predictor attests again for a new key and
presents the new certificate from the next TLS handshake on; a failed
renewal is retried (with an event) while the current certificate lasts.
Connections are closed after :attr:`PredictorConfig.max_connection_age_seconds`
(in-flight calls get a grace period), so the gateway reconnects and no
connection outlives the certificate it was made with: a CVM that can no
longer attest drops out of the gateway's admission.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio

from privproc import events
from privproc.attestation.measure import parse_image_digest
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.attestation.sources import ConfigfsTsmSource, EvidenceSource
from privproc.attestation.workload import key_binding, spki
from privproc.errors import BadRequestError, ConfigError, PrivprocError
from privproc.predictor import stateless, telemetry
from privproc.predictor.cadence import DEFAULT_KEEPALIVE_SECONDS, DEFAULT_TICK_SECONDS
from privproc.predictor.loading import ModelSpec, load_processor, measure_predictor
from privproc.predictor.scheduler import DEFAULT_MAX_QUEUED
from privproc.predictor.sessions import Processor, SessionEngine
from privproc.predictor.staple import LedgerStapleSource, ReleaseStapler, StapledSource, measurement_of
from privproc.runtime import logsink, mtls, settings
from privproc.runtime.rpc import GrpcServer, channel_options
from privproc.runtime.status import error_from_rpc, report
from privproc.runtime.tasks import supervise
from privproc.v1 import predictor_pb2, predictor_pb2_grpc, verifier_pb2, verifier_pb2_grpc

EVIDENCE_REQUEST_DOMAIN = b"privproc-evidence-request/v1\n"
#: StreamSession stops the model this long before the call's deadline.
DEADLINE_MARGIN_SECONDS = 0.05


@settings.declared("predictor")
class PredictorConfig:
    """``privproc serve predictor``: the predictor in a (simulated) CVM."""

    verifier_target: str = settings.option(flag="--verifier", help="gRPC address of the verifier")
    verifier_ca_file: Path = settings.option(help="the verifier's CA (PEM)")
    host: str = settings.host_option()
    grpc_port: int = settings.grpc_port_option()
    #: gRPC connections are closed after this long (the gateway reconnects, meeting the renewed
    #: certificate); with the grace below it must stay under half a certificate's lifetime
    #: (4 of the default 15 minutes).
    max_connection_age_seconds: float = settings.option(
        default=120.0, help="gRPC connections are closed after this long"
    )
    #: How long calls in flight (a generation) may finish on a connection being closed.
    connection_age_grace_seconds: float = settings.option(
        default=120.0, help="how long calls in flight may finish on a connection being closed"
    )
    #: Wait before retrying a failed certificate renewal (shortened near expiry).
    renewal_retry_seconds: float = settings.option(
        default=10.0, help="wait before retrying a failed certificate renewal"
    )
    #: How often aggregate counters leave the CVM (nothing per request does: predictor/telemetry.py).
    telemetry_interval_seconds: float = settings.option(
        default=telemetry.DEFAULT_INTERVAL_SECONDS, help="how often aggregate counters leave the CVM"
    )
    #: Where the release staple comes from: the ledger's gRPC target and the CDN's proofs URL
    #: (``…/proofs/``). Without them the CVM staples nothing and clients refuse it.
    ledger_target: str | None = settings.option(
        default=None, flag="--ledger", help="gRPC address of the ledger (its release staple)"
    )
    release_proofs_url: str | None = settings.option(
        default=None, help="the key CDN's proofs URL (…/proofs/), for its release staple"
    )
    #: How often the log's newest checkpoint is read (one small call; proofs only when it grew).
    #: A client that saw a newer checkpoint than the CVM staples refuses it until the CVM catches up.
    staple_refresh_seconds: float = settings.option(
        default=2.0, help="how often the log's newest checkpoint is read"
    )
    #: The container image it runs from (measured; "" outside one, as under ``privproc up``).
    image_digest: str = settings.option(
        default="",
        parse=parse_image_digest,
        metavar="sha256:HEX",
        help="the digest of the container image it runs from (measured)",
    )
    #: What ``privproc serve predictor`` loads and launches (:func:`build`; unused when embedded).
    model: ModelSpec = settings.group(help="the models it serves (measured)", default_factory=ModelSpec)
    state_dir: Path | None = settings.option(
        default=None, help="its directory (required by serve; a GGUF model's conversion goes in models/)"
    )
    model_cache: Path | None = settings.option(
        default=None, help="where a GGUF model's conversion is kept (default STATE_DIR/models)"
    )
    simulator_dir: Path | None = settings.option(
        default=None,
        help="the simulated TEE's development root (development); unset, evidence comes from "
        "the guest's configfs-tsm",
    )
    #: Streamed answers: at most one text frame per tick (text coalesced), a padding frame after
    #: this long without one (predictor/cadence.py), so frame timing does not spell out tokens
    #: and no hop's idle timeout trips on a live stream.
    stream_tick_seconds: float = settings.option(
        default=DEFAULT_TICK_SECONDS, help="streamed answers: at most one text frame per this many seconds"
    )
    stream_keepalive_seconds: float = settings.option(
        default=DEFAULT_KEEPALIVE_SECONDS,
        help="streamed answers: a padding frame after this many seconds without a frame",
    )
    #: Requests waiting for the one generation worker (predictor/scheduler.py); when full, new
    #: sessions are refused early (the gateway tries another predictor).
    max_queued_generations: int = settings.option(
        default=DEFAULT_MAX_QUEUED,
        help="requests that may wait for the model; beyond, new sessions are refused",
    )
    #: The Unix socket of its log sidecar. Set, it is the process's only log path: ``privproc
    #: serve`` routes every event there and closes stderr before building the predictor
    #: (:func:`privproc.runtime.logsink.route_process_to_sidecar`); unset, events go to stderr.
    log_socket: Path | None = settings.option(
        default=None, help="Unix socket of its log sidecar: then its only log path (stderr closed)"
    )


class PredictorServicer(predictor_pb2_grpc.PredictorServicer):
    def __init__(self, engine: SessionEngine, source: EvidenceSource) -> None:
        self._engine = engine
        self._source = source

    async def OpenSession(
        self, request: predictor_pb2.OpenSessionRequest, context: aio.ServicerContext[Any, Any]
    ) -> predictor_pb2.SessionRecords:
        try:
            session_id, records, closed = await self._engine.open(bytes(request.tls_records))
        except PrivprocError:
            raise  # typed: its reason is the status the gateway gets anyway (request.failed)
        except Exception as err:
            await _abort_unlogged(context, err)
        return predictor_pb2.SessionRecords(session_id=session_id, tls_records=records, closed=closed)

    async def ContinueSession(
        self, request: predictor_pb2.ContinueSessionRequest, context: aio.ServicerContext[Any, Any]
    ) -> predictor_pb2.SessionRecords:
        try:
            records, closed = await self._engine.resume(bytes(request.session_id), bytes(request.tls_records))
        except PrivprocError:
            raise
        except Exception as err:
            await _abort_unlogged(context, err)
        return predictor_pb2.SessionRecords(session_id=request.session_id, tls_records=records, closed=closed)

    async def StreamSession(
        self, request: predictor_pb2.ContinueSessionRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[predictor_pb2.SessionRecords]:
        """As ContinueSession, the answer streamed; the call's deadline is the model's."""
        remaining = context.time_remaining()
        # A little before gRPC's own: the model is stopped for the deadline (and says so) rather
        # than the call cancelled under it, and the error still reaches the caller in time.
        deadline = None if remaining is None else time.monotonic() + remaining - DEADLINE_MARGIN_SECONDS
        session_id = bytes(request.session_id)
        stream = self._engine.resume_stream(session_id, bytes(request.tls_records), deadline=deadline)
        try:
            async for records, closed in stream:
                yield predictor_pb2.SessionRecords(session_id=session_id, tls_records=records, closed=closed)
        except PrivprocError:
            raise  # typed, as for the unary calls (DeadlineExceededError when the deadline passed)
        except Exception as err:
            await _abort_unlogged(context, err)
        finally:
            await stream.aclose()  # a cancelled call (the gateway went away) stops the model

    async def GetEvidence(
        self, request: predictor_pb2.GetEvidenceRequest, context: aio.ServicerContext[Any, Any]
    ) -> predictor_pb2.GetEvidenceResponse:
        if not 16 <= len(request.nonce) <= 64:
            raise BadRequestError("nonce must be 16 to 64 bytes")
        report_data = hashlib.sha512(EVIDENCE_REQUEST_DOMAIN + bytes(request.nonce)).digest()
        return predictor_pb2.GetEvidenceResponse(evidence=[self._source.evidence(report_data).to_proto()])


async def _abort_unlogged(context: aio.ServicerContext[Any, Any], error: Exception) -> NoReturn:
    """Answer an unexpected failure of a session call as the gRPC front would, without its event.

    The front's ``request.internal_error`` names the exception's type, and which exception a
    request's processing raised can depend on its content: nothing per request that does
    leaves the CVM. The session engine counted the failure (``predictor.session_totals``).
    """
    failure = report(error)
    await context.abort(failure.grpc_code, failure.message)


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
            raise error_from_rpc(err) from None
    certificate = x509.load_der_x509_certificate(bytes(reply.certificate_chain[0]))
    return mtls.Identity.of(certificate, key)


class PredictorService:
    name = "predictor"

    def __init__(self, config: PredictorConfig, source: EvidenceSource, processor: Processor) -> None:
        self.config = config
        self.source = source
        # The release staple rides on every RA-TLS certificate (see predictor/staple.py).
        self.staple_source: LedgerStapleSource | None = None
        self.stapler: ReleaseStapler | None = None
        session_source: EvidenceSource = source
        if config.ledger_target and config.release_proofs_url:
            self.staple_source = LedgerStapleSource(config.ledger_target, config.release_proofs_url)
            self.stapler = ReleaseStapler(measurement_of(source), self.staple_source)
            session_source = StapledSource(source, self.stapler)
        self._stapling: asyncio.Task[None] | None = None
        self.engine = SessionEngine(
            session_source,
            processor,
            stream_tick_seconds=config.stream_tick_seconds,
            stream_keepalive_seconds=config.stream_keepalive_seconds,
        )
        self.identity: mtls.RenewableServerIdentity | None = None
        self._renewal: asyncio.Task[None] | None = None
        self.telemetry = telemetry.DEFAULT
        self._reporting: asyncio.Task[None] | None = None
        self.grpc = GrpcServer(
            "predictor",
            options=[
                ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
                ("grpc.max_connection_age_grace_ms", int(config.connection_age_grace_seconds * 1000)),
            ],
        )
        self.grpc.add(
            predictor_pb2_grpc.add_PredictorServicer_to_server,
            PredictorServicer(self.engine, source),
            "privproc.v1.Predictor",
        )

    async def start(self) -> dict[str, object]:
        identity = await obtain_workload_identity(self.config, self.source)
        renewable = mtls.RenewableServerIdentity(identity, self.config.verifier_ca_file.read_bytes())
        self.identity = renewable
        port = await self.grpc.start(self.config.host, self.config.grpc_port, renewable.credentials())
        self._renewal = supervise("predictor.renewal", lambda: self._renew_forever(renewable))
        self._reporting = supervise("predictor.telemetry", self._report_forever)
        if self.stapler is not None:
            await self.refresh_staple()  # a first staple before serving, if the log answers
            self._stapling = supervise("predictor.staple", self._staple_forever)
        events.emit(events.ServiceStarted(service="predictor", transport="grpc", port=port))
        return {"grpc": f"{self.config.host}:{port}"}

    def report(self) -> None:
        """Emit the aggregates due now, and the log sink's totals when events go to a sidecar."""
        self.telemetry.emit()
        logsink.emit_totals()

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry_interval_seconds)
            self.report()

    async def _renew_forever(self, identity: mtls.RenewableServerIdentity) -> None:
        """Attest again half-way to each certificate's expiry; retry while the current one lasts."""
        delay = mtls.renewal_delay(identity.certificate, _utcnow())
        while True:
            await asyncio.sleep(delay)
            try:
                renewed = await obtain_workload_identity(self.config, self.source)
                identity.replace(renewed)
            except (PrivprocError, mtls.IdentityError, OSError) as err:
                left = (identity.certificate.not_valid_after_utc - _utcnow()).total_seconds()
                reason = err.reason if isinstance(err, PrivprocError) else "identity"
                events.emit(
                    events.PredictorIdentityRenewalFailed(reason=reason, seconds_left=max(0, int(left)))
                )
                delay = max(1.0, min(self.config.renewal_retry_seconds, left / 4))
                continue
            certificate = identity.certificate
            lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
            events.emit(events.PredictorIdentityRenewed(valid_seconds=int(lifetime.total_seconds())))
            delay = mtls.renewal_delay(certificate, _utcnow())

    async def refresh_staple(self) -> bool:
        """Move the staple to the log's newest checkpoint; a failure is logged (the old one serves)."""
        assert self.stapler is not None
        try:
            if await self.stapler.refresh():
                checkpoint = self.stapler.checkpoint
                events.emit(events.PredictorStapleRefreshed(log_size=checkpoint.size if checkpoint else 0))
        except PrivprocError as err:
            stapled = self.stapler.current() is not None
            events.emit(events.PredictorStapleFailed(reason=err.reason, stapled=stapled))
            return False
        return True

    async def _staple_forever(self) -> None:
        delay = self.config.staple_refresh_seconds
        while True:
            await asyncio.sleep(delay)
            # Failing: back off (to a minute) so an unreachable log is not hammered or logged in a loop.
            ok = await self.refresh_staple()
            delay = self.config.staple_refresh_seconds if ok else min(max(delay * 2, 1.0), 60.0)

    async def stop(self) -> None:
        if self._reporting is not None:
            self._reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporting
            self.report()  # what is due: session totals, task totals only above the threshold
        if self._stapling is not None:
            self._stapling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stapling
        if self.staple_source is not None:
            await self.staple_source.close()
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        await self.grpc.stop(grace=5.0)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def evidence_source(config: PredictorConfig, measurement: bytes, host_data: bytes) -> EvidenceSource:
    """The simulated TEE when ``--simulator-dir`` names its development root (development only:
    clients trust that root only because their stack names it), else the guest's configfs-tsm,
    where the platform itself reports the launch measurement and HOST_DATA."""
    if config.simulator_dir is not None:
        root = DevelopmentRoot.load_or_create(config.simulator_dir)
        return SimulatedSnp(root, measurement=measurement, host_data=host_data)
    return ConfigfsTsmSource()


def build(config: PredictorConfig) -> PredictorService:
    """The simulated CVM ``privproc serve predictor`` runs: load and measure the models, then harden.

    The only writes a predictor makes (a GGUF model's conversion) happen here, before it serves.
    """
    if config.state_dir is None:
        raise ConfigError("the predictor needs --state-dir")
    if config.simulator_dir is None and not ConfigfsTsmSource.available():
        raise ConfigError("no evidence source: no configfs-tsm in this guest, and no --simulator-dir")
    digest = config.model.digest()
    cache = config.model_cache or config.state_dir / "models"
    processor = load_processor(
        config.model, cache, measured_digest=digest, max_queued=config.max_queued_generations
    )
    manifest = measure_predictor(config.model, config.image_digest, model_digest=digest)
    source = evidence_source(config, manifest.measurement, manifest.host_data)
    service = PredictorService(config, source, processor)
    stateless.harden_process()
    stateless.forbid_disk_writes()
    events.emit(
        events.PredictorHardened(
            write_guard=stateless.write_guard_installed(), core_dumps_off=stateless.process_is_hardened()
        )
    )
    return service
