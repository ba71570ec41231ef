"""SEV-SNP signatures: the report's ECDSA signature and the VCEK → ASK → ARK chain.

:func:`verify_report_signature` checks a report's ECDSA P-384 / SHA-384
signature over bytes 0x000-0x29F under the key of its VCEK (or VLEK).

:func:`verify_chain` checks the key distribution service's chain
(publication 57230): VCEK (or VLEK) → ASK (or ASVK) → ARK, each link
RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt. It trusts an ARK
only by a SHA-256 fingerprint pinned in :data:`ARK_FINGERPRINTS` (or passed
by the caller, which is how a development root gets trusted: never by
default), then checks every signature, name link, validity window and key
usage, and returns what the VCEK says (:class:`~privproc.attestation.kds.VcekInfo`).
Whether that is acceptable is :mod:`privproc.attestation.appraisal`'s call.

Everything here is pure except :func:`sign_report` (randomised ECDSA, for
simulators and tests) and :func:`verify_chain`'s default clock, which a
caller can inject. Error messages are fixed strings.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from privproc.attestation.abi import AttestationReport, Product
from privproc.attestation.kds import (
    OID_BASIC_CONSTRAINTS,
    OID_KEY_USAGE,
    Certificate,
    VcekInfo,
    basic_constraints,
    key_usage,
    parse_certificate,
    vcek_info,
)
from privproc.errors import CryptoError, WireError
from privproc.wire import der
from privproc.wire.der import Reader

__all__ = [
    "ARK_FINGERPRINTS",
    "ArkInvalidError",
    "ArkUntrustedError",
    "AskInvalidError",
    "ChainError",
    "ReportSignatureError",
    "VcekInvalidError",
    "sign_report",
    "verify_chain",
    "verify_report_signature",
]


class ReportSignatureError(CryptoError):
    """The report's signature does not verify under the given key."""

    reason = "sevsnp_report_signature"


class ChainError(CryptoError):
    """The VCEK → ASK → ARK chain does not verify; subclasses name the failing link."""

    reason = "sevsnp_chain"


class ArkUntrustedError(ChainError):
    """The ARK is not the root pinned for the product."""

    reason = "sevsnp_ark_untrusted"


class ArkInvalidError(ChainError):
    """The pinned ARK is not a valid self-signed root now."""

    reason = "sevsnp_ark_invalid"


class AskInvalidError(ChainError):
    """The ASK (or ASVK) is not a valid CA certificate signed by the ARK."""

    reason = "sevsnp_ask_invalid"


class VcekInvalidError(ChainError):
    """The VCEK (or VLEK) is not a valid endorsement-key certificate signed by the ASK."""

    reason = "sevsnp_vcek_invalid"


# --- the report's signature --------------------------------------------------------------------


def verify_report_signature(report: AttestationReport, public_key: ec.EllipticCurvePublicKey) -> None:
    """Check the report's ECDSA P-384 / SHA-384 signature over bytes 0x000-0x29F under ``public_key``."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP384R1
    ):
        raise ReportSignatureError("report signing key is not an ECDSA P-384 key")
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        public_key.verify(signature, report.signed_part(), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise ReportSignatureError("attestation report signature does not verify") from None


def sign_report(unsigned: AttestationReport, private_key: ec.EllipticCurvePrivateKey) -> AttestationReport:
    """``unsigned`` signed with ``private_key`` (ECDSA P-384 / SHA-384), for simulators and tests."""
    if not isinstance(private_key.curve, ec.SECP384R1):
        raise ReportSignatureError("report signing key is not an ECDSA P-384 key")
    r, s = decode_dss_signature(private_key.sign(unsigned.signed_part(), ec.ECDSA(hashes.SHA384())))
    return unsigned.with_signature(r, s)


# --- the chain -----------------------------------------------------------------------------

#: SHA-256 of the DER of AMD's ARK per product, pinned. Taken from AMD KDS
#: https://kdsintf.amd.com/vcek/v1/<Product>/cert_chain (the second certificate), as recorded in
#: go-sev-guest's verify/trust/ask_ark_{milan,genoa,turin_vcek}.pem at commit
#: af1c107a648f47253da23a9de7a7c82ec073cfdb; the VLEK chains (/vlek/v1/<Product>/cert_chain) carry
#: the same ARK. Read-only: a development root is trusted only by passing it to verify_chain.
ARK_FINGERPRINTS: Mapping[Product, bytes] = MappingProxyType(
    {
        Product.MILAN: bytes.fromhex("69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"),
        Product.GENOA: bytes.fromhex("4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"),
        Product.TURIN: bytes.fromhex("1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"),
    }
)

_KEY_USAGE_DIGITAL_SIGNATURE = 0
_KEY_USAGE_KEY_CERT_SIGN = 5
#: Critical extensions this module understands; any other critical extension fails a certificate.
_UNDERSTOOD_CRITICAL = frozenset({OID_BASIC_CONSTRAINTS, OID_KEY_USAGE})

_OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_SHA384 = "2.16.840.1.101.3.4.2.2"
_PSS_SALT_LENGTH = 48
_AMD_KEY_BITS = 4096  # ARK and ASK are RSA-4096 (KDS specification)
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=_PSS_SALT_LENGTH)


def _read_sha384(reader: Reader) -> bool:
    """Consume an AlgorithmIdentifier; whether it is SHA-384 (parameters absent or NULL)."""
    algorithm = reader.sequence()
    if algorithm.oid() != _OID_SHA384:
        return False
    if not algorithm.at_end():
        algorithm.null()
    return algorithm.at_end()


def _is_amd_pss(signature_algorithm: bytes) -> bool:
    """Whether the AlgorithmIdentifier is RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48, trailer 1.

    hashAlgorithm, maskGenAlgorithm and saltLength must all be present: their
    defaults (SHA-1, MGF1-SHA-1, 20) are not AMD's. trailerField may be absent
    or 1 (its default; AMD's certificates spell it out, ``cryptography`` omits it).
    """
    algorithm = der.whole(signature_algorithm, Reader.sequence)
    if algorithm.oid() != _OID_RSASSA_PSS:
        return False
    params = algorithm.sequence()
    algorithm.finish()
    digest = params.explicit(0)
    if digest is None or not _read_sha384(digest) or not digest.at_end():
        return False
    mask = params.explicit(1)
    if mask is None:
        return False
    mgf = mask.sequence()
    if not mask.at_end() or mgf.oid() != _OID_MGF1 or not _read_sha384(mgf) or not mgf.at_end():
        return False
    salt = params.explicit(2)
    if salt is None or salt.integer() != _PSS_SALT_LENGTH or not salt.at_end():
        return False
    trailer = params.explicit(3)
    if trailer is not None and (trailer.integer() != 1 or not trailer.at_end()):
        return False
    return params.at_end()


def _load(data: bytes, error: type[ChainError], role: str) -> Certificate:
    try:
        cert = parse_certificate(data)
    except WireError as exc:
        raise error(f"{role} certificate does not parse") from exc
    for oid, extension in cert.extensions.items():
        if extension.critical and oid not in _UNDERSTOOD_CRITICAL:
            raise error(f"{role} certificate has an unknown critical extension")
    return cert


def _check_signed(
    cert: Certificate, issuer: Certificate, issuer_key: rsa.RSAPublicKey, error: type[ChainError], role: str
) -> None:
    if cert.issuer != issuer.subject:
        raise error(f"{role} certificate issuer does not name its signer")
    try:
        amd_pss = _is_amd_pss(cert.signature_algorithm)
    except WireError:
        amd_pss = False
    if not amd_pss:
        raise error(f"{role} certificate is not signed with RSASSA-PSS SHA-384 salt 48")
    try:
        issuer_key.verify(cert.signature, cert.tbs, _PSS, hashes.SHA384())
    except (InvalidSignature, ValueError):
        raise error(f"{role} certificate signature does not verify") from None


def _check_ca(
    cert: Certificate, now: datetime, error: type[ChainError], role: str
) -> tuple[rsa.RSAPublicKey, int | None]:
    """The CA's RSA-4096 key and path length constraint, once its extensions and validity pass."""
    try:
        key = cert.public_key()
        constraints = basic_constraints(cert)
        usage = key_usage(cert)
    except WireError as exc:
        raise error(f"{role} certificate extensions do not parse") from exc
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != _AMD_KEY_BITS:
        raise error(f"{role} key is not RSA-4096")
    if constraints is None or not constraints[0]:
        raise error(f"{role} certificate is not a CA certificate")
    if usage is None or _KEY_USAGE_KEY_CERT_SIGN not in usage:
        raise error(f"{role} key usage does not allow signing certificates")
    if not cert.valid_at(now):
        raise error(f"{role} certificate is not valid at this time")
    return key, constraints[1]


def verify_chain(
    vcek_der: bytes,
    ask_der: bytes,
    ark_der: bytes,
    product: Product,
    *,
    ark_fingerprints: Mapping[Product, bytes] = ARK_FINGERPRINTS,
    now: datetime | None = None,
) -> VcekInfo:
    """Verify VCEK (or VLEK) → ASK (or ASVK) → ARK for ``product`` and return what the VCEK says.

    The ARK must hash (SHA-256 of its DER) to ``ark_fingerprints[product]``;
    pass a mapping with a development root's fingerprint to trust that root
    instead. Each certificate must be valid at ``now`` (default: the current
    time; it must be timezone-aware), and each signature RSASSA-PSS with
    SHA-384, MGF1-SHA-384 and a 48-byte salt. Failures raise the
    :class:`ChainError` subclass of the link that failed.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    pinned = ark_fingerprints.get(product)
    if pinned is None or not hmac.compare_digest(hashlib.sha256(ark_der).digest(), pinned):
        raise ArkUntrustedError("ARK is not the pinned root of this product")

    ark = _load(ark_der, ArkInvalidError, "ARK")
    ark_key, ark_path_len = _check_ca(ark, now, ArkInvalidError, "ARK")
    _check_signed(ark, ark, ark_key, ArkInvalidError, "ARK")
    if ark_path_len is not None and ark_path_len < 1:
        raise ArkInvalidError("ARK path length does not allow an intermediate CA")

    ask = _load(ask_der, AskInvalidError, "ASK")
    ask_key, _ = _check_ca(ask, now, AskInvalidError, "ASK")
    _check_signed(ask, ark, ark_key, AskInvalidError, "ASK")

    vcek = _load(vcek_der, VcekInvalidError, "VCEK")
    _check_signed(vcek, ask, ask_key, VcekInvalidError, "VCEK")
    try:
        constraints = basic_constraints(vcek)
        usage = key_usage(vcek)
        info = vcek_info(vcek, product)
    except WireError as exc:  # the cause says which extension, for logs
        raise VcekInvalidError("VCEK certificate extensions are not valid") from exc
    if constraints is not None and constraints[0]:
        raise VcekInvalidError("VCEK certificate is a CA certificate")
    if usage is not None and _KEY_USAGE_DIGITAL_SIGNATURE not in usage:
        raise VcekInvalidError("VCEK key usage does not allow signatures")
    if not vcek.valid_at(now):
        raise VcekInvalidError("VCEK certificate is not valid at this time")
    return info
