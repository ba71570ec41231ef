"""QUIC variable-length integers (RFC 9000, Section 16 and Appendix A.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import TruncatedError, WireError
from privproc.wire import varint

# RFC 9000, Appendix A.1: "Sample Variable-Length Integer Decoding".
RFC9000_EXAMPLES = [
    ("c2197c5eff14e88c", 151288809941952652),
    ("9d7f3e7d", 494878333),
    ("7bbd", 15293),
    ("25", 37),
]


@pytest.mark.parametrize(("hex_", "value"), RFC9000_EXAMPLES)
def test_rfc9000_examples_decode_and_encode(hex_: str, value: int) -> None:
    data = bytes.fromhex(hex_)
    assert varint.decode(data) == (value, len(data))
    assert varint.encode(value) == data
    assert varint.encoded_length(value) == len(data)


def test_non_minimal_encoding_is_accepted_on_decode() -> None:
    # RFC 9000, Appendix A.1: "the two-byte sequence 0x4025 decodes to 37".
    assert varint.decode(bytes.fromhex("4025")) == (37, 2)
    assert varint.decode(bytes.fromhex("80000025")) == (37, 4)
    assert varint.decode(bytes.fromhex("c000000000000025")) == (37, 8)


@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        (0, "00"),
        (63, "3f"),
        (64, "4040"),
        (16383, "7fff"),
        (16384, "80004000"),
        ((1 << 30) - 1, "bfffffff"),
        (1 << 30, "c000000040000000"),
        (varint.MAX_VALUE, "ffffffffffffffff"),
    ],
)
def test_boundaries_use_the_shortest_form(value: int, hex_: str) -> None:
    assert varint.encode(value).hex() == hex_
    assert varint.decode(bytes.fromhex(hex_)) == (value, len(hex_) // 2)


@pytest.mark.parametrize("value", [-1, varint.MAX_VALUE + 1, 1 << 64])
def test_encode_rejects_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        varint.encode(value)


def test_encode_rejects_non_int() -> None:
    with pytest.raises(TypeError):
        varint.encode(True)
    with pytest.raises(TypeError):
        varint.encode(1.0)  # type: ignore[arg-type]


def test_decode_at_offset_returns_next_offset() -> None:
    data = bytes.fromhex("ff") + bytes.fromhex("7bbd") + bytes.fromhex("25")
    assert varint.decode(data, 1) == (15293, 3)
    assert varint.decode(data, 3) == (37, 4)
    assert varint.decode(memoryview(data), 3) == (37, 4)
    assert varint.decode(bytearray(data), 1) == (15293, 3)


@pytest.mark.parametrize("hex_", ["", "40", "80", "800000", "c0", "c0000000000000"])
def test_truncated_input_raises_truncated_error(hex_: str) -> None:
    with pytest.raises(TruncatedError):
        varint.decode(bytes.fromhex(hex_))


def test_offset_at_or_past_end_is_truncation() -> None:
    with pytest.raises(TruncatedError):
        varint.decode(b"\x25", 1)
    with pytest.raises(TruncatedError):
        varint.decode(b"\x25", 5)
    with pytest.raises(ValueError, match="offset"):
        varint.decode(b"\x25", -1)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=varint.MAX_VALUE), st.binary(max_size=4))
def test_round_trip(value: int, suffix: bytes) -> None:
    data = varint.encode(value)
    assert len(data) == varint.encoded_length(value)
    assert varint.decode(data + suffix) == (value, len(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=10), st.integers(min_value=0, max_value=12))
def test_decode_arbitrary_bytes_only_raises_wire_error(data: bytes, offset: int) -> None:
    try:
        value, end = varint.decode(data, offset)
    except WireError:
        return
    assert 0 <= value <= varint.MAX_VALUE
    assert offset < end <= len(data)
