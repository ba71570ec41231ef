"""Evidence as it travels: a report and the certificates that sign it, per evidence type.

The same shape carries SEV-SNP reports now and Intel TDX quotes or NVIDIA
GPU reports later (``EvidenceType``); appraisal dispatches on the type.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum

from privproc.errors import WireError
from privproc.v1 import common_pb2

MAX_CERTS = 8
MAX_EVIDENCE_BYTES = 64 << 10


class EvidenceType(IntEnum):
    SEV_SNP = common_pb2.EVIDENCE_TYPE_SEV_SNP
    TDX_QUOTE = common_pb2.EVIDENCE_TYPE_TDX_QUOTE
    NVIDIA_GPU = common_pb2.EVIDENCE_TYPE_NVIDIA_GPU


class EvidenceFormatError(WireError):
    """Evidence that is not well formed."""

    reason = "evidence_format"


@dataclass(frozen=True)
class Evidence:
    type: EvidenceType
    report: bytes
    #: DER certificates from the signing key upwards, root excluded (SNP: VCEK or VLEK, then ASK).
    certificate_chain: tuple[bytes, ...] = ()
    auxiliary: bytes = b""

    def to_proto(self) -> common_pb2.Evidence:
        return common_pb2.Evidence(
            type=common_pb2.EvidenceType.ValueType(int(self.type)),
            report=self.report,
            certificate_chain=list(self.certificate_chain),
            auxiliary=self.auxiliary,
        )

    @classmethod
    def from_proto(cls, message: common_pb2.Evidence) -> Evidence:
        if message.type not in {t.value for t in EvidenceType}:
            raise EvidenceFormatError("unknown evidence type")
        if len(message.certificate_chain) > MAX_CERTS or message.ByteSize() > MAX_EVIDENCE_BYTES:
            raise EvidenceFormatError("evidence too large")
        return cls(
            EvidenceType(message.type),
            bytes(message.report),
            tuple(bytes(c) for c in message.certificate_chain),
            bytes(message.auxiliary),
        )

    def encode(self) -> bytes:
        return bytes(self.to_proto().SerializeToString())

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        if len(data) > MAX_EVIDENCE_BYTES:
            raise EvidenceFormatError("evidence too large")
        message = common_pb2.Evidence()
        try:
            message.ParseFromString(data)
        except Exception:  # protobuf's DecodeError and friends
            raise EvidenceFormatError("evidence does not parse") from None
        return cls.from_proto(message)


#: Bounds on a release staple: a CVM staples consistency proofs from a few earlier checkpoints.
MAX_STAPLED_CONSISTENCY = 16
MAX_CONSISTENCY_HASHES = 64
MAX_STAPLE_BYTES = 96 << 10


class StapleFormatError(WireError):
    """A release staple that is not well formed."""

    reason = "staple_format"


@dataclass(frozen=True)
class ReleaseStaple:
    """The proof a CVM staples to its RA-TLS certificate that its release is logged.

    ``tlog_proof`` is a C2SP tlog-proof (the ``cvm-release`` entry as its extra
    data) at the CVM's newest witnessed checkpoint N; ``consistency`` maps an
    earlier tree size to the RFC 6962 consistency proof from it to N. The
    client checks all of it (:meth:`TransparencyVerifier.verify_staple`); here
    it is only bytes with bounds.
    """

    tlog_proof: bytes
    consistency: tuple[tuple[int, tuple[bytes, ...]], ...] = ()

    def to_proto(self) -> common_pb2.ReleaseStaple:
        return common_pb2.ReleaseStaple(
            tlog_proof=self.tlog_proof,
            consistency=[
                common_pb2.StapledConsistency(old_size=size, hashes=list(hashes))
                for size, hashes in self.consistency
            ],
        )

    def encode(self) -> bytes:
        return bytes(self.to_proto().SerializeToString())

    @classmethod
    def decode(cls, data: bytes) -> ReleaseStaple:
        if len(data) > MAX_STAPLE_BYTES:
            raise StapleFormatError("staple too large")
        message = common_pb2.ReleaseStaple()
        try:
            message.ParseFromString(data)
        except Exception:  # protobuf's DecodeError and friends
            raise StapleFormatError("staple does not parse") from None
        if not message.tlog_proof or len(message.consistency) > MAX_STAPLED_CONSISTENCY:
            raise StapleFormatError("staple lacks its proof or carries too many")
        consistency: list[tuple[int, tuple[bytes, ...]]] = []
        for item in message.consistency:
            hashes = tuple(bytes(h) for h in item.hashes)
            if len(hashes) > MAX_CONSISTENCY_HASHES or any(len(h) != 32 for h in hashes):
                raise StapleFormatError("stapled consistency proof is malformed")
            consistency.append((int(item.old_size), hashes))
        if len({size for size, _ in consistency}) != len(consistency):
            raise StapleFormatError("two stapled consistency proofs from one size")
        return cls(bytes(message.tlog_proof), tuple(consistency))

    def consistency_from(self, old_size: int) -> tuple[bytes, ...] | None:
        """The stapled proof from ``old_size`` to the staple's checkpoint, if any."""
        for size, hashes in self.consistency:
            if size == old_size:
                return hashes
        return None


# --- the SEV-SNP certificate table (GHCB extended guest request, configfs-tsm auxblob) -------

GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
_ENTRY = struct.Struct("<16sII")  # GUID (little-endian fields), offset, length


def parse_cert_table(blob: bytes) -> dict[uuid.UUID, bytes]:
    """The certificates of an SNP certificate table: entries until an all-zero one."""
    certs: dict[uuid.UUID, bytes] = {}
    for i in range(0, len(blob), _ENTRY.size):
        if i + _ENTRY.size > len(blob):
            raise EvidenceFormatError("certificate table truncated")
        raw_guid, offset, length = _ENTRY.unpack_from(blob, i)
        guid = uuid.UUID(bytes_le=raw_guid)
        if guid.int == 0 and offset == 0 and length == 0:
            return certs
        if len(certs) >= MAX_CERTS or offset + length > len(blob) or length == 0:
            raise EvidenceFormatError("bad certificate table entry")
        certs[guid] = blob[offset : offset + length]
    raise EvidenceFormatError("certificate table not terminated")


def encode_cert_table(certs: dict[uuid.UUID, bytes]) -> bytes:
    """An SNP certificate table (for the simulator and tests)."""
    header = (len(certs) + 1) * _ENTRY.size
    entries, data = b"", b""
    for guid, der in certs.items():
        entries += _ENTRY.pack(guid.bytes_le, header + len(data), len(der))
        data += der
    return entries + bytes(_ENTRY.size) + data


def snp_chain_from_table(table: dict[uuid.UUID, bytes]) -> tuple[bytes, ...]:
    """(VCEK or VLEK, ASK) from a certificate table, in chain order."""
    leaf = table.get(GUID_VCEK) or table.get(GUID_VLEK)
    if leaf is None:
        raise EvidenceFormatError("no VCEK or VLEK in the certificate table")
    return (leaf, table[GUID_ASK]) if GUID_ASK in table else (leaf,)
