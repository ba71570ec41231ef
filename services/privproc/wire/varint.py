"""QUIC variable-length integers (RFC 9000, Section 16).

The two most significant bits of the first byte give the encoded length
(1, 2, 4 or 8 bytes); the remaining bits carry the value, big-endian.
Encoding always uses the shortest form. Decoding accepts any form, because
RFC 9000 (and RFC 9292, Section 3) allow values to be sent on more bytes
than needed.
"""

from __future__ import annotations

from privproc.errors import TruncatedError

__all__ = ["MAX_VALUE", "BytesLike", "decode", "encode", "encoded_length"]

#: Largest value that fits in a variable-length integer: 2^62 - 1.
MAX_VALUE = (1 << 62) - 1

#: What :func:`decode` reads from.
BytesLike = bytes | bytearray | memoryview


def encoded_length(value: int) -> int:
    """Number of bytes :func:`encode` uses for ``value`` (1, 2, 4 or 8)."""
    _check(value)
    if value < 1 << 6:
        return 1
    if value < 1 << 14:
        return 2
    if value < 1 << 30:
        return 4
    return 8


def encode(value: int) -> bytes:
    """Encode ``value`` on the fewest bytes.

    Raises :class:`ValueError` if ``value`` is negative or above
    :data:`MAX_VALUE`, and :class:`TypeError` if it is not an ``int``.
    """
    length = encoded_length(value)
    # The length code (0..3) is log2 of the byte count, placed in the top two bits.
    prefix = (length.bit_length() - 1) << (8 * length - 2)
    return (prefix | value).to_bytes(length, "big")


def decode(buf: BytesLike, offset: int = 0) -> tuple[int, int]:
    """Read one integer from ``buf`` at ``offset``.

    Returns ``(value, offset just past it)``. Raises
    :class:`~privproc.errors.TruncatedError` if ``buf`` ends first.
    """
    if offset < 0:
        raise ValueError("negative offset")
    if offset >= len(buf):
        raise TruncatedError("varint truncated")
    length = 1 << (buf[offset] >> 6)
    end = offset + length
    if end > len(buf):
        raise TruncatedError("varint truncated")
    raw = int.from_bytes(buf[offset:end], "big")
    # Drop the two length bits from the top of the first byte.
    return raw & ((1 << (8 * length - 2)) - 1), end


def _check(value: int) -> None:
    # bool is an int subclass; a flag passed by mistake should not encode as 0/1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("varint value must be an int")
    if not 0 <= value <= MAX_VALUE:
        raise ValueError("varint value out of range")
