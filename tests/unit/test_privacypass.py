"""RFC 9577 / RFC 9578 framing: challenge and redemption vectors, header vectors, properties."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import WireError
from privproc.wire import privacypass as pp
from tests.support import load_vector

V = load_vector("rfc9577-testvectors.json")
h = bytes.fromhex


REDEMPTION = [v for v in V["challenge_redemption"] if "issuer_name" in v]
GREASE = [v for v in V["challenge_redemption"] if "issuer_name" not in v]


@pytest.mark.parametrize("vector", REDEMPTION, ids=lambda v: v["token_authenticator_input"][:12])
def test_rfc9577_challenge_and_authenticator_input(vector: dict[str, str]) -> None:
    token_type = int(vector["token_type"], 16)
    origins = h(vector["origin_info"]).decode()
    challenge = pp.TokenChallenge(
        token_type,
        h(vector["issuer_name"]).decode(),
        h(vector["redemption_context"]),
        tuple(origins.split(",")) if origins else (),
    )
    assert pp.TokenChallenge.decode(challenge.encode()) == challenge
    expected = h(vector["token_authenticator_input"])
    got = pp.token_authenticator_input(
        token_type, h(vector["nonce"]), challenge.digest(), h(vector["token_key_id"])
    )
    assert got == expected


def test_rfc9577_grease_token_type_is_refused_typed() -> None:
    assert GREASE and all(v["token_type"] == "0000" for v in GREASE)
    for vector in GREASE:
        with pytest.raises(WireError):
            pp.Token.decode(h(vector["token_authenticator_input"]) + bytes(256))


def _header_vectors() -> list[tuple[str, list[dict[str, str]]]]:
    """Unfold the RFC's header test vectors: each header with its expected challenges."""
    raw = V["http_header_section_raw"].split("~~~")[1]
    out = []
    for block in raw.strip().split("\n\n"):
        if block.startswith("WWW-Authenticate: "):
            out[-1] = (block.removeprefix("WWW-Authenticate: ").replace("\n", ""), out[-1][1])
            continue
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            match = re.match(r"^([a-z-]+-\d): (.*)$", line)
            if match:
                key = match.group(1)
                fields[key] = match.group(2)
            else:
                fields[key] += line
        expected = []
        for i in range(4):
            if f"token-type-{i}" in fields:
                expected.append({k.rsplit("-", 1)[0]: v for k, v in fields.items() if k.endswith(f"-{i}")})
        out.append(("", expected))
    return out


@pytest.mark.parametrize(("header", "expected"), _header_vectors())
def test_rfc9577_header_vectors(header: str, expected: list[dict[str, str]]) -> None:
    usable = [e for e in expected if int(e["token-type"], 16) in (1, 2)]
    parsed = pp.parse_www_authenticate(header)
    assert len(parsed) == len(usable)
    for challenge, want in zip(parsed, usable, strict=True):
        assert challenge.challenge.encode() == h(want["token-challenge"])
        assert challenge.token_key == h(want["token-key"])
        assert challenge.max_age == int(want["max-age"])


def test_challenge_header_round_trip_and_authorization() -> None:
    challenge = pp.Challenge(
        pp.TokenChallenge(2, "acs.privproc.local", bytes(32), ("privproc.local",)), b"k" * 300, 60
    )
    assert pp.Challenge.parse(challenge.header_value()) == challenge
    token = pp.Token(2, bytes(32), bytes(range(32)), bytes(32), b"\x07" * 256)
    assert pp.parse_authorization(pp.authorization_header(token)) == token
    unpadded = pp.b64url_encode(token.encode()).rstrip("=")
    assert pp.parse_authorization('privatetoken token="' + unpadded + '"') == token
    # Unknown credential parameters are ignored (RFC 9577 §2.2 "MUST be ignored").
    assert pp.parse_authorization(pp.authorization_header(token) + ', extra="x"') == token


@pytest.mark.parametrize(
    ("data", "padded"),
    [(b"", ""), (b"\x00", "AA=="), (b"\x00\x01", "AAE="), (b"\xfb\xff", "-_8="), (b"abc", "YWJj")],
)
def test_b64url_is_sent_padded_and_read_with_or_without_padding(data: bytes, padded: str) -> None:
    assert pp.b64url_encode(data) == padded
    assert pp.b64url_decode(padded) == data == pp.b64url_decode(padded.rstrip("="))


@pytest.mark.parametrize(
    "bad", ["A", "AA=", "AA===", "AAA==", "AB==", "AB", "+/8=", "AA==AA==", "AA AA", "A=A="]
)
def test_b64url_refuses_what_rfc4648_does_not_define(bad: str) -> None:
    with pytest.raises(WireError):
        pp.b64url_decode(bad)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        'PrivateToken token="!!"',
        'PrivateToken token="AAEC", token="AAEC"',
        'PrivateToken extra="x"',
        "PrivateToken",
        'PrivateToken token="' + pp.b64url_encode(b"\x00\x09" + bytes(400)) + '"',
    ],
)
def test_bad_authorization_is_typed(header: str) -> None:
    with pytest.raises(WireError):
        pp.parse_authorization(header)


def test_token_request_framing() -> None:
    req = pp.TokenRequest(2, 0x08, bytes(256))
    assert pp.TokenRequest.decode(req.encode()) == req
    for bad in (req.encode()[:-1], req.encode() + b"\x00", b"\x00\x03" + bytes(300)):
        with pytest.raises(WireError):
            pp.TokenRequest.decode(bad)
    assert pp.decode_token_response(1, bytes(145)) == bytes(145)
    with pytest.raises(WireError):
        pp.decode_token_response(2, bytes(255))


def test_issuer_directory_round_trip() -> None:
    directory = pp.IssuerDirectory(
        "/token-request", (pp.DirectoryKey(2, b"key", 1700000000), pp.DirectoryKey(1, b"k1"))
    )
    assert pp.IssuerDirectory.decode(directory.encode()) == directory
    for bad in (
        b"[]",
        b"{}",
        b'{"issuer-request-uri": "/x", "token-keys": [{"token-type": true, "token-key": ""}]}',
    ):
        with pytest.raises(WireError):
            pp.IssuerDirectory.decode(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_binary_decoders_any_bytes(data: bytes) -> None:
    for decode in (
        pp.TokenChallenge.decode,
        pp.Token.decode,
        pp.TokenRequest.decode,
        pp.IssuerDirectory.decode,
    ):
        try:
            value = decode(data)
        except WireError:
            continue
        if hasattr(value, "encode") and decode is not pp.IssuerDirectory.decode:
            assert decode(value.encode()) == value  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_header_parsers_any_text(text: str) -> None:
    with contextlib.suppress(WireError):
        pp.parse_www_authenticate(text)
    with contextlib.suppress(WireError):
        pp.parse_authorization(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_b64url_round_trips_padded_and_unpadded(data: bytes) -> None:
    encoded = pp.b64url_encode(data)
    assert len(encoded) % 4 == 0  # always padded (RFC 9577 §2.1, RFC 9578 §4)
    assert pp.b64url_decode(encoded) == data == pp.b64url_decode(encoded.rstrip("="))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="AZaz09-_=+/ .", max_size=40))
def test_b64url_decode_any_text_is_bytes_or_a_typed_error(text: str) -> None:
    with contextlib.suppress(WireError):
        data = pp.b64url_decode(text)
        # Whatever is accepted has exactly one spelling, give or take its padding.
        assert pp.b64url_encode(data).rstrip("=") == text.rstrip("=")
