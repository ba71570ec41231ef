"""Strict DER (ITU-T X.690 §10): the project's one reader, and the few writers it needs.

Two formats are DER here: the X.509 certificates of AMD's SEV-SNP chain
(:mod:`privproc.attestation.kds`, :mod:`privproc.attestation.verify`) and the
RFC 9578 §6.5 issuer key of Privacy Pass token type 2
(:mod:`privproc.crypto.blindrsa`). Both read with :class:`Reader`, which accepts
DER only: definite lengths in their shortest form, low tag numbers, the
primitive forms of strings, minimal INTEGERs and OIDs, BOOLEANs 00 or FF,
zero padding bits, and nothing after the element a caller asked for. Every
failure is a :class:`DerError` (a :class:`~privproc.errors.WireError`);
running out of input is also a :class:`~privproc.errors.TruncatedError`.

Work is linear in the input: a reader never copies more than the element it
returns, nesting is bounded by :data:`MAX_DEPTH`, and OID arcs by
:data:`MAX_OID_ARC_BYTES`, so no input makes a decoder slow.

The schema stays with the caller: a reader reads the element it is told to
(``reader.integer()``, ``reader.enter(TAG_SEQUENCE)``) and refuses any other.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from privproc.errors import LimitExceededError, TruncatedError, WireError

__all__ = [
    "MAX_DEPTH",
    "MAX_OID_ARC_BYTES",
    "TAG_BIT_STRING",
    "TAG_BOOLEAN",
    "TAG_GENERALIZED_TIME",
    "TAG_IA5_STRING",
    "TAG_INTEGER",
    "TAG_NULL",
    "TAG_OCTET_STRING",
    "TAG_OID",
    "TAG_SEQUENCE",
    "TAG_UTC_TIME",
    "DerDepthError",
    "DerError",
    "DerTruncatedError",
    "Reader",
    "context",
    "encode_integer",
    "encode_length",
    "encode_oid",
    "encode_tlv",
    "whole",
]

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_IA5_STRING = 0x16
TAG_UTC_TIME = 0x17
TAG_GENERALIZED_TIME = 0x18
TAG_SEQUENCE = 0x30

_CONSTRUCTED = 0x20
_HIGH_TAG = 0x1F

#: How deep :meth:`Reader.enter` may nest (a certificate needs 6).
MAX_DEPTH = 32
#: Longest length field read: 4 bytes, lengths below 4 GiB (longer than any input here).
_MAX_LENGTH_BYTES = 4
#: Longest OID arc read, in base-128 bytes: 140 bits, room for a UUID arc (2.25.<128 bits>).
MAX_OID_ARC_BYTES = 20


class DerError(WireError):
    """Bytes that are not the strict DER encoding of the element asked for."""


class DerTruncatedError(DerError, TruncatedError):
    """The input (or the enclosing element) ended inside an element."""


class DerDepthError(DerError, LimitExceededError):
    """Elements nested deeper than :data:`MAX_DEPTH`."""


def context(number: int, *, constructed: bool = True) -> int:
    """The tag of ``[number]`` (context-specific class), EXPLICIT (constructed) by default."""
    if not 0 <= number < _HIGH_TAG:
        raise ValueError("only low tag numbers")
    return 0x80 | (_CONSTRUCTED if constructed else 0) | number


T = TypeVar("T")


def whole(data: bytes, read: Callable[[Reader], T]) -> T:
    """``read(reader)`` over ``data``, which must hold nothing more than what ``read`` consumed.

    ``whole(data, Reader.integer)`` is an INTEGER that is all of ``data``;
    ``whole(data, Reader.sequence)`` the reader inside the SEQUENCE that is.
    """
    reader = Reader(data)
    value = read(reader)
    reader.finish()
    return value


class Reader:
    """Reads DER elements one after another from ``data``, or from inside one of its elements."""

    __slots__ = ("_data", "_depth", "_end", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._end = len(self._data)
        self._depth = 0

    def _inner(self, start: int, end: int) -> Reader:
        if self._depth >= MAX_DEPTH:
            raise DerDepthError("DER nested too deep")
        inner = Reader.__new__(Reader)
        inner._data, inner._pos, inner._end, inner._depth = self._data, start, end, self._depth + 1
        return inner

    def at_end(self) -> bool:
        """Whether every element has been read."""
        return self._pos >= self._end

    def peek(self) -> int | None:
        """The tag of the next element (None at the end), without reading it."""
        return None if self.at_end() else self._data[self._pos]

    def finish(self) -> None:
        """Refuse anything left after the elements read."""
        if not self.at_end():
            raise DerError("trailing bytes after DER element")

    def _header(self) -> tuple[int, int, int]:
        """(tag, content start, content end) of the next element, without consuming it."""
        data, pos, end = self._data, self._pos, self._end
        if end - pos < 2:
            raise DerTruncatedError("DER element truncated")
        tag, first = data[pos], data[pos + 1]
        if tag & _HIGH_TAG == _HIGH_TAG:
            raise DerError("DER high tag numbers are not supported")
        pos += 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise DerError("DER forbids indefinite lengths")
        else:
            count = first & 0x7F
            if count > _MAX_LENGTH_BYTES:
                raise DerError("DER length too long")
            if end - pos < count:
                raise DerTruncatedError("DER length truncated")
            length = int.from_bytes(data[pos : pos + count], "big")
            if data[pos] == 0 or length < 0x80:
                raise DerError("DER length not in its shortest form")
            pos += count
        if end - pos < length:
            raise DerTruncatedError("DER element truncated")
        return tag, pos, pos + length

    def _read(self, tag: int) -> tuple[int, int]:
        actual, start, end = self._header()
        if actual != tag:
            raise DerError("unexpected DER element")
        self._pos = end
        return start, end

    def element(self, tag: int) -> bytes:
        """The next element, which must have ``tag``: its whole encoding (header and content)."""
        begin = self._pos
        _, end = self._read(tag)
        return self._data[begin:end]

    def content(self, tag: int) -> bytes:
        """The next element, which must have ``tag``: its content bytes."""
        start, end = self._read(tag)
        return self._data[start:end]

    def enter(self, tag: int) -> Reader:
        """The next element, which must be constructed with ``tag``: a reader of its content."""
        if not tag & _CONSTRUCTED:
            raise ValueError("only constructed elements can be entered")
        start, end = self._read(tag)
        return self._inner(start, end)

    def sequence(self) -> Reader:
        """The next element, a SEQUENCE: a reader of its content."""
        return self.enter(TAG_SEQUENCE)

    def explicit(self, number: int) -> Reader | None:
        """The next element if it is ``[number]`` EXPLICIT (a reader of its content), else None."""
        tag = context(number)
        return self.enter(tag) if self.peek() == tag else None

    def integer(self) -> int:
        """An INTEGER (two's complement, in its shortest form)."""
        content = self.content(TAG_INTEGER)
        if not content:
            raise DerError("empty DER INTEGER")
        if len(content) > 1 and content[0] in (0x00, 0xFF) and (content[0] ^ content[1]) < 0x80:
            raise DerError("DER INTEGER not in its shortest form")
        return int.from_bytes(content, "big", signed=True)

    def boolean(self) -> bool:
        """A BOOLEAN (DER: FF for true, 00 for false)."""
        content = self.content(TAG_BOOLEAN)
        if content not in (b"\x00", b"\xff"):
            raise DerError("DER BOOLEAN is neither 00 nor FF")
        return content == b"\xff"

    def null(self) -> None:
        """A NULL."""
        if self.content(TAG_NULL):
            raise DerError("DER NULL has content")

    def oid(self) -> str:
        """An OBJECT IDENTIFIER, dotted (``"1.2.840.113549.1.1.10"``)."""
        content = self.content(TAG_OID)
        if not content or content[-1] & 0x80:
            raise DerError("DER OID is empty or ends inside an arc")
        arcs: list[int] = []
        start = 0
        for index, byte in enumerate(content):
            if index - start >= MAX_OID_ARC_BYTES:
                raise DerError("DER OID arc too large")
            if byte & 0x80:
                if index == start and byte == 0x80:
                    raise DerError("DER OID arc not in its shortest form")
                continue
            value = 0
            for group in content[start : index + 1]:
                value = value << 7 | group & 0x7F
            arcs.append(value)
            start = index + 1
        first = min(arcs[0] // 40, 2)
        return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))

    def bit_string(self) -> tuple[bytes, int]:
        """A BIT STRING: (its bytes, the number of unused bits at the end, which are zero)."""
        content = self.content(TAG_BIT_STRING)
        if not content or content[0] > 7 or (content[0] and len(content) == 1):
            raise DerError("DER BIT STRING has a bad unused-bit count")
        unused = content[0]
        if content[-1] & ((1 << unused) - 1):
            raise DerError("DER BIT STRING padding bits are not zero")
        return content[1:], unused

    def time(self) -> datetime:
        """A UTCTime or GeneralizedTime in UTC to the second (``...Z``), the forms RFC 5280 allows."""
        tag = self.peek()
        if tag == TAG_UTC_TIME:
            digits = 12
        elif tag == TAG_GENERALIZED_TIME:
            digits = 14
        else:
            raise DerError("unexpected DER element")
        text = self.content(tag)
        if len(text) != digits + 1 or text[-1:] != b"Z" or not text[:-1].isdigit():
            raise DerError("DER time is not YYMMDDhhmmssZ or YYYYMMDDhhmmssZ")
        if tag == TAG_UTC_TIME:  # RFC 5280 §4.1.2.5.1: YY >= 50 is 19YY
            year = int(text[:2])
            year += 1900 if year >= 50 else 2000
            rest = text[2:-1]
        else:
            year, rest = int(text[:4]), text[4:-1]
        month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
        try:
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:
            raise DerError("DER time is not a valid date") from None


# --- writers -----------------------------------------------------------------------------------


def encode_length(length: int) -> bytes:
    """The DER length field of ``length`` content bytes (shortest form)."""
    if length < 0:
        raise ValueError("a length is not negative")
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def encode_tlv(tag: int, content: bytes) -> bytes:
    """The element with ``tag`` and ``content``."""
    if not 0 <= tag <= 0xFF or tag & _HIGH_TAG == _HIGH_TAG:
        raise ValueError("only low tag numbers")
    return bytes([tag]) + encode_length(len(content)) + content


def encode_integer(value: int) -> bytes:
    """The INTEGER ``value`` (two's complement, shortest form)."""
    size = (value.bit_length() if value >= 0 else (~value).bit_length()) // 8 + 1
    return encode_tlv(TAG_INTEGER, value.to_bytes(size, "big", signed=True))


def encode_oid(dotted: str) -> bytes:
    """The OBJECT IDENTIFIER ``dotted`` (``"1.2.840.113549.1.1.10"``)."""
    arcs = [int(arc) for arc in dotted.split(".")]
    if len(arcs) < 2 or min(arcs) < 0 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError("not an OBJECT IDENTIFIER")
    out = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        # Base 128, most significant group first, high bit set on all but the last.
        groups = max(1, (arc.bit_length() + 6) // 7)
        out += bytes(((arc >> (7 * i)) & 0x7F) | (0x80 if i else 0) for i in reversed(range(groups)))
    return encode_tlv(TAG_OID, bytes(out))
