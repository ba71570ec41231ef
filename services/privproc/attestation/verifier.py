"""The verifier process: gRPC ``privproc.v1.Verifier``.

``Appraise`` appraises evidence against the operator's policy and the
releases logged in the ledger; ``IssueWorkloadCertificate`` issues a
short-lived certificate for a CSR's key when the evidence appraises AND its
REPORT_DATA binds that key. The set of admitted measurements is whatever
``cvm-release`` entries the ledger holds, read from its tiles and checked
like a monitor does (signature, witnesses, consistency, tiles hash to the
root), and admitted by the same release rules as a client's
(:class:`privproc.attestation.releases.ReleaseRegistry`: signed by a pinned
release key, minimum TCB, HOST_DATA, not expired, revoked or superseded).
Clients never rely on this service: they appraise for themselves with the
same library.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio
from opentelemetry import metrics

from privproc import events
from privproc.attestation.appraisal import Appraisal, Reason, SnpPolicy, appraise
from privproc.attestation.evidence import Evidence
from privproc.attestation.releases import ReleaseRefusedError, ReleaseRegistry
from privproc.attestation.workload import VerifierCA, key_binding, spki
from privproc.errors import BadRequestError, PermissionDeniedError, PrivprocError, WireError
from privproc.ledger.checkpoints import CheckpointStore, grpc_consistency_source
from privproc.ledger.follower import LogFollower, http_fetcher
from privproc.runtime import settings
from privproc.runtime.rpc import GrpcServer
from privproc.runtime.tasks import supervise
from privproc.runtime.telemetry import TelemetryOptions
from privproc.v1 import verifier_pb2, verifier_pb2_grpc
from privproc.wire import note
from privproc.wire.entries import parse_entry
from privproc.wire.tlogclient import LogPolicy, TransparencyVerifier

#: Evidence appraised, by verdict.
_APPRAISED = metrics.get_meter("privproc.verifier").create_counter(
    "privproc.verifier.appraisals", unit="{appraisal}"
)


@settings.declared("verifier")
class VerifierConfig:
    """``privproc serve verifier``: the operator's attestation verifier."""

    state_dir: Path = settings.option(help="directory of its checkpoints (and CA, without --ca-dir)")
    #: The ledger to read releases from, and how to trust it.
    ledger_grpc: str = settings.option(flag="--ledger", help="gRPC address of the ledger")
    ledger_tiles_url: str = settings.option(help="the ledger's tiles URL")
    log_vkey: str = settings.option(help="the ledger's verifier key")
    #: Its CA given by the operator (``ca.pem``, ``ca.key``; a read-only mount works): a cluster's
    #: gateway-identity issuer holds the same. Without it, ``STATE_DIR/ca``, made on first use.
    ca_dir: Path | None = settings.option(
        default=None, help="directory of its CA, ca.pem and ca.key (default: STATE_DIR/ca, made if missing)"
    )
    witness_vkeys: tuple[str, ...] = settings.option(
        default=(), flag="--witness-vkey", metavar="VKEY", help="a witness's verifier key"
    )
    min_cosignatures: int = settings.option(default=1, help="witness cosignatures required (quorum)")
    #: A simulator's development ARK fingerprint to trust (local stacks only).
    development_root: bytes | None = settings.option(
        default=None,
        parse=bytes.fromhex,
        format=bytes.hex,
        metavar="HEX",
        help="trust this simulator ARK fingerprint (hex; local stacks only)",
    )
    allow_debug: bool = settings.option(default=False, help="admit debug-enabled guests")
    host: str = settings.host_option()
    grpc_port: int = settings.grpc_port_option()
    refresh_seconds: float = settings.option(default=2.0, help="how often the ledger is read")
    certificate_minutes: float = settings.option(default=15.0, help="workload certificate lifetime")
    #: Measurements the operator admits for routing without a log entry (staging an image).
    #: Admission is the operator's own gate only: clients check the log themselves and
    #: refuse such a CVM before sending it anything (``privproc up --skip-publish`` shows it).
    unlogged_measurements: tuple[bytes, ...] = settings.option(
        default=(),
        flag="--admit-unlogged",
        parse=bytes.fromhex,
        format=bytes.hex,
        metavar="HEX",
        help="admit this measurement for routing, unlogged; clients still refuse it",
    )
    #: Release keys (signed-note verifier keys) whose releases are admitted; none: no logged release is.
    release_keys: tuple[str, ...] = settings.option(
        default=(), flag="--release-key", metavar="VKEY", help="a release key whose releases it admits"
    )
    telemetry: TelemetryOptions = settings.group(
        help="where its metrics and traces go", default_factory=TelemetryOptions
    )

    @property
    def log_policy(self) -> LogPolicy:
        """How the ledger is trusted: its key (naming its origin) and the witness quorum."""
        origin = note.parse_verifier_key(self.log_vkey).name
        return LogPolicy(origin, self.log_vkey, self.witness_vkeys, self.min_cosignatures)


#: The release index the verifier reports for an operator-admitted, unlogged measurement.
UNLOGGED = -1


def appraisal_message(appraisal: Appraisal) -> verifier_pb2.Appraisal:
    message = verifier_pb2.Appraisal(verified=appraisal.verified, reasons=[str(r) for r in appraisal.reasons])
    claims = appraisal.claims
    if claims is not None:
        message.claims.CopyFrom(
            verifier_pb2.Claims(
                measurement=claims.measurement,
                host_data=claims.host_data,
                chip_id=claims.chip_id,
                reported_tcb=claims.reported_tcb,
                debug=claims.debug,
                vmpl=claims.vmpl,
                release_log_index=claims.release_log_index or 0,
            )
        )
    return message


class VerifierServicer(verifier_pb2_grpc.VerifierServicer):
    def __init__(self, service: VerifierService) -> None:
        self._service = service

    async def Appraise(
        self, request: verifier_pb2.AppraiseRequest, context: aio.ServicerContext[Any, Any]
    ) -> verifier_pb2.Appraisal:
        evidence = self._service.single(request.evidence)
        report_data = bytes(request.expected_report_data) or None
        return appraisal_message(await asyncio.to_thread(self._service.appraise, evidence, report_data))

    async def IssueWorkloadCertificate(
        self, request: verifier_pb2.IssueWorkloadCertificateRequest, context: aio.ServicerContext[Any, Any]
    ) -> verifier_pb2.WorkloadCertificate:
        evidence = self._service.single(request.evidence)
        certificate = await asyncio.to_thread(self._service.issue, evidence, bytes(request.csr))
        chain = [
            c.public_bytes(serialization.Encoding.DER) for c in (certificate, self._service.ca.certificate)
        ]
        message = verifier_pb2.WorkloadCertificate(certificate_chain=chain)
        message.not_after.FromDatetime(certificate.not_valid_after_utc.replace(tzinfo=None))
        return message


class VerifierService:
    name = "verifier"

    def __init__(self, config: VerifierConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        #: The clock release expiry is judged by (POSIX seconds).
        self.clock = clock
        self.ca = (
            VerifierCA.load(config.ca_dir)
            if config.ca_dir is not None
            else VerifierCA.load_or_create(config.state_dir / "ca")
        )
        self.releases = ReleaseRegistry(config.release_keys)
        source, self._close_source = grpc_consistency_source(config.ledger_grpc)
        store = CheckpointStore(config.state_dir / "checkpoints.json")
        self.follower = LogFollower(
            TransparencyVerifier(config.log_policy, store, source), http_fetcher(config.ledger_tiles_url)
        )
        self._synced_from = 0
        self.grpc = GrpcServer("verifier")
        self.grpc.add(
            verifier_pb2_grpc.add_VerifierServicer_to_server, VerifierServicer(self), "privproc.v1.Verifier"
        )
        self._task: asyncio.Task[None] | None = None
        self.bound_port = 0

    def policy(self) -> SnpPolicy:
        admitted = dict.fromkeys(self.config.unlogged_measurements, UNLOGGED)
        admitted.update(self.releases.measurements())
        base = SnpPolicy(allow_debug=self.config.allow_debug, measurements=admitted)
        if self.config.development_root is not None:
            base = base.with_development_root(self.config.development_root)
        return base

    @staticmethod
    def single(evidence: Any) -> Evidence:
        if len(evidence) != 1:
            raise BadRequestError("exactly one piece of evidence is appraised")
        return Evidence.from_proto(evidence[0])

    def appraise(self, evidence: Evidence, report_data: bytes | None) -> Appraisal:
        appraisal = self._admitted(appraise(evidence, self.policy(), report_data=report_data))
        events.emit(
            events.VerifierAppraised(verified=appraisal.verified, reasons=min(len(appraisal.reasons), 32))
        )
        _APPRAISED.add(1, {"privproc.verified": appraisal.verified})
        return appraisal

    def issue(self, evidence: Evidence, csr: bytes) -> x509.Certificate:
        try:
            request = x509.load_der_x509_csr(csr)
        except ValueError:
            raise BadRequestError("CSR does not parse") from None
        public_key = request.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise BadRequestError("CSR must be for an EC key")
        appraisal = self.appraise(evidence, key_binding(spki(public_key)))
        if not appraisal.verified or appraisal.claims is None:
            raise PermissionDeniedError("evidence does not appraise: " + ",".join(appraisal.reasons))
        return self.ca.issue_workload(
            csr,
            bound_report_data=appraisal.claims.report_data,
            measurement=appraisal.claims.measurement,
            validity=datetime.timedelta(minutes=self.config.certificate_minutes),
        )

    def _admitted(self, appraisal: Appraisal) -> Appraisal:
        """``appraisal`` with the release rules applied to a logged measurement (as a client does)."""
        claims = appraisal.claims
        if claims is None or claims.release_log_index in (None, UNLOGGED):
            return appraisal
        try:
            release = self.releases.admit_measurement(claims, self.clock())
        except ReleaseRefusedError as err:
            # Each refusal has its Reason of the same name (the base class is never raised).
            reason = Reason(err.reason) if err.reason in set(Reason) else Reason.MEASUREMENT_UNKNOWN
            return Appraisal((*appraisal.reasons, reason), claims)
        return Appraisal(appraisal.reasons, dataclasses.replace(claims, release_log_index=release.index))

    async def sync_releases(self) -> None:
        synced = await self.follower.sync()
        for index, raw in synced.new_entries:
            try:
                entry = parse_entry(raw)
            except WireError:
                events.emit(events.VerifierEntryIgnored(index=index))
                continue
            self.releases.observe(index, entry)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_seconds)
            try:
                await self.sync_releases()
            except PrivprocError as err:
                # Keep the releases known so far; a log that misbehaves adds none.
                events.emit(events.VerifierLedgerSyncFailed(reason=err.reason))

    async def start(self) -> dict[str, object]:
        await self.sync_releases()
        self._task = supervise("verifier.ledger_sync", self._sync_forever)  # logs and restarts
        port = await self.grpc.start(self.config.host, self.config.grpc_port)
        self.bound_port = port
        events.emit(events.ServiceStarted(service="verifier", transport="grpc", port=port))
        return {"grpc": f"{self.config.host}:{port}", "ca_cert": self.ca.pem.decode()}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.grpc.stop(grace=5.0)
        await self._close_source()


def build(config: VerifierConfig) -> VerifierService:
    """The service ``privproc serve verifier`` runs."""
    return VerifierService(config)
