"""AMD Key Distribution Service certificates: VCEK/VLEK extensions, certificate reading, PEM chains — pure.

AMD's key distribution service (KDS interface specification, publication
57230) certifies each chip's report-signing key: a VCEK (derived for one
chip at one TCB) or a VLEK (for a cloud provider), whose AMD extensions
under 1.3.6.1.4.1.3704.1 name the product, the TCB it was derived for and
the chip (hwID) or the provider (csp_id). :func:`parse_vcek` reads them into
a :class:`VcekInfo`; :func:`split_pem_chain` reads the KDS ``cert_chain``
(ASK, then ARK). :mod:`privproc.attestation.verify` checks the signatures.

Certificates are read with the project's strict DER reader
(:mod:`privproc.wire.der`), not with ``cryptography``'s X.509 loader, on
purpose: AMD's KDS issues VCEKs with the serial number 0, which RFC 5280
forbids; ``cryptography`` warns about it today and announces it will refuse
such certificates. Silencing that warning would take
``warnings.catch_warnings``, which changes process-wide state and is not
thread-safe, and a fallback parser used only once ``cryptography`` starts
refusing would be code no test exercises until the day it is needed. So
there is one path: :func:`parse_certificate` takes the certificate apart
(accepting any serial, which nothing here uses), and ``cryptography`` does
what it is good at, loading the public keys and checking the signatures.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from privproc.attestation.abi import Product, TcbVersion
from privproc.errors import WireError
from privproc.wire import der
from privproc.wire.der import DerError, Reader

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = [
    "OID_BASIC_CONSTRAINTS",
    "OID_KEY_USAGE",
    "Certificate",
    "CertificateFormatError",
    "Extension",
    "VcekExtensionError",
    "VcekInfo",
    "basic_constraints",
    "certificate_validity",
    "key_usage",
    "parse_certificate",
    "parse_vcek",
    "split_pem_chain",
    "vcek_info",
]


class CertificateFormatError(WireError):
    """Bytes that are not a well-formed DER certificate (or PEM chain)."""

    reason = "sevsnp_certificate_format"


class VcekExtensionError(WireError):
    """A VCEK or VLEK certificate whose AMD extensions are missing, malformed or inconsistent."""

    reason = "sevsnp_vcek_extensions"


_MALFORMED = "certificate DER is malformed"


@contextmanager
def _certificate_der() -> Iterator[None]:
    """DER errors inside a certificate are certificate format errors (the cause says which)."""
    try:
        yield
    except DerError as exc:
        raise CertificateFormatError(_MALFORMED) from exc


# --- X.509 certificates (RFC 5280 §4.1), as far as a chain check needs them ----------------------


@dataclass(frozen=True)
class Extension:
    """One certificate extension: its criticality and the DER inside its extnValue OCTET STRING."""

    critical: bool
    value: bytes


@dataclass(frozen=True)
class Certificate:
    """The parts of an X.509 v3 certificate a chain check needs; names and SPKI as their DER."""

    tbs: bytes
    signature_algorithm: bytes
    signature: bytes
    serial: int
    issuer: bytes
    subject: bytes
    not_before: datetime
    not_after: datetime
    spki: bytes
    extensions: Mapping[str, Extension]

    def public_key(self) -> PublicKeyTypes:
        """The subject's public key (:class:`CertificateFormatError` if it does not load)."""
        try:
            return serialization.load_der_public_key(self.spki)
        except (ValueError, UnsupportedAlgorithm):
            raise CertificateFormatError("certificate public key does not parse") from None

    def valid_at(self, now: datetime) -> bool:
        """Whether ``now`` is inside the validity window (both ends included)."""
        return self.not_before <= now <= self.not_after


@_certificate_der()
def parse_certificate(data: bytes) -> Certificate:
    """The X.509 v3 certificate ``data`` is, read strictly; checks no signature."""
    cert = der.whole(data, Reader.sequence)
    tbs_bytes = cert.element(der.TAG_SEQUENCE)
    signature_algorithm = cert.element(der.TAG_SEQUENCE)
    signature, unused = cert.bit_string()
    cert.finish()
    if unused:
        raise CertificateFormatError(_MALFORMED)

    tbs = der.whole(tbs_bytes, Reader.sequence)
    version = tbs.explicit(0)
    if version is None or version.integer() != 2:  # v3: the AMD extensions need it
        raise CertificateFormatError("certificate is not X.509 v3")
    version.finish()
    # Any serial number, including AMD's 0 (see the module docstring): nothing here uses it.
    serial = tbs.integer()
    if tbs.element(der.TAG_SEQUENCE) != signature_algorithm:
        raise CertificateFormatError("certificate signature algorithms disagree")
    issuer = tbs.element(der.TAG_SEQUENCE)
    validity = tbs.sequence()
    not_before, not_after = validity.time(), validity.time()
    validity.finish()
    subject = tbs.element(der.TAG_SEQUENCE)
    spki = tbs.element(der.TAG_SEQUENCE)
    for unique_id in (1, 2):  # issuerUniqueID, subjectUniqueID: skipped
        tag = tbs.peek()
        if tag is not None and tag in (der.context(unique_id, constructed=False), der.context(unique_id)):
            tbs.element(tag)
    extensions: dict[str, Extension] = {}
    wrapper = tbs.explicit(3)
    tbs.finish()
    if wrapper is not None:
        sequence = wrapper.sequence()
        wrapper.finish()
        if sequence.at_end():
            raise CertificateFormatError(_MALFORMED)
        while not sequence.at_end():
            entry = sequence.sequence()
            oid = entry.oid()
            critical = entry.boolean() if entry.peek() == der.TAG_BOOLEAN else False
            value = entry.content(der.TAG_OCTET_STRING)
            entry.finish()
            if oid in extensions:
                raise CertificateFormatError("certificate repeats an extension")
            extensions[oid] = Extension(critical, value)
    return Certificate(
        tbs=tbs_bytes,
        signature_algorithm=signature_algorithm,
        signature=signature,
        serial=serial,
        issuer=issuer,
        subject=subject,
        not_before=not_before,
        not_after=not_after,
        spki=spki,
        extensions=MappingProxyType(extensions),
    )


def certificate_validity(data: bytes) -> tuple[datetime, datetime]:
    """A certificate's ``(notBefore, notAfter)``; :class:`CertificateFormatError` if it does not parse."""
    try:
        cert = parse_certificate(data)
    except WireError as exc:
        raise CertificateFormatError("certificate does not parse") from exc
    return cert.not_before, cert.not_after


OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"


@_certificate_der()
def basic_constraints(cert: Certificate) -> tuple[bool, int | None] | None:
    """(cA, pathLenConstraint), or None without the extension."""
    extension = cert.extensions.get(OID_BASIC_CONSTRAINTS)
    if extension is None:
        return None
    body = der.whole(extension.value, Reader.sequence)
    ca = body.boolean() if body.peek() == der.TAG_BOOLEAN else False
    path_len = body.integer() if body.peek() == der.TAG_INTEGER else None
    body.finish()
    if path_len is not None and (path_len < 0 or not ca):
        raise CertificateFormatError(_MALFORMED)
    return ca, path_len


@_certificate_der()
def key_usage(cert: Certificate) -> frozenset[int] | None:
    """The key usage bits set (RFC 5280 §4.2.1.3 numbering), or None without the extension."""
    extension = cert.extensions.get(OID_KEY_USAGE)
    if extension is None:
        return None
    bits, unused = der.whole(extension.value, Reader.bit_string)
    count = 8 * len(bits) - unused
    return frozenset(i for i in range(count) if bits[i // 8] >> (7 - i % 8) & 1)


# --- AMD's endorsement-key certificates -------------------------------------------------------

# VCEK/VLEK extensions (KDS interface specification, publication 57230), under 1.3.6.1.4.1.3704.1.
_AMD = "1.3.6.1.4.1.3704.1."
_OID_STRUCT_VERSION = _AMD + "1"
_OID_PRODUCT_NAME = _AMD + "2"
_OID_BL_SPL = _AMD + "3.1"
_OID_TEE_SPL = _AMD + "3.2"
_OID_SNP_SPL = _AMD + "3.3"
_OID_RESERVED_SPLS = tuple(_AMD + f"3.{i}" for i in range(4, 8))  # spl_4 .. spl_7
_OID_UCODE_SPL = _AMD + "3.8"
_OID_FMC_SPL = _AMD + "3.9"
_OID_HWID = _AMD + "4"
_OID_CSP_ID = _AMD + "5"
_KNOWN_AMD_OIDS = frozenset(
    {
        _OID_STRUCT_VERSION,
        _OID_PRODUCT_NAME,
        _OID_BL_SPL,
        _OID_TEE_SPL,
        _OID_SNP_SPL,
        *_OID_RESERVED_SPLS,
        _OID_UCODE_SPL,
        _OID_FMC_SPL,
        _OID_HWID,
        _OID_CSP_ID,
    }
)
#: hwID sizes: the 64-byte CHIP_ID on Milan and Genoa, 8 bytes on Turin (go-sev-guest kds.TurinHWIDSize).
_HWID_SIZES = {Product.MILAN: 64, Product.GENOA: 64, Product.TURIN: 8}


@dataclass(frozen=True)
class VcekInfo:
    """What an endorsement-key certificate says: product, TCB, chip (VCEK) or CSP (VLEK), key."""

    #: The productName extension: "Milan-B0" for a VCEK (with stepping), "Milan" for a VLEK.
    product: str
    #: The TCB the key was derived for (blSPL, teeSPL, snpSPL, ucodeSPL; fmcSPL on Turin).
    tcb: TcbVersion
    #: The hwID extension: the report's CHIP_ID (64 bytes; 8 on Turin). None for a VLEK.
    chip_id: bytes | None
    kind: Literal["vcek", "vlek"]
    public_key: ec.EllipticCurvePublicKey
    #: The csp_id extension of a VLEK (None for a VCEK).
    csp_id: str | None = None


def _amd_integer(cert: Certificate, oid: str) -> int | None:
    extension = cert.extensions.get(oid)
    if extension is None:
        return None
    value = der.whole(extension.value, Reader.integer)
    if not 0 <= value <= 0xFF:
        raise VcekExtensionError("certificate patch level out of range")
    return value


def _amd_ia5(cert: Certificate, oid: str) -> str | None:
    extension = cert.extensions.get(oid)
    if extension is None:
        return None
    text = der.whole(extension.value, lambda reader: reader.content(der.TAG_IA5_STRING))
    if not text or not all(0x20 <= c < 0x7F for c in text):
        raise VcekExtensionError("certificate text extension is not printable ASCII")
    return text.decode("ascii")


def _amd_hwid(cert: Certificate, size: int) -> bytes | None:
    extension = cert.extensions.get(_OID_HWID)
    if extension is None:
        return None
    value = extension.value
    if len(value) == size:  # the KDS puts the raw bytes in, without an OCTET STRING header
        return value
    inner = der.whole(value, lambda reader: reader.content(der.TAG_OCTET_STRING))
    if len(inner) != size:
        raise VcekExtensionError("certificate hwID has the wrong length")
    return inner


@_certificate_der()
def vcek_info(cert: Certificate, product: Product) -> VcekInfo:
    """What the VCEK or VLEK ``cert`` says for ``product``; :class:`VcekExtensionError` if inconsistent."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise VcekExtensionError("endorsement key is not an ECDSA P-384 key")
    for oid, extension in cert.extensions.items():
        if oid.startswith(_AMD) and oid not in _KNOWN_AMD_OIDS:
            raise VcekExtensionError("certificate has an unknown AMD extension")
        if oid in _KNOWN_AMD_OIDS and extension.critical:
            raise VcekExtensionError("AMD extensions are never critical")
    if _amd_integer(cert, _OID_STRUCT_VERSION) is None:
        raise VcekExtensionError("certificate lacks the AMD structVersion extension")
    name = _amd_ia5(cert, _OID_PRODUCT_NAME)
    if name is None or (name != product.value and not name.startswith(product.value + "-")):
        raise VcekExtensionError("certificate product name does not match the product")
    bootloader = _amd_integer(cert, _OID_BL_SPL)
    tee = _amd_integer(cert, _OID_TEE_SPL)
    snp = _amd_integer(cert, _OID_SNP_SPL)
    microcode = _amd_integer(cert, _OID_UCODE_SPL)
    if bootloader is None or tee is None or snp is None or microcode is None:
        raise VcekExtensionError("certificate lacks an AMD patch level extension")
    # spl_4..spl_7 are reserved TCB bytes: TcbVersion requires them zero, so must the certificate.
    if any(_amd_integer(cert, oid) for oid in _OID_RESERVED_SPLS):
        raise VcekExtensionError("certificate sets a reserved patch level")
    fmc = _amd_integer(cert, _OID_FMC_SPL)
    if (fmc is None) == (product is Product.TURIN):
        raise VcekExtensionError("certificate FMC patch level does not match the product")
    tcb = TcbVersion(bootloader=bootloader, tee=tee, snp=snp, microcode=microcode, fmc=fmc)
    hwid = _amd_hwid(cert, _HWID_SIZES[product])
    csp_id = _amd_ia5(cert, _OID_CSP_ID)
    if (hwid is None) == (csp_id is None):
        raise VcekExtensionError("certificate needs exactly one of hwID (VCEK) and csp_id (VLEK)")
    kind: Literal["vcek", "vlek"] = "vcek" if hwid is not None else "vlek"
    return VcekInfo(product=name, tcb=tcb, chip_id=hwid, kind=kind, public_key=key, csp_id=csp_id)


def parse_vcek(data: bytes, product: Product) -> VcekInfo:
    """Read a VCEK or VLEK certificate's key and AMD extensions; checks no signature (verify_chain does)."""
    return vcek_info(parse_certificate(data), product)


# --- the KDS cert_chain ------------------------------------------------------------------------

_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----\r?\n?", re.DOTALL)


def split_pem_chain(pem: bytes) -> list[bytes]:
    """The DER certificates of a PEM chain, in order (KDS cert_chain: ASK, then ARK).

    Only CERTIFICATE blocks without headers, separated by nothing but
    whitespace, with canonical base64.
    """
    certs: list[bytes] = []
    pos = 0
    for match in _PEM_BLOCK.finditer(pem):
        if pem[pos : match.start()].strip():
            raise CertificateFormatError("PEM chain has text outside its certificates")
        try:
            certs.append(binascii.a2b_base64(b"".join(match.group(1).split()), strict_mode=True))
        except binascii.Error:
            raise CertificateFormatError("PEM certificate is not valid base64") from None
        pos = match.end()
    if pem[pos:].strip():
        raise CertificateFormatError("PEM chain has text outside its certificates")
    if not certs or not all(certs):
        raise CertificateFormatError("PEM chain holds no certificate")
    return certs
