"""Binary HTTP messages (RFC 9292)."""

from __future__ import annotations

import contextlib
import itertools
import json
import string
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privproc.errors import LimitExceededError, TruncatedError, WireError
from privproc.runtime.status import http_status
from privproc.wire import bhttp, varint
from privproc.wire.bhttp import (
    BhttpError,
    BhttpLimitError,
    BhttpTruncatedError,
    Fields,
    InformationalResponse,
    Limits,
    Request,
    Response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from privproc.wire.padding import MESSAGE_BUCKETS, pad_with_zeros
from tests.interop.standard_ohttp_client import decode_bhttp_response as standard_decode_response

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "rfc9292-examples.json").read_text())

Message = Request | Response


# --- helpers --------------------------------------------------------------------


def lp(data: bytes) -> bytes:
    """Length-prefixed bytes."""
    return varint.encode(len(data)) + data


def raw_fields(fields: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join(lp(name) + lp(value) for name, value in fields)


def raw_request(
    *,
    framing: int = 0,
    method: bytes = b"GET",
    scheme: bytes = b"https",
    authority: bytes = b"example.com",
    path: bytes = b"/",
    headers: Sequence[tuple[bytes, bytes]] = ((b"accept", b"*/*"),),
    content: bytes = b"",
    trailers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A request built byte by byte, with no validation, to inject bad input."""
    control = lp(method) + lp(scheme) + lp(authority) + lp(path)
    if framing == 0:
        body = lp(raw_fields(headers)) + lp(content) + lp(raw_fields(trailers))
    else:
        chunk = lp(content) if content else b""
        body = raw_fields(headers) + b"\x00" + chunk + b"\x00" + raw_fields(trailers) + b"\x00"
    return varint.encode(framing) + control + body


def fields_of(pairs: Iterable[Sequence[str]]) -> Fields:
    return tuple((name, value) for name, value in pairs)


def request_of(expected: dict[str, Any]) -> Request:
    return Request(
        expected["method"],
        expected["scheme"],
        expected["authority"],
        expected["path"],
        fields_of(expected["headers"]),
        bytes.fromhex(expected["content_hex"]),
        fields_of(expected["trailers"]),
    )


def response_of(expected: dict[str, Any]) -> Response:
    return Response(
        expected["status"],
        fields_of(expected["headers"]),
        bytes.fromhex(expected["content_hex"]),
        fields_of(expected["trailers"]),
        tuple(InformationalResponse(i["status"], fields_of(i["headers"])) for i in expected["informational"]),
    )


# A test-only indeterminate-length encoder (RFC 9292, Section 3.2), independent
# of the module's code, so that the decoder is checked against a second writer.


def _il_fields(fields: Fields) -> bytes:
    return raw_fields((n.encode(), v.encode()) for n, v in fields) + b"\x00"


def _il_content(content: bytes, chunk_size: int) -> bytes:
    chunks = [content[i : i + chunk_size] for i in range(0, len(content), chunk_size)]
    return b"".join(lp(chunk) for chunk in chunks) + b"\x00"


def _il_body(message: Message, chunk_size: int, truncate: bool) -> bytes:
    parts = [
        (_il_fields(message.headers), not message.headers),
        (_il_content(message.content, chunk_size), not message.content),
        (_il_fields(message.trailers), not message.trailers),
    ]
    if truncate:
        while parts and parts[-1][1]:
            parts.pop()
    return b"".join(part for part, _ in parts)


def indeterminate_request(req: Request, chunk_size: int = 1 << 30, truncate: bool = False) -> bytes:
    control = b"".join(lp(s.encode()) for s in (req.method, req.scheme, req.authority, req.path))
    return b"\x02" + control + _il_body(req, chunk_size, truncate)


def indeterminate_response(resp: Response, chunk_size: int = 1 << 30, truncate: bool = False) -> bytes:
    interim = b"".join(varint.encode(i.status) + _il_fields(i.headers) for i in resp.informational)
    return b"\x03" + interim + varint.encode(resp.status) + _il_body(resp, chunk_size, truncate)


def decode_either(data: bytes, limits: Limits = bhttp.DEFAULT_LIMITS) -> None:
    """Decode as both kinds; anything but a value or a WireError fails the test."""
    for decode in (decode_request, decode_response):
        with contextlib.suppress(WireError):
            decode(data, limits)


# --- strategies -----------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
NAME_CHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_lowercase
VALUE_CHARS = "".join(map(chr, range(0x20, 0x7F))) + "\t"
SCHEME_CHARS = string.ascii_letters + string.digits + "+-."
AUTHORITY_CHARS = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:[]"
PATH_CHARS = "".join(map(chr, range(0x21, 0x7F)))

tokens = st.text(TCHAR, min_size=1, max_size=8)
field_names = st.text(NAME_CHARS, min_size=1, max_size=8)
field_values = st.text(VALUE_CHARS, max_size=16).map(lambda s: s.strip(" \t"))
field_lists = st.lists(st.tuples(field_names, field_values), max_size=4).map(tuple)
schemes = st.builds(str.__add__, st.sampled_from(string.ascii_letters), st.text(SCHEME_CHARS, max_size=6))
paths = st.one_of(st.just("*"), st.text(PATH_CHARS, max_size=16).map("/".__add__))
contents = st.binary(max_size=40)

requests = st.builds(
    Request, tokens, schemes, st.text(AUTHORITY_CHARS, max_size=16), paths, field_lists, contents, field_lists
)
informationals = st.builds(InformationalResponse, st.integers(100, 199), field_lists)
responses = st.builds(
    Response,
    st.integers(200, 599),
    field_lists,
    contents,
    field_lists,
    st.lists(informationals, max_size=3).map(tuple),
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- RFC 9292, Section 5 --------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["requests"], ids=lambda v: v["name"])
def test_rfc9292_request_examples(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    expected = request_of(vector["expected"])
    assert data[0] == vector["framing_indicator"]
    assert decode_request(data) == expected
    # Section 5.1: up to `truncatable_bytes` trailing bytes can go, no more.
    keep = len(data) - vector["truncatable_bytes"]
    for end in range(keep, len(data) + 1):
        assert decode_request(data[:end]) == expected
    with pytest.raises(BhttpTruncatedError):
        decode_request(data[: keep - 1])
    if vector["encode_truncate"] is not None:
        assert encode_request(expected, truncate=vector["encode_truncate"]) == data
        # The default encoder output is the shortest of the equivalent forms.
        assert encode_request(expected) == data[:keep]
    else:
        # Our test-only writer reproduces the indeterminate-length figure.
        pad = vector["padding_bytes"]
        assert indeterminate_request(expected) + bytes(pad) == data


@pytest.mark.parametrize("vector", VECTORS["responses"], ids=lambda v: v["name"])
def test_rfc9292_response_examples(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    expected = response_of(vector["expected"])
    assert data[0] == vector["framing_indicator"]
    assert decode_response(data) == expected
    if vector["encode_truncate"] is not None:
        assert encode_response(expected, truncate=vector["encode_truncate"]) == data
    # Our test-only writer reproduces the indeterminate-length figure exactly.
    if vector["framing_indicator"] == 3:
        assert indeterminate_response(expected) == data


def test_rfc9292_response_example_details() -> None:
    vector = VECTORS["responses"][0]
    response = decode_response(bytes.fromhex(vector["hex"]))
    assert [i.status for i in response.informational] == [102, 103]
    assert response.header("Content-Length") == "51"
    assert len(response.content) == 51
    assert response.content.endswith(b"\r\n")


def test_rfc9292_request_example_keeps_host_out_of_authority() -> None:
    request = decode_request(bytes.fromhex(VECTORS["requests"][0]["hex"]))
    assert request.authority == ""
    assert request.header("Host") == "www.example.com"


# --- RFC 9458, Appendix A: the inner messages of the OHTTP example ---------------

RFC9458_REQUEST = bytes.fromhex("00034745540568747470730b6578616d706c652e636f6d012f")
RFC9458_RESPONSE = bytes.fromhex("0140c8")


def test_rfc9458_inner_request() -> None:
    request = Request("GET", "https", "example.com", "/")
    assert decode_request(RFC9458_REQUEST) == request
    assert encode_request(request) == RFC9458_REQUEST


def test_rfc9458_inner_response() -> None:
    assert decode_response(RFC9458_RESPONSE) == Response(200)
    assert encode_response(Response(200)) == RFC9458_RESPONSE


# --- truncation and padding (Section 3.8) ---------------------------------------


def test_encoder_writes_empty_sections_before_a_non_empty_one() -> None:
    base = bytes.fromhex("00034745540568747470730b6578616d706c652e636f6d012f")
    assert encode_request(Request("GET", "https", "example.com", "/", content=b"x")) == base + b"\x00\x01x"
    assert encode_request(Request("GET", "https", "example.com", "/", trailers=(("a", "b"),))) == (
        base + b"\x00\x00\x04\x01a\x01b"
    )
    assert encode_request(Request("GET", "https", "example.com", "/"), truncate=False) == base + bytes(3)
    assert encode_response(Response(204, headers=(("a", ""),))) == bytes.fromhex("0140cc03016100")


def test_informational_header_section_is_always_written() -> None:
    response = Response(200, informational=(InformationalResponse(100),))
    assert encode_response(response) == bytes.fromhex("01406400" + "40c8")
    assert decode_response(bytes.fromhex("01406400" + "40c8")) == response


def test_padding_is_accepted_at_every_truncation_point() -> None:
    request = Request("GET", "https", "example.com", "/")
    for pad in range(6):
        assert decode_request(RFC9458_REQUEST + bytes(pad)) == request
        assert decode_request(encode_request(request, padding=pad)) == request
        assert decode_request(indeterminate_request(request, truncate=True) + bytes(pad)) == request
    assert encode_request(request, padding=4) == RFC9458_REQUEST + bytes(4)


@pytest.mark.parametrize("tail", ["01", "000001", "00000000000001", "00000080", "000000ff"])
def test_non_zero_padding_is_invalid(tail: str) -> None:
    with pytest.raises(BhttpError):
        decode_request(RFC9458_REQUEST + bytes.fromhex(tail))
    with pytest.raises(BhttpError):
        decode_response(RFC9458_RESPONSE + bytes.fromhex(tail))


def test_non_minimal_integers_are_accepted() -> None:
    # RFC 9292, Section 3: integers need not use the fewest bytes.
    data = bytes.fromhex("4000" + "4003474554" + "80000005" + "6874747073" + "00" + "4001" + "2f")
    assert decode_request(data) == Request("GET", "https", "", "/")
    assert decode_response(bytes.fromhex("4001" + "c0000000000000c8")) == Response(200)


def test_decoders_accept_any_bytes_like() -> None:
    assert decode_request(bytearray(RFC9458_REQUEST)) == Request("GET", "https", "example.com", "/")
    assert decode_response(memoryview(RFC9458_RESPONSE)) == Response(200)


# --- round trips ----------------------------------------------------------------


@FAST
@given(requests)
def test_request_round_trip(request: Request) -> None:
    assert decode_request(encode_request(request)) == request


@FAST
@given(responses)
def test_response_round_trip(response: Response) -> None:
    assert decode_response(encode_response(response)) == response


@FAST
@given(requests, st.integers(0, 16))
def test_request_round_trip_untruncated_and_padded(request: Request, pad: int) -> None:
    data = encode_request(request, truncate=False, padding=pad)
    assert len(data) >= len(encode_request(request)) + pad
    assert decode_request(data) == request


@FAST
@given(responses, st.integers(0, 16))
def test_response_round_trip_untruncated_and_padded(response: Response, pad: int) -> None:
    assert decode_response(encode_response(response, truncate=False, padding=pad)) == response


# --- size buckets (what the relay sees: privproc.wire.padding) -----------------


@FAST
@given(requests, responses)
def test_messages_padded_to_a_bucket_decode_to_the_same_value(request: Request, response: Response) -> None:
    padded_request = pad_with_zeros(encode_request(request), MESSAGE_BUCKETS)
    padded_response = pad_with_zeros(encode_response(response), MESSAGE_BUCKETS)
    assert len(padded_request) in MESSAGE_BUCKETS and len(padded_response) in MESSAGE_BUCKETS
    assert decode_request(padded_request) == request
    assert decode_response(padded_response) == response


@FAST
@given(st.integers(200, 599), field_lists, contents)
def test_padded_responses_are_valid_for_an_independent_decoder(
    status: int, headers: Fields, content: bytes
) -> None:
    # Padding after a truncated message reads as empty parts, then zeros (RFC 9292, Section 3.8).
    for response in (Response(status), Response(status, headers), Response(status, headers, content)):
        padded = pad_with_zeros(encode_response(response), MESSAGE_BUCKETS)
        assert standard_decode_response(padded) == (status, list(response.headers), response.content)


@FAST
@given(requests, st.integers(1, 9), st.booleans(), st.integers(0, 8))
def test_indeterminate_request_decodes_to_the_same_value(
    request: Request, chunk_size: int, truncate: bool, pad: int
) -> None:
    data = indeterminate_request(request, chunk_size, truncate) + bytes(pad)
    assert decode_request(data) == request


@FAST
@given(responses, st.integers(1, 9), st.booleans(), st.integers(0, 8))
def test_indeterminate_response_decodes_to_the_same_value(
    response: Response, chunk_size: int, truncate: bool, pad: int
) -> None:
    data = indeterminate_response(response, chunk_size, truncate) + bytes(pad)
    assert decode_response(data) == response


# --- robustness -----------------------------------------------------------------

TIGHT = Limits(
    max_message_bytes=64, max_fields=2, max_field_section_bytes=16, max_content_bytes=8, max_informational=1
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_give_a_value_or_a_wire_error(data: bytes) -> None:
    decode_either(data)
    decode_either(data, TIGHT)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([0, 1, 2, 3]), st.binary(max_size=48))
def test_arbitrary_bodies_after_a_valid_framing_indicator(framing: int, rest: bytes) -> None:
    decode_either(bytes([framing]) + rest)


_mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.just(0)),
)


def mutate(data: bytes, ops: Iterable[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, byte in ops:
        i = where % (len(buf) + 1)
        if op == "flip" and i < len(buf):
            buf[i] ^= byte
        elif op == "truncate":
            del buf[i:]
        elif op == "insert":
            buf.insert(i, byte)
        elif op == "delete" and i < len(buf):
            del buf[i]
    return bytes(buf)


def _encodings(message: Message) -> list[bytes]:
    if isinstance(message, Request):
        return [encode_request(message), indeterminate_request(message, 3)]
    return [encode_response(message), indeterminate_response(message, 3)]


@settings(max_examples=300, deadline=None)
@given(st.one_of(requests, responses), st.lists(_mutations, min_size=1, max_size=3))
def test_mutated_valid_messages_give_a_value_or_a_wire_error(
    message: Message, ops: list[tuple[str, int, int]]
) -> None:
    for data in _encodings(message):
        decode_either(mutate(data, ops))
        decode_either(mutate(data, ops), TIGHT)


@pytest.mark.parametrize("vector", VECTORS["requests"] + VECTORS["responses"], ids=lambda v: v["name"])
def test_every_prefix_and_byte_change_of_the_rfc_examples(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    for end in range(len(data)):
        decode_either(data[:end])
    for i in range(len(data)):
        for byte in (0x00, 0x3F, 0x40, 0x80, 0xC0, 0xFF):
            decode_either(data[:i] + bytes([byte]) + data[i + 1 :])


# --- limits ---------------------------------------------------------------------


def _request_with(**kwargs: Any) -> Request:
    return Request("GET", "https", "example.com", "/", **kwargs)


def _both_forms(request: Request) -> list[bytes]:
    return [encode_request(request), indeterminate_request(request, 2)]


def test_limits_reject_bad_values() -> None:
    with pytest.raises(ValueError):
        Limits(max_fields=-1)
    with pytest.raises(ValueError):
        Limits(max_content_bytes=True)


def test_max_message_bytes() -> None:
    assert decode_response(RFC9458_RESPONSE, Limits(max_message_bytes=3)) == Response(200)
    with pytest.raises(BhttpLimitError):
        decode_response(RFC9458_RESPONSE, Limits(max_message_bytes=2))
    # Padding counts: it is part of what the peer made us read.
    with pytest.raises(BhttpLimitError):
        decode_response(RFC9458_RESPONSE + bytes(10), Limits(max_message_bytes=12))


@pytest.mark.parametrize("section", ["headers", "trailers"])
def test_max_fields(section: str) -> None:
    request = _request_with(**{section: (("a", "1"), ("b", "2"), ("c", "3"))})
    for data in _both_forms(request):
        assert decode_request(data, Limits(max_fields=3)) == request
        with pytest.raises(BhttpLimitError):
            decode_request(data, Limits(max_fields=2))


def test_max_fields_applies_to_informational_sections() -> None:
    response = Response(200, informational=(InformationalResponse(103, (("link", "a"), ("link", "b"))),))
    for data in (encode_response(response), indeterminate_response(response)):
        assert decode_response(data, Limits(max_fields=2)) == response
        with pytest.raises(BhttpLimitError):
            decode_response(data, Limits(max_fields=1))


@pytest.mark.parametrize("section", ["headers", "trailers"])
def test_max_field_section_bytes(section: str) -> None:
    # Field lines take 1 + 1 + 1 + 4 = 7 bytes each; the section is 14 bytes.
    request = _request_with(**{section: (("a", "1234"), ("b", "5678"))})
    for data in _both_forms(request):
        assert decode_request(data, Limits(max_field_section_bytes=14)) == request
        with pytest.raises(BhttpLimitError):
            decode_request(data, Limits(max_field_section_bytes=13))


def test_max_field_section_bytes_checks_one_long_value() -> None:
    request = _request_with(headers=(("a", "x" * 100),))
    for data in _both_forms(request):
        with pytest.raises(BhttpLimitError):
            decode_request(data, Limits(max_field_section_bytes=50))


def test_max_content_bytes() -> None:
    request = _request_with(content=b"0123456789")
    for data in _both_forms(request):
        assert decode_request(data, Limits(max_content_bytes=10)) == request
        with pytest.raises(BhttpLimitError):
            decode_request(data, Limits(max_content_bytes=9))


def test_max_informational() -> None:
    response = Response(200, informational=(InformationalResponse(100),) * 3)
    for data in (encode_response(response), indeterminate_response(response)):
        assert decode_response(data, Limits(max_informational=3)) == response
        with pytest.raises(BhttpLimitError):
            decode_response(data, Limits(max_informational=2))


def test_many_informational_responses_stop_at_the_default_limit() -> None:
    data = b"\x01" + bytes.fromhex("406400") * 10_000 + bytes.fromhex("40c8")
    with pytest.raises(BhttpLimitError):
        decode_response(data)


HUGE = varint.encode(varint.MAX_VALUE)
PERMISSIVE = Limits(
    max_message_bytes=1 << 62,
    max_fields=1 << 62,
    max_field_section_bytes=1 << 62,
    max_content_bytes=1 << 62,
    max_informational=1 << 62,
)

_control = lp(b"GET") + lp(b"https") + lp(b"") + lp(b"/")
HUGE_LENGTH_MESSAGES = {
    "known header section": (decode_request, b"\x00" + _control + HUGE),
    "known content": (decode_request, b"\x00" + _control + b"\x00" + HUGE),
    "known trailer section": (decode_request, b"\x00" + _control + b"\x00\x00" + HUGE),
    "indeterminate field name": (decode_request, b"\x02" + _control + HUGE),
    "indeterminate field value": (decode_request, b"\x02" + _control + b"\x01a" + HUGE),
    "indeterminate chunk": (decode_request, b"\x02" + _control + b"\x00" + HUGE),
    "informational section": (decode_response, b"\x01\x40\x64" + HUGE),
}


@pytest.mark.parametrize("case", HUGE_LENGTH_MESSAGES, ids=str)
def test_huge_declared_length_fails_fast_without_allocating(case: str) -> None:
    decode, data = HUGE_LENGTH_MESSAGES[case]
    tracemalloc.start()
    try:
        with pytest.raises(BhttpLimitError):
            decode(data)
        # With no limit in the way, it is the missing input that stops it.
        with pytest.raises(WireError) as caught:
            decode(data, PERMISSIVE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(caught.value, BhttpTruncatedError | BhttpLimitError)
    assert peak < 64 << 10


@pytest.mark.parametrize("field", ["method", "scheme", "authority", "path"])
def test_huge_control_data_length_is_truncation(field: str) -> None:
    parts = {"method": b"GET", "scheme": b"https", "authority": b"", "path": b"/"}
    data = b"\x00"
    for name, value in parts.items():
        if name == field:
            data += HUGE + value
            break
        data += lp(value)
    with pytest.raises(BhttpTruncatedError):
        decode_request(data)


def test_error_classes_are_the_shared_ones() -> None:
    assert issubclass(BhttpTruncatedError, TruncatedError)
    assert issubclass(BhttpLimitError, LimitExceededError)
    assert http_status(BhttpLimitError("x")) == 413
    assert BhttpTruncatedError("x").reason == "truncated"


# --- invalid messages -----------------------------------------------------------

INVALID_REQUESTS: dict[str, bytes] = {
    "empty input": b"",
    "framing only": b"\x00",
    "framing 4": b"\x04" + RFC9458_REQUEST[1:],
    "framing 63": b"\x3f" + RFC9458_REQUEST[1:],
    "response framing": b"\x01" + RFC9458_REQUEST[1:],
    "indeterminate response framing": b"\x03" + RFC9458_REQUEST[1:],
    "control data cut short": RFC9458_REQUEST[:-1],
    "empty method": raw_request(method=b""),
    "method with space": raw_request(method=b"G T"),
    "method with non-ascii": raw_request(method=b"G\xc3\x89T"),
    "empty scheme": raw_request(scheme=b""),
    "scheme starting with digit": raw_request(scheme=b"1http"),
    "scheme with colon": raw_request(scheme=b"https:"),
    "authority with userinfo": raw_request(authority=b"user@example.com"),
    "authority with slash": raw_request(authority=b"example.com/x"),
    "authority with space": raw_request(authority=b"example .com"),
    "authority with NUL": raw_request(authority=b"example.com\x00"),
    "empty path": raw_request(path=b""),
    "path not starting with slash": raw_request(path=b"@evil.example/"),
    "path with space": raw_request(path=b"/a b"),
    "path with CRLF": raw_request(path=b"/\r\nx"),
    "path with DEL": raw_request(path=b"/\x7f"),
    "uppercase field name": raw_request(headers=[(b"Accept", b"*/*")]),
    "pseudo field": raw_request(headers=[(b":path", b"/")]),
    "field name with space": raw_request(headers=[(b"a b", b"c")]),
    "field name non-ascii": raw_request(headers=[(b"\xe2\x84\xaaey", b"c")]),
    "CR in value": raw_request(headers=[(b"a", b"x\ry")]),
    "LF in value": raw_request(headers=[(b"a", b"x\ny")]),
    "NUL in value": raw_request(headers=[(b"a", b"x\x00y")]),
    "other control in value": raw_request(headers=[(b"a", b"x\x01y")]),
    "DEL in value": raw_request(headers=[(b"a", b"x\x7fy")]),
    "obs-text in value": raw_request(headers=[(b"a", b"caf\xe9")]),
    "utf-8 in value": raw_request(headers=[(b"a", b"caf\xc3\xa9")]),
    "leading space in value": raw_request(headers=[(b"a", b" x")]),
    "trailing tab in value": raw_request(headers=[(b"a", b"x\t")]),
    "only space value": raw_request(headers=[(b"a", b" ")]),
    "bad trailer name": raw_request(trailers=[(b"X", b"y")]),
    "bad trailer value": raw_request(trailers=[(b"x", b"y\n")]),
    "indeterminate bad value": raw_request(framing=2, headers=[(b"a", b"x\r\ny")]),
    "indeterminate uppercase name": raw_request(framing=2, headers=[(b"A", b"x")]),
    "empty name in known section": b"\x00" + _control + b"\x02\x00\x00",
    "field line overruns section": b"\x00" + _control + b"\x03\x01a\x05hello",
    "section length shorter than line": b"\x00" + _control + b"\x01\x01a\x00",
    "indeterminate headers unterminated": b"\x02" + _control + b"\x01a\x01b",
    "indeterminate content unterminated": b"\x02" + _control + b"\x00\x01x",
    "indeterminate trailers unterminated": b"\x02" + _control + b"\x00\x00\x01a\x01b",
    "known content cut short": b"\x00" + _control + b"\x00\x05abc",
    "known trailers cut short": b"\x00" + _control + b"\x00\x00\x05\x01a",
    "varint cut short": b"\x00" + _control + b"\x40",
    "non-zero byte after message": raw_request() + b"\x00\x07",
}


@pytest.mark.parametrize("case", INVALID_REQUESTS, ids=str)
def test_invalid_requests(case: str) -> None:
    with pytest.raises(BhttpError):
        decode_request(INVALID_REQUESTS[case])


INVALID_RESPONSES: dict[str, bytes] = {
    "empty input": b"",
    "framing only": b"\x01",
    "request framing": bytes.fromhex("0040c8"),
    "framing 5": bytes.fromhex("0540c8"),
    "status 0": bytes.fromhex("0100"),
    "status 99": bytes.fromhex("014063"),
    "status 600": bytes.fromhex("014258"),
    "status 1000": bytes.fromhex("0143e8"),
    "informational without final": bytes.fromhex("01406400"),
    "informational section cut": bytes.fromhex("014064"),
    "informational then bad status": bytes.fromhex("014064004258"),
    "indeterminate informational unterminated": bytes.fromhex("034064016101"),
    "bad header in final": bytes.fromhex("0140c804014101") + b"x",
    "bad padding": bytes.fromhex("0140c8000000000001"),
}


@pytest.mark.parametrize("case", INVALID_RESPONSES, ids=str)
def test_invalid_responses(case: str) -> None:
    with pytest.raises(BhttpError):
        decode_response(INVALID_RESPONSES[case])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", BhttpTruncatedError),
        (RFC9458_REQUEST[:-1], BhttpTruncatedError),
        (b"\x02" + _control + b"\x01a\x01b", BhttpTruncatedError),
        (b"\x00" + _control + b"\x03\x01a\x05hello", BhttpError),
        (b"\x09", BhttpError),
    ],
)
def test_truncation_is_told_apart_from_malformation(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        decode_request(data)
    # A field line running out of its own section is not fixed by more input.
    if error is BhttpError:
        assert not isinstance(caught.value, TruncatedError)


def test_valid_edge_values_are_accepted() -> None:
    data = raw_request(
        method=b"M-SEARCH",
        scheme=b"coap+tcp",
        authority=b"[::1]:8443",
        path=b"*",
        headers=[(b"x", b""), (b"y", b"a \t b"), (b"!#$%&'*+-.^_`|~09az", b"~")],
    )
    request = decode_request(data)
    assert request.method == "M-SEARCH"
    assert request.headers[0] == ("x", "")
    assert request.header("y") == "a \t b"
    assert encode_request(request, truncate=False) == data


def test_status_boundaries() -> None:
    for status in (100, 199):
        response = Response(200, informational=(InformationalResponse(status),))
        assert decode_response(encode_response(response)) == response
    for status in (200, 599):
        assert decode_response(encode_response(Response(status))).status == status


# --- encoder validation -----------------------------------------------------------

INVALID_VALUES: dict[str, Request | Response] = {
    "empty method": Request("", "https", "example.com", "/"),
    "method with space": Request("G T", "https", "example.com", "/"),
    "non-ascii method": Request("GÉT", "https", "example.com", "/"),
    "bad scheme": Request("GET", "1https", "example.com", "/"),
    "authority userinfo": Request("GET", "https", "u@example.com", "/"),
    "relative path": Request("GET", "https", "example.com", "a"),
    "uppercase header name": _request_with(headers=(("Accept", "*/*"),)),
    "empty header name": _request_with(headers=(("", "x"),)),
    "CR in header value": _request_with(headers=(("a", "x\ry"),)),
    "LF in trailer value": _request_with(trailers=(("a", "x\ny"),)),
    "non-ascii value": _request_with(headers=(("a", "café"),)),
    "padded value": _request_with(headers=(("a", "x "),)),
    "final status 199": Response(199),
    "final status 600": Response(600),
    "informational status 200": Response(200, informational=(InformationalResponse(200),)),
    "informational status 99": Response(200, informational=(InformationalResponse(99),)),
    "response header uppercase": Response(200, headers=(("X", "y"),)),
}


@pytest.mark.parametrize("case", INVALID_VALUES, ids=str)
def test_encoders_reject_invalid_values(case: str) -> None:
    message = INVALID_VALUES[case]
    with pytest.raises(ValueError):
        if isinstance(message, Request):
            encode_request(message)
        else:
            encode_response(message)


def test_encoders_reject_wrong_types_and_padding() -> None:
    with pytest.raises(TypeError):
        encode_request(_request_with(content="text"))
    with pytest.raises(TypeError):
        encode_request(Request(b"GET", "https", "", "/"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_request(_request_with(), padding=-1)
    with pytest.raises(ValueError):
        encode_response(Response(True))  # bool is not a status code


# --- error messages carry no user data ----------------------------------------

SECRET = b"s3cr3t-token"


@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (decode_request, raw_request(headers=[(b"x-" + SECRET, b"v\n")])),
        (decode_request, raw_request(headers=[(b"X-" + SECRET, b"v")])),
        (decode_request, raw_request(path=b"/" + SECRET + b" ")),
        (decode_request, raw_request(authority=SECRET + b"@x")),
        (decode_request, raw_request(content=SECRET) + SECRET),
        (decode_request, raw_request(content=SECRET)[:-3]),
        (decode_response, bytes.fromhex("0140c8") + lp(b"\x01a" + lp(SECRET + b"\r"))),
    ],
)
def test_decode_errors_do_not_echo_input(decode: Callable[[bytes], object], data: bytes) -> None:
    with pytest.raises(WireError) as caught:
        decode(data)
    text = str(caught.value) + repr(caught.value.args)
    assert SECRET.decode() not in text
    assert len(str(caught.value)) < 60


def test_encode_errors_do_not_echo_input() -> None:
    secret = SECRET.decode()
    for message in (
        _request_with(headers=(("x", secret + "\n"),)),
        _request_with(headers=((secret.upper(), "v"),)),
        Request("GET", "https", secret + "@host", "/"),
    ):
        with pytest.raises(ValueError) as caught:
            encode_request(message)
        assert secret not in str(caught.value).lower()


# --- accessors ------------------------------------------------------------------


def test_header_lookup_is_case_insensitive_and_returns_the_first() -> None:
    request = _request_with(headers=(("accept", "a"), ("accept", "b"), ("key", "k")))
    assert request.header("Accept") == "a"
    assert request.header("ACCEPT") == "a"
    assert request.header("missing") is None
    assert request.header("KEY") == "k"
    # KELVIN SIGN lowercases to "k" under str.lower(); it must not match.
    assert request.header("\u212aey") is None
    assert Response(200, headers=(("etag", '"x"'),)).header("ETag") == '"x"'
    assert Response(200).header("etag") is None


def test_values_are_immutable_and_hashable() -> None:
    request = decode_request(RFC9458_REQUEST)
    with pytest.raises(AttributeError):
        request.method = "POST"  # type: ignore[misc]
    assert hash(request) == hash(Request("GET", "https", "example.com", "/"))


# --- indeterminate-length encoding (Section 3.2) ----------------------------------


def test_encoder_reproduces_the_rfc_indeterminate_length_figures() -> None:
    request = next(v for v in VECTORS["requests"] if v["framing_indicator"] == 2)
    data = bytes.fromhex(request["hex"])
    expected = request_of(request["expected"])
    padded = encode_request(expected, indeterminate=True, truncate=False, padding=request["padding_bytes"])
    assert padded == data
    response = next(v for v in VECTORS["responses"] if v["framing_indicator"] == 3)
    assert encode_response(
        response_of(response["expected"]), indeterminate=True, truncate=False
    ) == bytes.fromhex(response["hex"])


@FAST
@given(st.one_of(requests, responses), st.integers(1, 9), st.booleans(), st.integers(0, 8))
def test_indeterminate_encoding_matches_the_independent_writer_and_round_trips(
    message: Message, chunk_size: int, truncate: bool, pad: int
) -> None:
    if isinstance(message, Request):
        data = encode_request(
            message, indeterminate=True, chunk_size=chunk_size, truncate=truncate, padding=pad
        )
        assert data == indeterminate_request(message, chunk_size, truncate) + bytes(pad)
        assert decode_request(data) == message
    else:
        data = encode_response(
            message, indeterminate=True, chunk_size=chunk_size, truncate=truncate, padding=pad
        )
        assert data == indeterminate_response(message, chunk_size, truncate) + bytes(pad)
        assert decode_response(data) == message


@FAST
@given(st.one_of(requests, responses), st.lists(st.binary(max_size=12), max_size=5))
def test_piece_by_piece_encoding_is_one_indeterminate_message(message: Message, pieces: list[bytes]) -> None:
    content = b"".join(pieces)
    body = b"".join(bhttp.encode_content_chunk(piece) for piece in pieces)
    if isinstance(message, Request):
        head = bhttp.encode_request_head(
            Request(message.method, message.scheme, message.authority, message.path, message.headers)
        )
        data = head + body + bhttp.encode_end(message.trailers, padding=2)
        assert decode_request(data) == Request(
            message.method,
            message.scheme,
            message.authority,
            message.path,
            message.headers,
            content,
            message.trailers,
        )
    else:
        head = bhttp.encode_response_head(
            Response(message.status, message.headers, informational=message.informational)
        )
        data = head + body + bhttp.encode_end(message.trailers)
        assert decode_response(data) == Response(
            message.status, message.headers, content, message.trailers, message.informational
        )


def test_piece_by_piece_encoding_refuses_what_it_cannot_write() -> None:
    assert bhttp.encode_content_chunk(b"") == b""
    with pytest.raises(ValueError, match="chunks"):
        bhttp.encode_request_head(_request_with(content=b"x"))
    with pytest.raises(ValueError, match="chunks"):
        bhttp.encode_response_head(Response(200, trailers=(("a", "b"),)))
    with pytest.raises(ValueError, match="chunk_size"):
        encode_request(_request_with(content=b"x"), indeterminate=True, chunk_size=0)
    with pytest.raises(ValueError):
        bhttp.encode_end((("Bad Name", "v"),))


# --- incremental decoding ---------------------------------------------------------


def stream_decode(
    data: bytes, *, response: bool, cuts: Sequence[int] = (), limits: Limits = bhttp.DEFAULT_LIMITS
) -> Message:
    """Decode through MessageDecoder, ``data`` cut at ``cuts``; the events rebuilt into a message."""
    decoder = bhttp.MessageDecoder(response=response, limits=limits)
    events: list[bhttp.Event] = []
    points = sorted(set(cuts) | {0, len(data)})
    for start, end in itertools.pairwise(points):
        decoder.receive_data(data[start:end])
        events += decoder.events()
    decoder.receive_eof()
    events += decoder.events()
    assert isinstance(events[-1], bhttp.EndOfMessage)
    assert decoder.next_event() == events[-1]  # it stays at the end
    content = b"".join(e.data for e in events if isinstance(e, bhttp.ContentChunk))
    assert all(e.data for e in events if isinstance(e, bhttp.ContentChunk))
    trailers = events[-1].trailers
    head = next(e for e in events if isinstance(e, bhttp.RequestHead | bhttp.ResponseHead))
    if isinstance(head, bhttp.RequestHead):
        return Request(head.method, head.scheme, head.authority, head.path, head.headers, content, trailers)
    interim = tuple(e for e in events if isinstance(e, InformationalResponse))
    return Response(head.status, head.headers, content, trailers, interim)


@FAST
@given(st.one_of(requests, responses), st.integers(1, 9), st.lists(st.integers(0, 400), max_size=10))
def test_incremental_decoder_reads_both_forms_under_any_split(
    message: Message, chunk_size: int, cuts: list[int]
) -> None:
    if isinstance(message, Response):
        extra = encode_response(message, indeterminate=True, chunk_size=chunk_size)
    else:
        extra = encode_request(message, indeterminate=True, chunk_size=chunk_size)
    response = isinstance(message, Response)
    for data in (*_encodings(message), extra):
        assert stream_decode(data, response=response, cuts=cuts) == message


def _same_outcome(data: bytes, limits: Limits = bhttp.DEFAULT_LIMITS, cuts: Sequence[int] = ()) -> None:
    """The incremental decoder accepts exactly what the whole-message decoder accepts, as the same message."""
    for response, decode in ((False, decode_request), (True, decode_response)):
        try:
            whole: Message | None = decode(data, limits)
        except WireError:
            whole = None
        try:
            streamed: Message | None = stream_decode(data, response=response, cuts=cuts, limits=limits)
        except WireError:
            streamed = None
        assert streamed == whole


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.lists(st.integers(0, 64), max_size=6))
def test_incremental_decoder_agrees_with_the_whole_decoder_on_any_bytes(data: bytes, cuts: list[int]) -> None:
    _same_outcome(data, cuts=cuts)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(requests, responses),
    st.lists(_mutations, min_size=1, max_size=3),
    st.lists(st.integers(0, 300), max_size=6),
)
def test_incremental_decoder_agrees_on_mutated_messages(
    message: Message, ops: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    for data in _encodings(message):
        _same_outcome(mutate(data, ops), cuts=cuts)
        _same_outcome(mutate(data, ops), TIGHT, cuts=cuts)


@pytest.mark.parametrize("vector", VECTORS["requests"] + VECTORS["responses"], ids=lambda v: v["name"])
def test_incremental_decoder_agrees_on_every_prefix_and_byte_change_of_the_rfc_examples(
    vector: dict[str, Any],
) -> None:
    data = bytes.fromhex(vector["hex"])
    for end in range(len(data)):
        _same_outcome(data[:end], cuts=[end // 2])
    for i in range(len(data)):
        for byte in (0x00, 0x40, 0xFF):
            _same_outcome(data[:i] + bytes([byte]) + data[i + 1 :], cuts=[i])


def test_content_comes_out_before_the_message_ends() -> None:
    head = bhttp.encode_request_head(_request_with(headers=(("a", "b"),)))
    decoder = bhttp.MessageDecoder(response=False)
    decoder.receive_data(head)
    assert decoder.events() == [bhttp.RequestHead("GET", "https", "example.com", "/", (("a", "b"),))]
    decoder.receive_data(bhttp.encode_content_chunk(b"hello")[:4])  # length and 3 of 5 bytes
    assert decoder.events() == [bhttp.ContentChunk(b"hel")]
    decoder.receive_data(b"lo" + bhttp.encode_content_chunk(b" world"))
    assert decoder.events() == [bhttp.ContentChunk(b"lo"), bhttp.ContentChunk(b" world")]
    decoder.receive_data(bhttp.encode_end((("t", "1"),), padding=3))
    assert decoder.next_event() is bhttp.NEED_DATA  # the end only comes with the end of input
    decoder.receive_eof()
    assert decoder.events() == [bhttp.EndOfMessage((("t", "1"),))]


def test_known_length_content_streams_too() -> None:
    data = encode_response(Response(200, content=b"0123456789"))
    decoder = bhttp.MessageDecoder(response=True)
    decoder.receive_data(data[:-4])
    assert decoder.events() == [bhttp.ResponseHead(200), bhttp.ContentChunk(b"012345")]


def test_truncated_stream_fails_after_what_arrived_and_stays_failed() -> None:
    data = encode_request(_request_with(content=b"0123456789"), indeterminate=True, chunk_size=4)
    decoder = bhttp.MessageDecoder(response=False)
    decoder.receive_data(data[:-2])  # one byte into the third chunk, "89"
    events = decoder.events()
    assert [e for e in events if isinstance(e, bhttp.ContentChunk)] == [
        bhttp.ContentChunk(b"0123"),
        bhttp.ContentChunk(b"4567"),
        bhttp.ContentChunk(b"8"),
    ]
    decoder.receive_eof()
    with pytest.raises(BhttpTruncatedError):
        decoder.next_event()
    with pytest.raises(BhttpTruncatedError):
        decoder.next_event()
    with pytest.raises(BhttpTruncatedError):
        decoder.receive_data(b"x")


def test_non_zero_padding_fails_as_it_arrives() -> None:
    decoder = bhttp.MessageDecoder(response=True)
    decoder.receive_data(RFC9458_RESPONSE + bytes(5))
    assert decoder.events() == [bhttp.ResponseHead(200)]
    decoder.receive_data(b"\x00\x01")
    with pytest.raises(BhttpError, match="padding"):
        decoder.next_event()


def test_incremental_message_limit_counts_every_byte() -> None:
    decoder = bhttp.MessageDecoder(response=True, limits=Limits(max_message_bytes=8))
    decoder.receive_data(RFC9458_RESPONSE + bytes(5))
    with pytest.raises(BhttpLimitError):
        decoder.receive_data(b"\x00")


@pytest.mark.parametrize("case", HUGE_LENGTH_MESSAGES, ids=str)
def test_incremental_decoder_fails_fast_on_huge_declared_lengths(case: str) -> None:
    decode, data = HUGE_LENGTH_MESSAGES[case]
    tracemalloc.start()
    try:
        decoder = bhttp.MessageDecoder(response=decode is decode_response)
        decoder.receive_data(data)
        with pytest.raises(BhttpLimitError):
            decoder.events()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10


def test_incremental_decoder_byte_at_a_time_is_linear() -> None:
    big = encode_request(
        _request_with(headers=(("a", "v" * 60000),), content=bytes(200000)),
        indeterminate=True,
        chunk_size=1000,
    )
    decoder = bhttp.MessageDecoder(response=False)
    started = time.perf_counter()
    content = 0
    for i in range(len(big)):
        decoder.receive_data(big[i : i + 1])
        content += sum(len(e.data) for e in decoder.events() if isinstance(e, bhttp.ContentChunk))
    decoder.receive_eof()
    assert isinstance(decoder.next_event(), bhttp.EndOfMessage)
    assert content == 200000
    assert time.perf_counter() - started < 20
