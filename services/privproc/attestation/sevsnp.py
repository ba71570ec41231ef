"""AMD SEV-SNP attestation reports and their VCEK certificate chain — sans-I/O.

The report is the 1184-byte ``ATTESTATION_REPORT`` structure of AMD's SEV
Secure Nested Paging Firmware ABI Specification (publication 56860), report
versions 2 to 5: version 3 added the CPUID family, model and stepping at
0x188-0x18A, version 5 the launch and current mitigation vectors at
0x1F8-0x207. :meth:`AttestationReport.parse` is strict: exactly 1184 bytes, a
version this module knows, ECDSA P-384 with SHA-384, known guest-policy and
signer bits only, and every reserved byte zero, so that
:meth:`AttestationReport.encode` gives back the input byte for byte. The
signature covers bytes 0x000-0x29F; r and s are little-endian, 72 bytes
each, at 0x2A0.

The signing key is certified by AMD's key distribution service (publication
57230): VCEK (or VLEK) → ASK (or ASVK) → ARK, each link RSASSA-PSS with
SHA-384, MGF1-SHA-384 and a 48-byte salt. :func:`verify_chain` trusts an ARK
only by a SHA-256 fingerprint pinned in :data:`ARK_FINGERPRINTS` (or passed
by the caller, which is how a development root gets trusted: never by
default), then checks every signature, name link, validity window and key
usage, and reads the VCEK's AMD extensions (TCB, chip id) into a
:class:`VcekInfo`.

Certificates are read with a small strict DER reader of our own, not with
``cryptography``'s X.509 loader, on purpose: AMD's KDS issues VCEKs with the
serial number 0, which RFC 5280 forbids; ``cryptography`` warns about it
today and announces it will refuse such certificates. Silencing that warning
would take ``warnings.catch_warnings``, which changes process-wide state and
is not thread-safe, and a fallback parser used only once ``cryptography``
starts refusing would be code no test exercises until the day it is needed.
So there is one path: our reader takes the certificate apart (accepting any
serial, which nothing here uses), and ``cryptography`` does what it is good
at, loading the public keys and checking the signatures.

Everything here is pure except :func:`sign_report` (randomised ECDSA) and
:func:`verify_chain`'s default clock, which a caller can inject. Error
messages are fixed strings: reports and certificates come from the peer.
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import hmac
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from privproc.errors import CryptoError, WireError

__all__ = [
    "ARK_FINGERPRINTS",
    "MAX_REPORT_VERSION",
    "MIN_REPORT_VERSION",
    "REPORT_SIZE",
    "SIGNATURE_ALGO_ECDSA_P384_SHA384",
    "SIGNED_SIZE",
    "ArkInvalidError",
    "ArkUntrustedError",
    "AskInvalidError",
    "AttestationReport",
    "CertificateFormatError",
    "ChainError",
    "GuestPolicy",
    "PlatformInfo",
    "Product",
    "ReportFlags",
    "ReportFormatError",
    "ReportLengthError",
    "ReportSignatureError",
    "SigningKey",
    "TcbFormatError",
    "TcbVersion",
    "UnsupportedReportError",
    "VcekExtensionError",
    "VcekInfo",
    "VcekInvalidError",
    "certificate_validity",
    "parse_vcek",
    "sign_report",
    "split_pem_chain",
    "verify_chain",
    "verify_report_signature",
]

REPORT_SIZE = 1184
#: The signature covers bytes 0x000-0x29F.
SIGNED_SIZE = 0x2A0
#: SIGNATURE_ALGO value of ECDSA P-384 with SHA-384, the only one the ABI defines.
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
MIN_REPORT_VERSION = 2
#: Later versions may give meaning to bytes this module requires to be zero: refused until reviewed.
MAX_REPORT_VERSION = 5

_U32 = 1 << 32
_U64 = 1 << 64
_SIG_COMPONENT_SIZE = 72  # r and s, little-endian, zero-padded (ABI "ECDSA P-384 with SHA-384" format)
_SIG_COMPONENT_LIMIT = 1 << (8 * _SIG_COMPONENT_SIZE)

# ATTESTATION_REPORT, little-endian. Pad bytes (x) are reserved: parse() requires them zero by
# re-encoding and comparing. Offsets: version 0x000, guest_svn 0x004, policy 0x008, family_id 0x010,
# image_id 0x020, vmpl 0x030, signature_algo 0x034, current_tcb 0x038, platform_info 0x040,
# flags 0x048, reserved 0x04C, report_data 0x050, measurement 0x090, host_data 0x0C0,
# id_key_digest 0x0E0, author_key_digest 0x110, report_id 0x140, report_id_ma 0x160,
# reported_tcb 0x180, cpuid fam/mod/step 0x188-0x18A, reserved 0x18B, chip_id 0x1A0,
# committed_tcb 0x1E0, current build/minor/major 0x1E8, reserved 0x1EB, committed
# build/minor/major 0x1EC, reserved 0x1EF, launch_tcb 0x1F0, launch_mit_vector 0x1F8,
# current_mit_vector 0x200, reserved 0x208, signature r 0x2A0, s 0x2E8, reserved 0x330-0x49F.
_LAYOUT = struct.Struct("<IIQ16s16sIIQQI4x64s48s32s48s48s32s32sQBBB21x64sQBBBxBBBxQQQ152x72s72s368x")
#: The report's fields in _LAYOUT order.
_FIELDS = (
    "version",
    "guest_svn",
    "policy",
    "family_id",
    "image_id",
    "vmpl",
    "signature_algo",
    "current_tcb",
    "platform_info",
    "flags",
    "report_data",
    "measurement",
    "host_data",
    "id_key_digest",
    "author_key_digest",
    "report_id",
    "report_id_ma",
    "reported_tcb",
    "cpuid_fam_id",
    "cpuid_mod_id",
    "cpuid_step",
    "chip_id",
    "committed_tcb",
    "current_build",
    "current_minor",
    "current_major",
    "committed_build",
    "committed_minor",
    "committed_major",
    "launch_tcb",
    "launch_mit_vector",
    "current_mit_vector",
    "signature_r",
    "signature_s",
)
_CPUID_FIELDS = ("cpuid_fam_id", "cpuid_mod_id", "cpuid_step")  # report version 3 and later
_MIT_FIELDS = ("launch_mit_vector", "current_mit_vector")  # report version 5 and later
assert _LAYOUT.size == REPORT_SIZE

# Guest policy bits (ABI "GUEST_POLICY" table).
_POLICY_SMT = 16
_POLICY_RESERVED_ONE = 17
_POLICY_MIGRATE_MA = 18
_POLICY_DEBUG = 19
_POLICY_SINGLE_SOCKET = 20
_POLICY_CXL_ALLOW = 21
_POLICY_MEM_AES_256_XTS = 22
_POLICY_RAPL_DIS = 23
_POLICY_CIPHERTEXT_HIDING = 24
_POLICY_PAGE_SWAP_DISABLE = 25
_POLICY_KNOWN_BITS = 26  # bits 26-63 are reserved, must be zero


# --- errors ------------------------------------------------------------------


class ReportFormatError(WireError):
    """Bytes that are not a well-formed SEV-SNP attestation report."""

    reason = "sevsnp_report_format"


class ReportLengthError(ReportFormatError):
    """An attestation report that is not exactly 1184 bytes."""

    reason = "sevsnp_report_length"


class UnsupportedReportError(ReportFormatError):
    """A report version or signature algorithm this module does not implement."""

    reason = "sevsnp_report_unsupported"


class TcbFormatError(WireError):
    """A TCB_VERSION value that does not fit its product's layout."""

    reason = "sevsnp_tcb_format"


class CertificateFormatError(WireError):
    """Bytes that are not a well-formed DER certificate (or PEM chain)."""

    reason = "sevsnp_certificate_format"


class VcekExtensionError(WireError):
    """A VCEK or VLEK certificate whose AMD extensions are missing, malformed or inconsistent."""

    reason = "sevsnp_vcek_extensions"


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


# --- products and TCB versions -----------------------------------------------------


class Product(Enum):
    """AMD EPYC product lines, by their KDS names."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


@dataclass(frozen=True)
class TcbVersion:
    """The security patch levels of a TCB_VERSION.

    Milan and Genoa: boot loader byte 0, TEE byte 1, reserved bytes 2-5, SNP
    byte 6, microcode byte 7. Turin: FMC byte 0, boot loader 1, TEE 2, SNP 3,
    reserved 4-6, microcode 7. ``fmc`` is set exactly for Turin. Reserved
    bytes must be zero: a value with any set is refused rather than half read.
    """

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    def __post_init__(self) -> None:
        parts = [self.bootloader, self.tee, self.snp, self.microcode]
        if self.fmc is not None:
            parts.append(self.fmc)
        if not all(0 <= part <= 0xFF for part in parts):
            raise TcbFormatError("TCB component out of range")

    @classmethod
    def from_u64(cls, raw: int, product: Product) -> TcbVersion:
        """The patch levels of the 64-bit TCB_VERSION ``raw`` in ``product``'s layout."""
        if not 0 <= raw < _U64:
            raise TcbFormatError("TCB version out of range")
        b = raw.to_bytes(8, "little")
        if product is Product.TURIN:
            if any(b[4:7]):
                raise TcbFormatError("reserved TCB bytes are not zero")
            return cls(fmc=b[0], bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7])
        if any(b[2:6]):
            raise TcbFormatError("reserved TCB bytes are not zero")
        return cls(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    def to_u64(self, product: Product) -> int:
        """The 64-bit TCB_VERSION of these patch levels in ``product``'s layout."""
        if product is Product.TURIN:
            if self.fmc is None:
                raise TcbFormatError("a Turin TCB version needs an FMC patch level")
            b = bytes([self.fmc, self.bootloader, self.tee, self.snp, 0, 0, 0, self.microcode])
        else:
            if self.fmc is not None:
                raise TcbFormatError("only Turin TCB versions carry an FMC patch level")
            b = bytes([self.bootloader, self.tee, 0, 0, 0, 0, self.snp, self.microcode])
        return int.from_bytes(b, "little")


# --- report fields ------------------------------------------------------------------


@dataclass(frozen=True)
class GuestPolicy:
    """GUEST_POLICY: the restrictions the guest owner set at launch.

    Bit 17 must be one and bits 26-63 zero; anything else is refused, since a
    policy bit this module cannot name is a restriction no one could judge.
    """

    raw: int

    def __post_init__(self) -> None:
        if not 0 <= self.raw < _U64:
            raise ReportFormatError("guest policy out of range")
        if not self._bit(_POLICY_RESERVED_ONE):
            raise ReportFormatError("guest policy bit 17 must be one")
        if self.raw >> _POLICY_KNOWN_BITS:
            raise ReportFormatError("guest policy has reserved bits set")

    def _bit(self, bit: int) -> bool:
        return bool(self.raw >> bit & 1)

    @property
    def abi_minor(self) -> int:
        """Lowest firmware ABI minor version the guest may run on (bits 7:0)."""
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        """Lowest firmware ABI major version the guest may run on (bits 15:8)."""
        return self.raw >> 8 & 0xFF

    @property
    def smt(self) -> bool:
        """Bit 16: the host may use simultaneous multithreading."""
        return self._bit(_POLICY_SMT)

    @property
    def migrate_ma(self) -> bool:
        """Bit 18: a migration agent may be associated with the guest."""
        return self._bit(_POLICY_MIGRATE_MA)

    @property
    def debug(self) -> bool:
        """Bit 19: the host may debug (decrypt) the guest."""
        return self._bit(_POLICY_DEBUG)

    @property
    def single_socket(self) -> bool:
        """Bit 20: the guest may be activated on one socket only."""
        return self._bit(_POLICY_SINGLE_SOCKET)

    @property
    def cxl_allow(self) -> bool:
        """Bit 21: CXL may be populated with devices or memory."""
        return self._bit(_POLICY_CXL_ALLOW)

    @property
    def mem_aes_256_xts(self) -> bool:
        """Bit 22: AES-256-XTS memory encryption is required."""
        return self._bit(_POLICY_MEM_AES_256_XTS)

    @property
    def rapl_dis(self) -> bool:
        """Bit 23: Running Average Power Limit must be disabled."""
        return self._bit(_POLICY_RAPL_DIS)

    @property
    def ciphertext_hiding(self) -> bool:
        """Bit 24: ciphertext hiding must be enabled."""
        return self._bit(_POLICY_CIPHERTEXT_HIDING)

    @property
    def page_swap_disable(self) -> bool:
        """Bit 25: the guest may not use SNP_PAGE_MOVE, SNP_SWAP_OUT and SNP_SWAP_IN."""
        return self._bit(_POLICY_PAGE_SWAP_DISABLE)


@dataclass(frozen=True)
class PlatformInfo:
    """PLATFORM_INFO: how the host was configured when the report was made.

    The bits describe the host, not the guest, and newer firmware keeps
    adding them, so unknown bits are kept, not refused: a policy judges them.
    """

    raw: int

    def __post_init__(self) -> None:
        if not 0 <= self.raw < _U64:
            raise ReportFormatError("platform info out of range")

    def _bit(self, bit: int) -> bool:
        return bool(self.raw >> bit & 1)

    @property
    def smt_enabled(self) -> bool:
        """Bit 0: simultaneous multithreading is enabled."""
        return self._bit(0)

    @property
    def tsme_enabled(self) -> bool:
        """Bit 1: transparent SME is enabled."""
        return self._bit(1)

    @property
    def ecc_enabled(self) -> bool:
        """Bit 2: the platform uses error-correcting memory."""
        return self._bit(2)

    @property
    def rapl_disabled(self) -> bool:
        """Bit 3: Running Average Power Limit is disabled."""
        return self._bit(3)

    @property
    def ciphertext_hiding_enabled(self) -> bool:
        """Bit 4: ciphertext hiding is enabled for DRAM."""
        return self._bit(4)

    @property
    def alias_check_complete(self) -> bool:
        """Bit 5: memory alias detection completed since reset and found no aliases."""
        return self._bit(5)


class SigningKey(IntEnum):
    """SIGNING_KEY (flags bits 4:2): which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True)
class ReportFlags:
    """The 32-bit flags word at 0x048: AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY; bits 31:5 are zero."""

    raw: int

    def __post_init__(self) -> None:
        if not 0 <= self.raw < _U32 or self.raw >> 5:
            raise ReportFormatError("report flags have reserved bits set")
        if self.raw >> 2 & 7 not in {key.value for key in SigningKey}:
            raise ReportFormatError("report signing key value is reserved")

    @property
    def author_key_en(self) -> bool:
        """Bit 0: the ID block was certified by an author key (its digest is in the report)."""
        return bool(self.raw & 1)

    @property
    def mask_chip_key(self) -> bool:
        """Bit 1: the host masked CHIP_ID (it is all zeros)."""
        return bool(self.raw & 2)

    @property
    def signing_key(self) -> SigningKey:
        """Bits 4:2: the key that signed the report (VCEK, VLEK or none)."""
        return SigningKey(self.raw >> 2 & 7)


_BYTE_FIELDS = {
    "family_id": 16,
    "image_id": 16,
    "report_data": 64,
    "measurement": 48,
    "host_data": 32,
    "id_key_digest": 48,
    "author_key_digest": 48,
    "report_id": 32,
    "report_id_ma": 32,
    "chip_id": 64,
}
_U32_FIELDS = ("version", "guest_svn", "vmpl", "signature_algo")
_U64_FIELDS = ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb")
_U8_FIELDS = (
    "current_build",
    "current_minor",
    "current_major",
    "committed_build",
    "committed_minor",
    "committed_major",
)


@dataclass(frozen=True, kw_only=True)
class AttestationReport:
    """One ATTESTATION_REPORT, field by field, with its exact bytes in ``raw``.

    TCB values are kept as the raw 64-bit TCB_VERSION: their layout depends
    on the product, which version-2 reports do not say; decode them with
    :meth:`TcbVersion.from_u64`. Fields a report version does not have
    (CPUID before version 3, mitigation vectors before version 5) are
    ``None``. Constructing a report checks every field and encodes it, so a
    simulator can build one, sign it with :func:`sign_report` and get bytes
    :meth:`parse` accepts.
    """

    version: int
    policy: GuestPolicy
    guest_svn: int = 0
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    vmpl: int = 0
    signature_algo: int = SIGNATURE_ALGO_ECDSA_P384_SHA384
    current_tcb: int = 0
    platform_info: PlatformInfo = PlatformInfo(0)
    flags: ReportFlags = ReportFlags(0)
    report_data: bytes = bytes(64)
    measurement: bytes = bytes(48)
    host_data: bytes = bytes(32)
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    report_id: bytes = bytes(32)
    report_id_ma: bytes = bytes(32)
    reported_tcb: int = 0
    cpuid_fam_id: int | None = None
    cpuid_mod_id: int | None = None
    cpuid_step: int | None = None
    chip_id: bytes = bytes(64)
    committed_tcb: int = 0
    current_build: int = 0
    current_minor: int = 0
    current_major: int = 0
    committed_build: int = 0
    committed_minor: int = 0
    committed_major: int = 0
    launch_tcb: int = 0
    launch_mit_vector: int | None = None
    current_mit_vector: int | None = None
    signature_r: int = 0
    signature_s: int = 0
    #: The report's 1184 bytes (equal to the input of :meth:`parse`).
    raw: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not MIN_REPORT_VERSION <= self.version <= MAX_REPORT_VERSION:
            raise UnsupportedReportError("report version not supported")
        if self.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
            raise UnsupportedReportError("report signature algorithm not supported")
        for name in _U32_FIELDS:
            if not 0 <= getattr(self, name) < _U32:
                raise ReportFormatError("report field out of range")
        for name in _U64_FIELDS:
            if not 0 <= getattr(self, name) < _U64:
                raise ReportFormatError("report field out of range")
        for name in _U8_FIELDS:
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ReportFormatError("report field out of range")
        for name, size in _BYTE_FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise ReportFormatError("report byte field has the wrong length")
        cpuid = (self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step)
        if self.version >= 3:
            if not all(v is not None and 0 <= v <= 0xFF for v in cpuid):
                raise ReportFormatError("report CPUID fields missing or out of range")
        elif cpuid != (None, None, None):
            raise ReportFormatError("report version has no CPUID fields")
        mit = (self.launch_mit_vector, self.current_mit_vector)
        if self.version >= 5:
            if not all(v is not None and 0 <= v < _U64 for v in mit):
                raise ReportFormatError("report mitigation vectors missing or out of range")
        elif mit != (None, None):
            raise ReportFormatError("report version has no mitigation vectors")
        if not (
            0 <= self.signature_r < _SIG_COMPONENT_LIMIT and 0 <= self.signature_s < _SIG_COMPONENT_LIMIT
        ):
            raise ReportFormatError("report signature component out of range")
        object.__setattr__(self, "raw", self._encode())

    def _encode(self) -> bytes:
        values = {name: getattr(self, name) for name in _FIELDS}
        values["policy"] = self.policy.raw
        values["platform_info"] = self.platform_info.raw
        values["flags"] = self.flags.raw
        for name in _CPUID_FIELDS + _MIT_FIELDS:
            values[name] = values[name] or 0  # absent in this version: reserved, zero
        values["signature_r"] = self.signature_r.to_bytes(_SIG_COMPONENT_SIZE, "little")
        values["signature_s"] = self.signature_s.to_bytes(_SIG_COMPONENT_SIZE, "little")
        return _LAYOUT.pack(*(values[name] for name in _FIELDS))

    @classmethod
    def parse(cls, data: bytes) -> AttestationReport:
        """The report in ``data``: exactly 1184 bytes, every reserved byte zero."""
        data = bytes(data)
        if len(data) != REPORT_SIZE:
            raise ReportLengthError("attestation report must be 1184 bytes")
        values: dict[str, Any] = dict(zip(_FIELDS, _LAYOUT.unpack(data), strict=True))
        version = values["version"]
        if not MIN_REPORT_VERSION <= version <= MAX_REPORT_VERSION:
            raise UnsupportedReportError("report version not supported")
        values["policy"] = GuestPolicy(values["policy"])
        values["platform_info"] = PlatformInfo(values["platform_info"])
        values["flags"] = ReportFlags(values["flags"])
        # Fields a version lacks are reserved bytes there: None encodes them as zero, and the
        # comparison below refuses the report if they were not.
        for name in (_CPUID_FIELDS if version < 3 else ()) + (_MIT_FIELDS if version < 5 else ()):
            values[name] = None
        values["signature_r"] = int.from_bytes(values["signature_r"], "little")
        values["signature_s"] = int.from_bytes(values["signature_s"], "little")
        report = cls(**values)
        # Every byte outside the reserved ranges is a field, so a difference is a reserved byte set.
        if report.raw != data:
            raise ReportFormatError("reserved report bytes are not zero")
        return report

    def encode(self) -> bytes:
        """The report's 1184 bytes."""
        return self.raw

    def signed_part(self) -> bytes:
        """Bytes 0x000-0x29F, the part the signature covers."""
        return self.raw[:SIGNED_SIZE]

    def unsigned_bytes(self) -> bytes:
        """The report's bytes with the signature field zeroed (what a signer fills in)."""
        return self.signed_part() + bytes(REPORT_SIZE - SIGNED_SIZE)

    def with_signature(self, r: int, s: int) -> AttestationReport:
        """This report with the signature (r, s) in its little-endian 72-byte fields."""
        return dataclasses.replace(self, signature_r=r, signature_s=s)


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


# --- a strict DER reader (just what X.509 certificates need) --------------------------------

_TAG_BOOLEAN = 0x01
_TAG_INTEGER = 0x02
_TAG_BIT_STRING = 0x03
_TAG_OCTET_STRING = 0x04
_TAG_NULL = 0x05
_TAG_OID = 0x06
_TAG_IA5_STRING = 0x16
_TAG_UTC_TIME = 0x17
_TAG_GENERALIZED_TIME = 0x18
_TAG_SEQUENCE = 0x30


def _context(number: int, constructed: bool = True) -> int:
    return 0x80 | (0x20 if constructed else 0) | number


_MALFORMED = "certificate DER is malformed"


class _Der:
    """Sequential reader over ``data[start:end]``: DER only (definite, minimal lengths)."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def at_end(self) -> bool:
        return self.pos >= self.end

    def peek(self) -> int | None:
        return None if self.at_end() else self.data[self.pos]

    def _header(self) -> tuple[int, int, int]:
        """(tag, content start, content end) of the next element, without consuming it."""
        data, pos = self.data, self.pos
        if self.end - pos < 2:
            raise CertificateFormatError(_MALFORMED)
        tag, first = data[pos], data[pos + 1]
        if tag & 0x1F == 0x1F:  # high tag numbers: never used in certificates
            raise CertificateFormatError(_MALFORMED)
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or self.end - pos < count or data[pos] == 0:
                raise CertificateFormatError(_MALFORMED)
            length = int.from_bytes(data[pos : pos + count], "big")
            if length < 0x80:
                raise CertificateFormatError(_MALFORMED)
            pos += count
        if self.end - pos < length:
            raise CertificateFormatError(_MALFORMED)
        return tag, pos, pos + length

    def read(self, tag: int) -> tuple[int, int]:
        """Consume the next element, which must have ``tag``: its content (start, end)."""
        actual, start, end = self._header()
        if actual != tag:
            raise CertificateFormatError(_MALFORMED)
        self.pos = end
        return start, end

    def read_element(self, tag: int) -> bytes:
        """Consume the next element, which must have ``tag``: its whole encoding."""
        begin = self.pos
        _, end = self.read(tag)
        return self.data[begin:end]

    def read_content(self, tag: int) -> bytes:
        start, end = self.read(tag)
        return self.data[start:end]

    def enter(self, tag: int) -> _Der:
        """Consume the next element (constructed, with ``tag``) and read inside it."""
        start, end = self.read(tag)
        return _Der(self.data, start, end)

    def finish(self) -> None:
        if not self.at_end():
            raise CertificateFormatError(_MALFORMED)

    def integer(self) -> int:
        content = self.read_content(_TAG_INTEGER)
        if not content or (len(content) > 1 and content[0] in (0, 0xFF) and (content[0] ^ content[1]) < 0x80):
            raise CertificateFormatError(_MALFORMED)
        return int.from_bytes(content, "big", signed=True)

    def boolean(self) -> bool:
        content = self.read_content(_TAG_BOOLEAN)
        if content not in (b"\x00", b"\xff"):
            raise CertificateFormatError(_MALFORMED)
        return content == b"\xff"

    def oid(self) -> str:
        content = self.read_content(_TAG_OID)
        if not content or content[-1] & 0x80:
            raise CertificateFormatError(_MALFORMED)
        arcs: list[int] = []
        value, fresh = 0, True
        for byte in content:
            if fresh and byte == 0x80:  # non-minimal base-128
                raise CertificateFormatError(_MALFORMED)
            value, fresh = value << 7 | byte & 0x7F, not byte & 0x80
            if fresh:
                arcs.append(value)
                value = 0
        first = min(arcs[0] // 40, 2)
        return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))

    def bit_string(self) -> tuple[bytes, int]:
        """(bytes, number of unused trailing bits)."""
        content = self.read_content(_TAG_BIT_STRING)
        if not content or content[0] > 7 or (content[0] and len(content) == 1):
            raise CertificateFormatError(_MALFORMED)
        return content[1:], content[0]

    def time(self) -> datetime:
        """A UTCTime or GeneralizedTime, which RFC 5280 requires in UTC to the second."""
        tag = self.peek()
        if tag == _TAG_UTC_TIME:
            digits = 12
        elif tag == _TAG_GENERALIZED_TIME:
            digits = 14
        else:
            raise CertificateFormatError(_MALFORMED)
        text = self.read_content(tag)
        if len(text) != digits + 1 or text[-1:] != b"Z" or not text[:-1].isdigit():
            raise CertificateFormatError(_MALFORMED)
        if tag == _TAG_UTC_TIME:  # RFC 5280 §4.1.2.5.1: YY >= 50 is 19YY
            year = int(text[:2])
            year += 1900 if year >= 50 else 2000
            rest = text[2:-1]
        else:
            year, rest = int(text[:4]), text[4:-1]
        month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
        try:
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:
            raise CertificateFormatError(_MALFORMED) from None


@dataclass(frozen=True)
class _Extension:
    critical: bool
    value: bytes


@dataclass(frozen=True)
class _Certificate:
    """The parts of an X.509 v3 certificate a chain check needs (RFC 5280 §4.1)."""

    tbs: bytes
    signature_algorithm: bytes
    signature: bytes
    serial: int
    issuer: bytes
    subject: bytes
    not_before: datetime
    not_after: datetime
    spki: bytes
    extensions: Mapping[str, _Extension]


def _parse_certificate(der: bytes) -> _Certificate:
    outer = _Der(der)
    cert = outer.enter(_TAG_SEQUENCE)
    outer.finish()
    tbs_bytes = cert.read_element(_TAG_SEQUENCE)
    signature_algorithm = cert.read_element(_TAG_SEQUENCE)
    signature, unused = cert.bit_string()
    cert.finish()
    if unused:
        raise CertificateFormatError(_MALFORMED)

    tbs = _Der(tbs_bytes).enter(_TAG_SEQUENCE)
    version = tbs.enter(_context(0))
    if version.integer() != 2:  # v3: the AMD extensions need it
        raise CertificateFormatError("certificate is not X.509 v3")
    version.finish()
    # Any serial number, including AMD's 0 (see the module docstring): nothing here uses it.
    serial = tbs.integer()
    if tbs.read_element(_TAG_SEQUENCE) != signature_algorithm:
        raise CertificateFormatError("certificate signature algorithms disagree")
    issuer = tbs.read_element(_TAG_SEQUENCE)
    validity = tbs.enter(_TAG_SEQUENCE)
    not_before, not_after = validity.time(), validity.time()
    validity.finish()
    subject = tbs.read_element(_TAG_SEQUENCE)
    spki = tbs.read_element(_TAG_SEQUENCE)
    for unique_id in (1, 2):  # issuerUniqueID, subjectUniqueID: skipped
        tag = tbs.peek()
        if tag is not None and tag in (_context(unique_id, False), _context(unique_id)):
            tbs.read(tag)
    extensions: dict[str, _Extension] = {}
    if not tbs.at_end():
        wrapper = tbs.enter(_context(3))
        sequence = wrapper.enter(_TAG_SEQUENCE)
        wrapper.finish()
        if sequence.at_end():
            raise CertificateFormatError(_MALFORMED)
        while not sequence.at_end():
            entry = sequence.enter(_TAG_SEQUENCE)
            oid = entry.oid()
            critical = entry.boolean() if entry.peek() == _TAG_BOOLEAN else False
            value = entry.read_content(_TAG_OCTET_STRING)
            entry.finish()
            if oid in extensions:
                raise CertificateFormatError("certificate repeats an extension")
            extensions[oid] = _Extension(critical, value)
    tbs.finish()
    return _Certificate(
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


_OID_BASIC_CONSTRAINTS = "2.5.29.19"
_OID_KEY_USAGE = "2.5.29.15"
_KEY_USAGE_DIGITAL_SIGNATURE = 0
_KEY_USAGE_KEY_CERT_SIGN = 5
#: Critical extensions this module understands; any other critical extension fails a certificate.
_UNDERSTOOD_CRITICAL = frozenset({_OID_BASIC_CONSTRAINTS, _OID_KEY_USAGE})

_OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_SHA384 = "2.16.840.1.101.3.4.2.2"
_PSS_SALT_LENGTH = 48


def _basic_constraints(cert: _Certificate) -> tuple[bool, int | None] | None:
    """(cA, pathLenConstraint), or None without the extension."""
    extension = cert.extensions.get(_OID_BASIC_CONSTRAINTS)
    if extension is None:
        return None
    outer = _Der(extension.value)
    body = outer.enter(_TAG_SEQUENCE)
    outer.finish()
    ca = body.boolean() if body.peek() == _TAG_BOOLEAN else False
    path_len = body.integer() if body.peek() == _TAG_INTEGER else None
    body.finish()
    if path_len is not None and (path_len < 0 or not ca):
        raise CertificateFormatError(_MALFORMED)
    return ca, path_len


def _key_usage(cert: _Certificate) -> frozenset[int] | None:
    """The key usage bits set (RFC 5280 §4.2.1.3 numbering), or None without the extension."""
    extension = cert.extensions.get(_OID_KEY_USAGE)
    if extension is None:
        return None
    reader = _Der(extension.value)
    bits, unused = reader.bit_string()
    reader.finish()
    count = 8 * len(bits) - unused
    return frozenset(i for i in range(count) if bits[i // 8] >> (7 - i % 8) & 1)


def _explicit(reader: _Der, number: int) -> _Der | None:
    """Enter the optional [number] EXPLICIT element that comes next, if it does."""
    return reader.enter(_context(number)) if reader.peek() == _context(number) else None


def _read_sha384(reader: _Der) -> bool:
    """Consume an AlgorithmIdentifier; whether it is SHA-384 (parameters absent or NULL)."""
    algorithm = reader.enter(_TAG_SEQUENCE)
    if algorithm.oid() != _OID_SHA384:
        return False
    if not algorithm.at_end() and algorithm.read_content(_TAG_NULL):
        return False
    return algorithm.at_end()


def _is_amd_pss(signature_algorithm: bytes) -> bool:
    """Whether the AlgorithmIdentifier is RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48, trailer 1.

    hashAlgorithm, maskGenAlgorithm and saltLength must all be present: their
    defaults (SHA-1, MGF1-SHA-1, 20) are not AMD's. trailerField may be absent
    or 1 (its default; AMD's certificates spell it out, ``cryptography`` omits it).
    """
    outer = _Der(signature_algorithm)
    algorithm = outer.enter(_TAG_SEQUENCE)
    outer.finish()
    if algorithm.oid() != _OID_RSASSA_PSS:
        return False
    params = algorithm.enter(_TAG_SEQUENCE)
    algorithm.finish()
    digest = _explicit(params, 0)
    if digest is None or not _read_sha384(digest) or not digest.at_end():
        return False
    mask = _explicit(params, 1)
    if mask is None:
        return False
    mgf = mask.enter(_TAG_SEQUENCE)
    if not mask.at_end() or mgf.oid() != _OID_MGF1 or not _read_sha384(mgf) or not mgf.at_end():
        return False
    salt = _explicit(params, 2)
    if salt is None or salt.integer() != _PSS_SALT_LENGTH or not salt.at_end():
        return False
    trailer = _explicit(params, 3)
    if trailer is not None and (trailer.integer() != 1 or not trailer.at_end()):
        return False
    return params.at_end()


def _public_key(cert: _Certificate) -> object:
    try:
        return serialization.load_der_public_key(cert.spki)
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateFormatError("certificate public key does not parse") from None


def _valid_at(cert: _Certificate, now: datetime) -> bool:
    return cert.not_before <= now <= cert.not_after


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


def _amd_integer(cert: _Certificate, oid: str) -> int | None:
    extension = cert.extensions.get(oid)
    if extension is None:
        return None
    reader = _Der(extension.value)
    value = reader.integer()
    reader.finish()
    if not 0 <= value <= 0xFF:
        raise VcekExtensionError("certificate patch level out of range")
    return value


def _amd_ia5(cert: _Certificate, oid: str) -> str | None:
    extension = cert.extensions.get(oid)
    if extension is None:
        return None
    reader = _Der(extension.value)
    text = reader.read_content(_TAG_IA5_STRING)
    reader.finish()
    if not text or not all(0x20 <= c < 0x7F for c in text):
        raise VcekExtensionError("certificate text extension is not printable ASCII")
    return text.decode("ascii")


def _amd_hwid(cert: _Certificate, size: int) -> bytes | None:
    extension = cert.extensions.get(_OID_HWID)
    if extension is None:
        return None
    value = extension.value
    if len(value) == size:  # the KDS puts the raw bytes in, without an OCTET STRING header
        return value
    reader = _Der(value)
    inner = reader.read_content(_TAG_OCTET_STRING)
    reader.finish()
    if len(inner) != size:
        raise VcekExtensionError("certificate hwID has the wrong length")
    return inner


def _endorsement_info(cert: _Certificate, product: Product) -> VcekInfo:
    key = _public_key(cert)
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


def parse_vcek(der: bytes, product: Product) -> VcekInfo:
    """Read a VCEK or VLEK certificate's key and AMD extensions. Checks no signature: see verify_chain."""
    return _endorsement_info(_parse_certificate(bytes(der)), product)


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

_AMD_KEY_BITS = 4096  # ARK and ASK are RSA-4096 (KDS specification)
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=_PSS_SALT_LENGTH)


def _load(der: bytes, error: type[ChainError], role: str) -> _Certificate:
    try:
        cert = _parse_certificate(bytes(der))
    except WireError as exc:
        raise error(f"{role} certificate does not parse") from exc
    for oid, extension in cert.extensions.items():
        if extension.critical and oid not in _UNDERSTOOD_CRITICAL:
            raise error(f"{role} certificate has an unknown critical extension")
    return cert


def _check_signed(
    cert: _Certificate, issuer: _Certificate, issuer_key: rsa.RSAPublicKey, error: type[ChainError], role: str
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
    cert: _Certificate, now: datetime, error: type[ChainError], role: str
) -> tuple[rsa.RSAPublicKey, int | None]:
    """The CA's RSA-4096 key and path length constraint, once its extensions and validity pass."""
    try:
        key = _public_key(cert)
        constraints = _basic_constraints(cert)
        usage = _key_usage(cert)
    except WireError as exc:
        raise error(f"{role} certificate extensions do not parse") from exc
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != _AMD_KEY_BITS:
        raise error(f"{role} key is not RSA-4096")
    if constraints is None or not constraints[0]:
        raise error(f"{role} certificate is not a CA certificate")
    if usage is None or _KEY_USAGE_KEY_CERT_SIGN not in usage:
        raise error(f"{role} key usage does not allow signing certificates")
    if not _valid_at(cert, now):
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
        constraints = _basic_constraints(vcek)
        usage = _key_usage(vcek)
        info = _endorsement_info(vcek, product)
    except WireError as exc:  # the cause says which extension, for logs
        raise VcekInvalidError("VCEK certificate extensions are not valid") from exc
    if constraints is not None and constraints[0]:
        raise VcekInvalidError("VCEK certificate is a CA certificate")
    if usage is not None and _KEY_USAGE_DIGITAL_SIGNATURE not in usage:
        raise VcekInvalidError("VCEK key usage does not allow signatures")
    if not _valid_at(vcek, now):
        raise VcekInvalidError("VCEK certificate is not valid at this time")
    return info


def certificate_validity(der: bytes) -> tuple[datetime, datetime]:
    """A certificate's ``(notBefore, notAfter)``; :class:`CertificateFormatError` if it does not parse."""
    try:
        cert = _parse_certificate(bytes(der))
    except WireError as exc:
        raise CertificateFormatError("certificate does not parse") from exc
    return cert.not_before, cert.not_after


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
