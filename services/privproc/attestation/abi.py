"""The AMD SEV-SNP ATTESTATION_REPORT: its layout, parsed and serialised — pure.

The report is the 1184-byte ``ATTESTATION_REPORT`` structure of AMD's SEV
Secure Nested Paging Firmware ABI Specification (publication 56860), report
versions 2 to 5: version 3 added the CPUID family, model and stepping at
0x188-0x18A, version 5 the launch and current mitigation vectors at
0x1F8-0x207. :meth:`AttestationReport.parse` is strict: exactly 1184 bytes, a
version this module knows, ECDSA P-384 with SHA-384, known guest-policy and
signer bits only, and every reserved byte zero, so that
:meth:`AttestationReport.encode` gives back the input byte for byte. The
signature covers bytes 0x000-0x29F; r and s are little-endian, 72 bytes
each, at 0x2A0 (:mod:`privproc.attestation.verify` checks it).

The bit fields of GUEST_POLICY, PLATFORM_INFO and the flags word are
declared once each, as a table of :class:`Bits` in the class body; one
descriptor reads them all. Error messages are fixed strings: reports come
from the peer.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, ClassVar, Generic, TypeVar, overload

from privproc.errors import WireError

__all__ = [
    "MAX_REPORT_VERSION",
    "MIN_REPORT_VERSION",
    "REPORT_SIZE",
    "SIGNATURE_ALGO_ECDSA_P384_SHA384",
    "SIGNED_SIZE",
    "AttestationReport",
    "Bits",
    "GuestPolicy",
    "PlatformInfo",
    "Product",
    "ReportFlags",
    "ReportFormatError",
    "ReportLengthError",
    "SigningKey",
    "TcbFormatError",
    "TcbVersion",
    "UnsupportedReportError",
]

REPORT_SIZE = 1184
#: The signature covers bytes 0x000-0x29F.
SIGNED_SIZE = 0x2A0
#: SIGNATURE_ALGO value of ECDSA P-384 with SHA-384, the only one the ABI defines.
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
MIN_REPORT_VERSION = 2
#: Later versions may give meaning to bytes this module requires to be zero: refused until reviewed.
MAX_REPORT_VERSION = 5

_U64 = 1 << 64
_SIG_COMPONENT_SIZE = 72  # r and s, little-endian, zero-padded (ABI "ECDSA P-384 with SHA-384" format)
_SIG_COMPONENT_LIMIT = 1 << (8 * _SIG_COMPONENT_SIZE)

#: ATTESTATION_REPORT, little-endian, in order: (offset, field, struct code). ``None`` marks
#: reserved bytes, which parse() requires zero by re-encoding and comparing.
_REPORT_LAYOUT: tuple[tuple[int, str | None, str], ...] = (
    (0x000, "version", "I"),
    (0x004, "guest_svn", "I"),
    (0x008, "policy", "Q"),
    (0x010, "family_id", "16s"),
    (0x020, "image_id", "16s"),
    (0x030, "vmpl", "I"),
    (0x034, "signature_algo", "I"),
    (0x038, "current_tcb", "Q"),
    (0x040, "platform_info", "Q"),
    (0x048, "flags", "I"),
    (0x04C, None, "4x"),
    (0x050, "report_data", "64s"),
    (0x090, "measurement", "48s"),
    (0x0C0, "host_data", "32s"),
    (0x0E0, "id_key_digest", "48s"),
    (0x110, "author_key_digest", "48s"),
    (0x140, "report_id", "32s"),
    (0x160, "report_id_ma", "32s"),
    (0x180, "reported_tcb", "Q"),
    (0x188, "cpuid_fam_id", "B"),  # version 3 and later
    (0x189, "cpuid_mod_id", "B"),
    (0x18A, "cpuid_step", "B"),
    (0x18B, None, "21x"),
    (0x1A0, "chip_id", "64s"),
    (0x1E0, "committed_tcb", "Q"),
    (0x1E8, "current_build", "B"),
    (0x1E9, "current_minor", "B"),
    (0x1EA, "current_major", "B"),
    (0x1EB, None, "x"),
    (0x1EC, "committed_build", "B"),
    (0x1ED, "committed_minor", "B"),
    (0x1EE, "committed_major", "B"),
    (0x1EF, None, "x"),
    (0x1F0, "launch_tcb", "Q"),
    (0x1F8, "launch_mit_vector", "Q"),  # version 5 and later
    (0x200, "current_mit_vector", "Q"),
    (0x208, None, "152x"),
    (0x2A0, "signature_r", "72s"),  # little-endian, zero-padded
    (0x2E8, "signature_s", "72s"),
    (0x330, None, "368x"),
)
_LAYOUT = struct.Struct("<" + "".join(code for _, _, code in _REPORT_LAYOUT))
#: The report's fields in _LAYOUT order.
_FIELDS = tuple(name for _, name, _ in _REPORT_LAYOUT if name is not None)
_CPUID_FIELDS = ("cpuid_fam_id", "cpuid_mod_id", "cpuid_step")  # report version 3 and later
_MIT_FIELDS = ("launch_mit_vector", "current_mit_vector")  # report version 5 and later
#: Fields checked by their own types (the registers), as integers (r and s) or with the version.
_CHECKED_ELSEWHERE = frozenset(
    {"policy", "platform_info", "flags", "signature_r", "signature_s", *_CPUID_FIELDS, *_MIT_FIELDS}
)
_INT_LIMITS = {"B": 1 << 8, "I": 1 << 32, "Q": _U64}
#: (field, exclusive upper bound) of the other integer fields; (field, length) of the byte fields.
_INT_FIELDS = tuple(
    (name, _INT_LIMITS[code])
    for _, name, code in _REPORT_LAYOUT
    if name is not None and name not in _CHECKED_ELSEWHERE and code in _INT_LIMITS
)
_BYTE_FIELDS = tuple(
    (name, struct.calcsize(code))
    for _, name, code in _REPORT_LAYOUT
    if name is not None and code.endswith("s") and name not in _CHECKED_ELSEWHERE
)
assert _LAYOUT.size == REPORT_SIZE


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


# --- bit fields: GUEST_POLICY, PLATFORM_INFO, the flags word ---------------------------------

T = TypeVar("T")


class Bits(Generic[T]):
    """One named field of a :class:`_Register`: ``width`` bits from bit ``first``, read through ``decode``.

    Declared in the register's class body (``debug = flag(19, "...")``), it
    is read as an attribute (``policy.debug``), so the class body is the
    register's table and this one descriptor its only accessor.
    """

    def __init__(self, first: int, width: int, decode: Callable[[int], T], doc: str) -> None:
        self.first = first
        self.width = width
        self.decode = decode
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Bits({self.name!r}, first={self.first}, width={self.width})"

    @property
    def mask(self) -> int:
        """The field's bits in the register."""
        return ((1 << self.width) - 1) << self.first

    @overload
    def __get__(self, register: None, owner: type) -> Bits[T]: ...

    @overload
    def __get__(self, register: _Register, owner: type) -> T: ...

    def __get__(self, register: _Register | None, owner: type) -> Bits[T] | T:
        if register is None:
            return self
        return self.decode((register.raw & self.mask) >> self.first)


def flag(bit: int, doc: str) -> Bits[bool]:
    """A one-bit field read as a bool."""
    return Bits(bit, 1, bool, doc)


def number(first: int, width: int, doc: str) -> Bits[int]:
    """A ``width``-bit field read as an int."""
    return Bits(first, width, int, doc)


@dataclass(frozen=True)
class _Register:
    """A little-endian register of the report, checked against the :class:`Bits` its class declares.

    A value too wide, a ``_MUST_BE_ONE`` bit clear, a field ``decode`` refuses
    (a reserved enum value), or, when ``_RESERVED_ZERO``, any bit no field
    names, is a :class:`ReportFormatError`.
    """

    raw: int

    #: What the register is called in error messages.
    _LABEL: ClassVar[str]
    _SIZE_BITS: ClassVar[int]
    #: Whether bits no field names must be zero (else they are kept for a policy to judge).
    _RESERVED_ZERO: ClassVar[bool]
    _MUST_BE_ONE: ClassVar[int] = 0
    #: The fields the class body declares, in bit order (set for each subclass).
    FIELDS: ClassVar[tuple[Bits[Any], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = (value for value in vars(cls).values() if isinstance(value, Bits))
        cls.FIELDS = tuple(sorted(declared, key=lambda bits: bits.first))

    def __post_init__(self) -> None:
        if not 0 <= self.raw < 1 << self._SIZE_BITS:
            raise ReportFormatError(f"{self._LABEL} out of range")
        if self.raw & self._MUST_BE_ONE != self._MUST_BE_ONE:
            raise ReportFormatError(f"{self._LABEL} has a must-be-one bit clear")
        named = self._MUST_BE_ONE
        for bits in self.FIELDS:
            named |= bits.mask
            try:
                bits.__get__(self, type(self))
            except ValueError:
                raise ReportFormatError(f"{self._LABEL} has a reserved value") from None
        if self._RESERVED_ZERO and self.raw & ~named:
            raise ReportFormatError(f"{self._LABEL} has reserved bits set")


@dataclass(frozen=True)
class GuestPolicy(_Register):
    """GUEST_POLICY (ABI table "GUEST_POLICY"): the restrictions the guest owner set at launch.

    Bit 17 must be one and bits 26-63 zero; anything else is refused, since a
    policy bit this module cannot name is a restriction no one could judge.
    """

    _LABEL = "guest policy"
    _SIZE_BITS = 64
    _RESERVED_ZERO = True
    _MUST_BE_ONE = 1 << 17

    abi_minor = number(0, 8, "Lowest firmware ABI minor version the guest may run on (bits 7:0).")
    abi_major = number(8, 8, "Lowest firmware ABI major version the guest may run on (bits 15:8).")
    smt = flag(16, "Bit 16: the host may use simultaneous multithreading.")
    migrate_ma = flag(18, "Bit 18: a migration agent may be associated with the guest.")
    debug = flag(19, "Bit 19: the host may debug (decrypt) the guest.")
    single_socket = flag(20, "Bit 20: the guest may be activated on one socket only.")
    cxl_allow = flag(21, "Bit 21: CXL may be populated with devices or memory.")
    mem_aes_256_xts = flag(22, "Bit 22: AES-256-XTS memory encryption is required.")
    rapl_dis = flag(23, "Bit 23: Running Average Power Limit must be disabled.")
    ciphertext_hiding = flag(24, "Bit 24: ciphertext hiding must be enabled.")
    page_swap_disable = flag(25, "Bit 25: the guest may not use SNP_PAGE_MOVE, SNP_SWAP_OUT and SNP_SWAP_IN.")


@dataclass(frozen=True)
class PlatformInfo(_Register):
    """PLATFORM_INFO: how the host was configured when the report was made.

    The bits describe the host, not the guest, and newer firmware keeps
    adding them, so unknown bits are kept, not refused: a policy judges them.
    """

    _LABEL = "platform info"
    _SIZE_BITS = 64
    _RESERVED_ZERO = False

    smt_enabled = flag(0, "Bit 0: simultaneous multithreading is enabled.")
    tsme_enabled = flag(1, "Bit 1: transparent SME is enabled.")
    ecc_enabled = flag(2, "Bit 2: the platform uses error-correcting memory.")
    rapl_disabled = flag(3, "Bit 3: Running Average Power Limit is disabled.")
    ciphertext_hiding_enabled = flag(4, "Bit 4: ciphertext hiding is enabled for DRAM.")
    alias_check_complete = flag(
        5, "Bit 5: memory alias detection completed since reset and found no aliases."
    )


class SigningKey(IntEnum):
    """SIGNING_KEY (flags bits 4:2): which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True)
class ReportFlags(_Register):
    """The 32-bit flags word at 0x048: AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY; bits 31:5 are zero."""

    _LABEL = "report flags"
    _SIZE_BITS = 32
    _RESERVED_ZERO = True

    author_key_en = flag(
        0, "Bit 0: the ID block was certified by an author key (its digest is in the report)."
    )
    mask_chip_key = flag(1, "Bit 1: the host masked CHIP_ID (it is all zeros).")
    signing_key = Bits(2, 3, SigningKey, "Bits 4:2: the key that signed the report (VCEK, VLEK or none).")


@dataclass(frozen=True, kw_only=True)
class AttestationReport:
    """One ATTESTATION_REPORT, field by field, with its exact bytes in ``raw``.

    TCB values are kept as the raw 64-bit TCB_VERSION: their layout depends
    on the product, which version-2 reports do not say; decode them with
    :meth:`TcbVersion.from_u64`. Fields a report version does not have
    (CPUID before version 3, mitigation vectors before version 5) are
    ``None``. Constructing a report checks every field and encodes it, so a
    simulator can build one, sign it with
    :func:`~privproc.attestation.verify.sign_report` and get bytes
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
        for name, limit in _INT_FIELDS:
            if not 0 <= getattr(self, name) < limit:
                raise ReportFormatError("report field out of range")
        for name, size in _BYTE_FIELDS:
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
