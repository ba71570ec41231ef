"""The strict DER reader: round trips, the classic non-DER encodings, and any bytes at all."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc import errors
from privproc.wire import der
from privproc.wire.der import DerDepthError, DerError, DerTruncatedError, Reader

FAST = settings(max_examples=300, deadline=None)
h = bytes.fromhex

# A tree of elements: a leaf is (primitive tag, content), a node (constructed tag, children).
Tree = tuple[int, Any]

PRIMITIVE_TAGS = st.sampled_from(
    [der.TAG_OCTET_STRING, der.TAG_IA5_STRING, der.context(0, constructed=False), 0x0C, 0x13]
)
CONSTRUCTED_TAGS = st.sampled_from([der.TAG_SEQUENCE, 0x31, der.context(0), der.context(3)])
TREES: st.SearchStrategy[Tree] = st.recursive(
    st.tuples(PRIMITIVE_TAGS, st.binary(max_size=300)),
    lambda children: st.tuples(CONSTRUCTED_TAGS, st.lists(children, max_size=4)),
    max_leaves=12,
)


def encode_tree(tree: Tree) -> bytes:
    tag, body = tree
    if isinstance(body, bytes):
        return der.encode_tlv(tag, body)
    return der.encode_tlv(tag, b"".join(encode_tree(child) for child in body))


def read_tree(reader: Reader) -> list[Tree]:
    """Every element left in ``reader``, entering each constructed one."""
    out: list[Tree] = []
    while not reader.at_end():
        tag = reader.peek()
        assert tag is not None
        if tag & 0x20:
            out.append((tag, read_tree(reader.enter(tag))))
        else:
            out.append((tag, reader.content(tag)))
    return out


def normal(tree: Tree) -> Tree:
    tag, body = tree
    return (tag, body if isinstance(body, bytes) else [normal(child) for child in body])


# --- round trips ----------------------------------------------------------------------------


@FAST
@given(TREES)
def test_trees_round_trip(tree: Tree) -> None:
    data = encode_tree(tree)
    assert read_tree(Reader(data)) == [normal(tree)]
    assert der.whole(data, lambda reader: reader.element(tree[0])) == data


@FAST
@given(st.integers(min_value=-(1 << 4100), max_value=1 << 4100))
def test_integers_round_trip(value: int) -> None:
    data = der.encode_integer(value)
    assert der.whole(data, Reader.integer) == value
    # The shortest form: without its first byte the content would be another value.
    content = der.whole(data, lambda reader: reader.content(der.TAG_INTEGER))
    assert len(content) == 1 or int.from_bytes(content[1:], "big", signed=True) != value


ARCS = st.integers(min_value=0, max_value=(1 << 128) - 1)


@FAST
@given(
    st.one_of(
        st.tuples(st.integers(0, 1), st.integers(0, 39)),
        st.tuples(st.just(2), ARCS),
    ),
    st.lists(ARCS, max_size=8),
)
def test_oids_round_trip(head: tuple[int, int], rest: list[int]) -> None:
    dotted = ".".join(str(arc) for arc in (*head, *rest))
    assert der.whole(der.encode_oid(dotted), Reader.oid) == dotted


def test_known_encodings() -> None:
    assert der.encode_oid("1.2.840.113549.1.1.10") == h("06092a864886f70d01010a")
    assert der.encode_integer(0) == h("020100")
    assert der.encode_integer(127) == h("02017f")
    assert der.encode_integer(128) == h("02020080")
    assert der.encode_integer(-128) == h("020180")
    assert der.encode_integer(-129) == h("0202ff7f")
    assert der.encode_length(127) == h("7f")
    assert der.encode_length(128) == h("8180")
    assert der.encode_length(65536) == h("83010000")
    assert der.context(3) == 0xA3 and der.context(1, constructed=False) == 0x81
    assert der.whole(h("0101ff"), Reader.boolean) is True
    assert der.whole(h("010100"), Reader.boolean) is False
    der.whole(h("0500"), Reader.null)
    assert der.whole(h("030207 80"), Reader.bit_string) == (b"\x80", 7)
    assert der.whole(h("0301 00"), Reader.bit_string) == (b"", 0)
    assert der.whole(h("060388 37 03"), Reader.oid) == "2.999.3"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65535, 65536, 70000])
def test_length_boundaries_round_trip(size: int) -> None:
    data = der.encode_tlv(der.TAG_OCTET_STRING, bytes(size))
    assert der.whole(data, lambda reader: reader.content(der.TAG_OCTET_STRING)) == bytes(size)


@FAST
@given(st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2049, 12, 31, 23, 59, 59)))
def test_times_round_trip(moment: datetime) -> None:
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    utc = der.encode_tlv(der.TAG_UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode())
    generalized = der.encode_tlv(der.TAG_GENERALIZED_TIME, moment.strftime("%Y%m%d%H%M%SZ").encode())
    assert der.whole(utc, Reader.time) == der.whole(generalized, Reader.time) == moment


# --- what DER forbids ---------------------------------------------------------------------------

BAD: list[tuple[str, bytes, Callable[[Reader], object]]] = [
    ("indefinite length", h("3080 0500 0000"), Reader.sequence),
    ("long form for a short length", h("048105") + bytes(5), lambda r: r.content(der.TAG_OCTET_STRING)),
    ("length with a leading zero", h("04820080") + bytes(128), lambda r: r.content(der.TAG_OCTET_STRING)),
    ("length of five bytes", h("04850000000001") + bytes(1), lambda r: r.content(der.TAG_OCTET_STRING)),
    ("reserved length 0xFF", h("04ff") + bytes(8), lambda r: r.content(der.TAG_OCTET_STRING)),
    ("high tag number", h("1f2200"), lambda r: r.content(0x1F)),
    ("wrong tag", h("0400"), Reader.sequence),
    ("constructed OCTET STRING", h("2400"), lambda r: r.content(der.TAG_OCTET_STRING)),
    ("empty INTEGER", h("0200"), Reader.integer),
    ("INTEGER with a leading 00", h("02020001"), Reader.integer),
    ("INTEGER with a leading FF", h("0202ff80"), Reader.integer),
    ("BOOLEAN 01", h("010101"), Reader.boolean),
    ("BOOLEAN of two bytes", h("0102ffff"), Reader.boolean),
    ("NULL with content", h("050100"), Reader.null),
    ("empty OID", h("0600"), Reader.oid),
    ("OID ending inside an arc", h("060281 81"), Reader.oid),
    ("OID arc with a leading 80", h("0603 2a 80 01"), Reader.oid),
    ("OID arc over the bound", der.encode_tlv(der.TAG_OID, b"\x2a" + b"\xff" * 20 + b"\x7f"), Reader.oid),
    ("empty BIT STRING", h("0300"), Reader.bit_string),
    ("BIT STRING with 8 unused bits", h("03020800"), Reader.bit_string),
    ("BIT STRING: unused bits and no byte", h("030101"), Reader.bit_string),
    ("BIT STRING padding bits set", h("03020181"), Reader.bit_string),
    ("UTCTime with seconds missing", der.encode_tlv(der.TAG_UTC_TIME, b"2406011200Z"), Reader.time),
    ("UTCTime with an offset", der.encode_tlv(der.TAG_UTC_TIME, b"240601120000+0100"), Reader.time),
    (
        "GeneralizedTime with a fraction",
        der.encode_tlv(der.TAG_GENERALIZED_TIME, b"20240601120000.5Z"),
        Reader.time,
    ),
    ("30 February", der.encode_tlv(der.TAG_UTC_TIME, b"240230120000Z"), Reader.time),
    ("trailing bytes", h("0500 00"), Reader.null),
    (
        "trailing bytes inside",
        h("3003 0500 00"),
        lambda r: der.whole(r.content(der.TAG_SEQUENCE), Reader.null),
    ),
]


@pytest.mark.parametrize(("data", "read"), [pytest.param(d, r, id=name) for name, d, r in BAD])
def test_non_der_is_refused(data: bytes, read: Callable[[Reader], object]) -> None:
    with pytest.raises(DerError) as info:
        der.whole(data, read)
    assert not isinstance(info.value, DerTruncatedError)


def test_length_overflow_and_truncation_are_truncated_errors() -> None:
    octets = lambda reader: reader.content(der.TAG_OCTET_STRING)  # noqa: E731
    for data in (b"", b"\x04", h("0484ffffffff"), h("0483"), h("0402 00")):
        with pytest.raises(DerTruncatedError):
            der.whole(data, octets)
    # An element longer than the one around it is cut short, too.
    with pytest.raises(DerTruncatedError):
        der.whole(h("3003 0402 0000"), lambda reader: octets(reader.sequence()))
    # And every proper prefix of a valid encoding.
    data = encode_tree((der.TAG_SEQUENCE, [(der.TAG_OCTET_STRING, bytes(200)), (der.context(0), [])]))
    for cut in range(len(data)):
        with pytest.raises(DerTruncatedError):
            der.whole(data[:cut], lambda reader: read_tree(reader.sequence()))
    assert issubclass(DerTruncatedError, errors.TruncatedError)


def test_nesting_is_bounded() -> None:
    def nested(depth: int) -> bytes:
        data = b""
        for _ in range(depth):
            data = der.encode_tlv(der.TAG_SEQUENCE, data)
        return data

    assert der.whole(nested(der.MAX_DEPTH), read_tree)
    with pytest.raises(DerDepthError):
        der.whole(nested(der.MAX_DEPTH + 1), read_tree)
    assert issubclass(DerDepthError, errors.LimitExceededError)


def test_explicit_and_peek() -> None:
    reader = Reader(der.encode_tlv(der.context(0), der.encode_integer(2)) + der.encode_integer(5))
    assert reader.explicit(1) is None
    inner = reader.explicit(0)
    assert inner is not None and inner.integer() == 2 and inner.at_end()
    assert reader.peek() == der.TAG_INTEGER and reader.integer() == 5
    assert reader.peek() is None and reader.explicit(0) is None
    reader.finish()
    with pytest.raises(ValueError):
        Reader(h("0400")).enter(der.TAG_OCTET_STRING)  # a primitive tag cannot be entered


def test_writers_refuse_what_they_cannot_encode() -> None:
    for dotted in ("1", "3.1", "1.40", "0.-1", "1.2.x"):
        with pytest.raises(ValueError):
            der.encode_oid(dotted)
    with pytest.raises(ValueError):
        der.encode_tlv(0x1F, b"")
    with pytest.raises(ValueError):
        der.encode_length(-1)
    with pytest.raises(ValueError):
        der.context(31)


# --- any bytes ----------------------------------------------------------------------------------

READERS: list[Callable[[Reader], object]] = [
    read_tree,
    Reader.integer,
    Reader.oid,
    Reader.boolean,
    Reader.null,
    Reader.bit_string,
    Reader.time,
    lambda reader: read_tree(reader.sequence()),
]


@FAST
@given(st.binary(max_size=400), st.sampled_from(READERS))
def test_any_bytes_read_or_raise_a_typed_error(data: bytes, read: Callable[[Reader], object]) -> None:
    try:
        der.whole(data, read)
    except DerError as exc:
        assert isinstance(exc, errors.WireError)


@FAST
@given(TREES, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_edited_trees_read_or_raise_a_typed_error(tree: Tree, edits: list[tuple[int, int]]) -> None:
    data = bytearray(encode_tree(tree))
    for offset, value in edits:
        data[offset % len(data)] = value
    try:
        elements = der.whole(bytes(data), read_tree)
    except DerError:
        return
    # What reads re-encodes to the same bytes: DER has one encoding per value.
    assert b"".join(encode_tree(element) for element in elements) == bytes(data)


def test_work_is_linear_in_the_input() -> None:
    size = 4 << 20
    cases: list[tuple[bytes, Callable[[Reader], object]]] = [
        # One huge OID arc: refused as soon as it passes the bound, not after a quadratic parse.
        (der.encode_tlv(der.TAG_OID, b"\x2a" + b"\xff" * size + b"\x7f"), Reader.oid),
        # Many small elements inside one SEQUENCE.
        (der.encode_tlv(der.TAG_SEQUENCE, h("0500") * (size // 16)), lambda r: read_tree(r.sequence())),
        # A huge INTEGER.
        (der.encode_integer(1 << (8 * size)), Reader.integer),
    ]
    for data, read in cases:
        started = time.perf_counter()
        with contextlib.suppress(DerError):
            der.whole(data, read)
        # Linear work takes well under a second here; quadratic work would take minutes.
        assert time.perf_counter() - started < 10
