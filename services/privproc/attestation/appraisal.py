"""Appraising SEV-SNP evidence against a policy: a value, not scattered ifs.

Every check runs and every failure is reported as a typed reason, so an
operator (or the CLI) sees all that is wrong at once; evidence is verified
only when there are none. A :class:`ChainCache` lets a long-lived appraiser
(a device client) skip re-verifying an AMD chain it already accepted: the
report's own signature, and every policy check, still run each time.

The TCB is never taken from the report alone: the
minimum is checked against the TCB in the VCEK certificate (which AMD
derived the key for), and a report that claims a higher TCB than its VCEK
was issued for is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from privproc.attestation.abi import AttestationReport, Product, TcbVersion
from privproc.attestation.evidence import Evidence, EvidenceType
from privproc.attestation.kds import VcekInfo, certificate_validity
from privproc.attestation.verify import ARK_FINGERPRINTS, ChainError, verify_chain, verify_report_signature
from privproc.errors import CryptoError, WireError


class Reason(StrEnum):
    MALFORMED = "malformed"
    UNSUPPORTED_TYPE = "unsupported_evidence_type"
    CHAIN = "chain"
    UNTRUSTED_ROOT = "untrusted_root"
    SIGNATURE = "signature"
    CHIP_MISMATCH = "vcek_for_another_chip"
    REPORTED_TCB_ABOVE_CERTIFICATE = "reported_tcb_above_vcek"
    TCB_BELOW_MINIMUM = "tcb_below_minimum"
    DEBUG = "debug_allowed"
    MIGRATION_AGENT = "migration_agent"
    VMPL = "vmpl"
    MEASUREMENT_UNKNOWN = "measurement_not_logged"
    HOST_DATA = "host_data"
    REPORT_DATA = "report_data"
    # Refusals by the logged release (privproc.attestation.releases), same names as its errors' reasons.
    RELEASE_NOT_FOR_MEASUREMENT = "release_not_for_measurement"
    RELEASE_KEY_NOT_PINNED = "release_key_not_pinned"
    RELEASE_TCB_BELOW_MINIMUM = "release_tcb_below_minimum"
    RELEASE_HOST_DATA = "release_host_data"
    RELEASE_EXPIRED = "release_expired"
    RELEASE_REVOKED = "release_revoked"
    RELEASE_SUPERSEDED = "release_superseded"


@dataclass(frozen=True)
class SnpPolicy:
    """What an acceptable SEV-SNP CVM looks like."""

    #: Trusted roots: (product, SHA-256 of the ARK's DER). AMD's real ARKs by default.
    roots: tuple[tuple[Product, bytes], ...] = tuple(ARK_FINGERPRINTS.items())
    allow_debug: bool = False
    allow_migration_agent: bool = False
    max_vmpl: int = 0
    #: Per-component minimum TCB (compared with the VCEK certificate's TCB).
    min_tcb: TcbVersion | None = None
    #: Accepted launch measurements → their ledger index; None: not checked (CLI inspection only).
    measurements: Mapping[bytes, int] | None = None
    #: Expected HOST_DATA (the configuration digest); None: not checked.
    host_data: bytes | None = None

    def with_development_root(self, fingerprint: bytes) -> SnpPolicy:
        """This policy, also trusting a simulator's development ARK (local stacks and tests only)."""
        return dataclasses.replace(self, roots=(*self.roots, (Product.MILAN, fingerprint)))


@dataclass(frozen=True)
class Claims:
    product: str
    measurement: bytes
    host_data: bytes
    chip_id: bytes
    report_data: bytes
    reported_tcb: int
    vcek_tcb: TcbVersion
    debug: bool
    vmpl: int
    release_log_index: int | None


@dataclass(frozen=True)
class Appraisal:
    reasons: tuple[Reason, ...]
    claims: Claims | None

    @property
    def verified(self) -> bool:
        return not self.reasons and self.claims is not None


def tcb_at_least(tcb: TcbVersion, minimum: TcbVersion) -> bool:
    """Whether every component of ``tcb`` is at least ``minimum``'s (an FMC minimum needs an FMC level)."""
    parts = [(tcb.bootloader, minimum.bootloader), (tcb.tee, minimum.tee), (tcb.snp, minimum.snp)]
    parts.append((tcb.microcode, minimum.microcode))
    if minimum.fmc is not None:
        parts.append((tcb.fmc or 0, minimum.fmc))
    return all(have >= need for have, need in parts)


def _find_root(ark: bytes, roots: tuple[tuple[Product, bytes], ...]) -> tuple[Product, bytes] | None:
    digest = hashlib.sha256(ark).digest()
    return next(((p, pin) for p, pin in roots if hmac.compare_digest(pin, digest)), None)


class ChainCache:
    """VCEK → ASK → ARK chains already verified, so appraising the same CVM host again is cheaper.

    An entry is keyed by the exact DER of the three certificates and the
    product and pinned root fingerprint it was verified under, and answers
    only while ``now`` lies inside every certificate's validity window
    (outside it the chain is verified again, and refused). Only accepted
    chains are kept — a refusal is never remembered — at most
    ``max_entries`` of them, the least recently used dropped first.
    Safe to share between threads.
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError("a chain cache holds at least one chain")
        self._max = max_entries
        self._entries: OrderedDict[bytes, tuple[VcekInfo, datetime, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(chain: tuple[bytes, ...], product: Product, pin: bytes) -> bytes:
        digest = hashlib.sha256(product.value.encode() + b"\0" + pin)
        for der in chain:  # length-prefixed: no two chains share an encoding
            digest.update(struct.pack(">I", len(der)) + der)
        return digest.digest()

    def verify(
        self,
        chain: tuple[bytes, bytes, bytes],
        root: tuple[Product, bytes],
        now: datetime | None,
    ) -> VcekInfo:
        """:func:`verify_chain` of ``(vcek, ask, ark)`` DER under the single ``root`` ``(product, pin)``.

        Answered from the cache when it can.
        """
        moment = now if now is not None else datetime.now(UTC)
        if moment.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        vcek_der, ask_der, ark_der = chain
        product, pin = root
        key = self._key(chain, product, pin)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached[1] <= moment <= cached[2]:
                self._entries.move_to_end(key)
                return cached[0]
        info = verify_chain(vcek_der, ask_der, ark_der, product, ark_fingerprints={product: pin}, now=moment)
        windows = [certificate_validity(der) for der in (vcek_der, ask_der, ark_der)]
        entry = (info, max(start for start, _ in windows), min(end for _, end in windows))
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return info


def appraise(
    evidence: Evidence,
    policy: SnpPolicy,
    *,
    report_data: bytes | None,
    now: datetime | None = None,
    chains: ChainCache | None = None,
) -> Appraisal:
    """Appraise ``evidence``; ``report_data`` is the binding it must carry (None: not checked).

    ``chains``, if given, remembers the AMD chains this appraiser accepted (see :class:`ChainCache`).
    """
    if evidence.type is not EvidenceType.SEV_SNP:
        return Appraisal((Reason.UNSUPPORTED_TYPE,), None)
    try:
        report = AttestationReport.parse(evidence.report)
    except WireError:
        return Appraisal((Reason.MALFORMED,), None)
    if len(evidence.certificate_chain) != 3:
        return Appraisal((Reason.CHAIN,), None)
    vcek_der, ask_der, ark_der = evidence.certificate_chain
    root = _find_root(ark_der, policy.roots)
    if root is None:
        return Appraisal((Reason.UNTRUSTED_ROOT,), None)
    product, pin = root
    try:
        if chains is not None:
            vcek: VcekInfo = chains.verify((vcek_der, ask_der, ark_der), root, now)
        else:
            vcek = verify_chain(vcek_der, ask_der, ark_der, product, ark_fingerprints={product: pin}, now=now)
    except (ChainError, WireError):
        return Appraisal((Reason.CHAIN,), None)
    try:
        verify_report_signature(report, vcek.public_key)
    except CryptoError:
        return Appraisal((Reason.SIGNATURE,), None)

    reasons: list[Reason] = []
    if vcek.chip_id is not None and not hmac.compare_digest(
        vcek.chip_id, report.chip_id[: len(vcek.chip_id)]
    ):
        reasons.append(Reason.CHIP_MISMATCH)
    reported = TcbVersion.from_u64(report.reported_tcb, product)
    if not tcb_at_least(vcek.tcb, reported):
        reasons.append(Reason.REPORTED_TCB_ABOVE_CERTIFICATE)
    if policy.min_tcb is not None and not tcb_at_least(vcek.tcb, policy.min_tcb):
        reasons.append(Reason.TCB_BELOW_MINIMUM)
    if report.policy.debug and not policy.allow_debug:
        reasons.append(Reason.DEBUG)
    if report.policy.migrate_ma and not policy.allow_migration_agent:
        reasons.append(Reason.MIGRATION_AGENT)
    if report.vmpl > policy.max_vmpl:
        reasons.append(Reason.VMPL)
    release_index = None
    if policy.measurements is not None:
        release_index = policy.measurements.get(report.measurement)
        if release_index is None:
            reasons.append(Reason.MEASUREMENT_UNKNOWN)
    if policy.host_data is not None and not hmac.compare_digest(policy.host_data, report.host_data):
        reasons.append(Reason.HOST_DATA)
    if report_data is not None and not hmac.compare_digest(report_data, report.report_data):
        reasons.append(Reason.REPORT_DATA)
    claims = Claims(
        product=vcek.product,
        measurement=report.measurement,
        host_data=report.host_data,
        chip_id=report.chip_id,
        report_data=report.report_data,
        reported_tcb=report.reported_tcb,
        vcek_tcb=vcek.tcb,
        debug=report.policy.debug,
        vmpl=report.vmpl,
        release_log_index=release_index,
    )
    return Appraisal(tuple(reasons), claims)
