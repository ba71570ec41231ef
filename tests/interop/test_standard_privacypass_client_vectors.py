"""The standard Privacy Pass client, checked on its own against published vectors.

Nothing here touches privproc. RFC 9474 §8 pins the blind RSA arithmetic, RFC 9578 Appendix A.2
and Cloudflare pat-go's type 0x0002 vectors pin TokenRequest and Token byte for byte, RFC 9577 §7
pins TokenChallenge/AuthenticatorInput encoding and the ``WWW-Authenticate`` parsing. A tiny
issuer written in this file (RFC 9474 §4.3 BlindSign with the RFC 9578 vector key) plays the
server side over real HTTP on localhost.

What the type 0x0002 vectors' ``blind`` field is: RFC 9578 Appendix A.2 only says "the blind used
when computing the blind RSA blinded message". It is the blinding factor ``r`` of RFC 9474 §4.2
(``blinded_msg = m * r^e mod n``), not ``inv = r^-1 mod n`` which Blind outputs and Finalize uses:
``test_type2_vector_blind_is_r_not_its_inverse`` shows that only ``r = blind`` reproduces the
TokenRequest (pat-go writes its verifier's ``CopyBlind()``, i.e. ``r``, in that field).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_private_key

from . import standard_privacypass_client as client
from .standard_privacypass_client import (
    Challenge,
    PrivacyPassClientError,
    authorization_header,
    b64url_decode,
    directory_token_keys,
    encode_token_challenge,
    encode_token_input,
    fetch_issuer_directory,
    issue_token,
    issuer_request_url,
    parse_token_challenge,
    parse_token_key,
    parse_www_authenticate,
    token_key_id,
    verify_token,
)

VECTORS = Path(__file__).parents[1] / "vectors"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


RFC9474: dict[str, Any] = _load("rfc9474-testvectors.json")
RFC9577: dict[str, Any] = _load("rfc9577-testvectors.json")
RFC9578_TYPE2: list[dict[str, str]] = _load("rfc9578-type2.json")["type2_blind_rsa_2048"]
PATGO_TYPE2: list[dict[str, str]] = _load("pat-go-type2-issuance.json")["vectors"]
TYPE2_VECTORS = [pytest.param(v, id=f"rfc9578-{i}") for i, v in enumerate(RFC9578_TYPE2)] + [
    pytest.param(v, id=f"pat-go-{i}") for i, v in enumerate(PATGO_TYPE2)
]

ISSUER_SK = load_pem_private_key(bytes.fromhex(RFC9578_TYPE2[0]["skS"]), password=None)
assert isinstance(ISSUER_SK, rsa.RSAPrivateKey)
ISSUER_PK = bytes.fromhex(RFC9578_TYPE2[0]["pkS"])


def hx(value: str) -> bytes:
    return bytes.fromhex(value)


def _unpadded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def blind_sign(sk: rsa.RSAPrivateKey, blinded_msg: bytes) -> bytes:
    """RFC 9474 §4.3 BlindSign, the issuer side (test only)."""
    pub = sk.public_key().public_numbers()
    k = (pub.n.bit_length() + 7) // 8
    m = int.from_bytes(blinded_msg, "big")
    assert len(blinded_msg) == k and m < pub.n
    s = pow(m, sk.private_numbers().d, pub.n)
    assert pow(s, pub.e, pub.n) == m
    return s.to_bytes(k, "big")


# --------------------------------------------------------------------------- RFC 9474 §8


def _rsabssa(variant: str) -> tuple[dict[str, Any], rsa.RSAPublicNumbers]:
    v = RFC9474[variant]
    return v, rsa.RSAPublicNumbers(int(v["e"], 16), int(v["n"], 16))


def test_rfc9474_pss_deterministic_blind_finalize_verify() -> None:
    v, pk = _rsabssa("RSABSSA-SHA384-PSS-Deterministic")
    assert v["msg_prefix"] == "" and v["prepared_msg"] == v["msg"]  # PrepareIdentity
    msg, salt, inv = hx(v["msg"]), hx(v["salt"]), int(v["inv"], 16)
    r = pow(inv, -1, pk.n)
    assert client._emsa_pss_encode(msg, pk.n.bit_length() - 1, salt) == hx(v["encoded_msg"])
    blinded, got_inv = client._blind(pk, msg, r=r, salt=salt)
    assert blinded == hx(v["blinded_msg"])
    assert got_inv == inv
    sig = client._finalize(pk, msg, hx(v["blind_sig"]), inv)
    assert sig == hx(v["sig"])
    # The issuer side of the vector, so the test issuer below is pinned too.
    sk = rsa.RSAPrivateNumbers(
        p=int(v["p"], 16),
        q=int(v["q"], 16),
        d=int(v["d"], 16),
        dmp1=int(v["d"], 16) % (int(v["p"], 16) - 1),
        dmq1=int(v["d"], 16) % (int(v["q"], 16) - 1),
        iqmp=pow(int(v["q"], 16), -1, int(v["p"], 16)),
        public_numbers=pk,
    ).private_key()
    assert blind_sign(sk, blinded) == hx(v["blind_sig"])
    # An independent PSS verifier accepts the result.
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    pk.public_key().verify(sig, msg, pss, hashes.SHA384())


def test_rfc9474_pss_randomized_blinds_the_prepared_message_identically() -> None:
    v, pk = _rsabssa("RSABSSA-SHA384-PSS-Randomized")
    prepared, salt, inv = hx(v["prepared_msg"]), hx(v["salt"]), int(v["inv"], 16)
    assert prepared == hx(v["msg_prefix"]) + hx(v["msg"])
    blinded, _ = client._blind(pk, prepared, r=pow(inv, -1, pk.n), salt=salt)
    assert blinded == hx(v["blinded_msg"])
    assert client._finalize(pk, prepared, hx(v["blind_sig"]), inv) == hx(v["sig"])


def test_rfc9474_finalize_rejects_bad_blind_signatures() -> None:
    v, pk = _rsabssa("RSABSSA-SHA384-PSS-Deterministic")
    msg, blind_sig, inv = hx(v["msg"]), hx(v["blind_sig"]), int(v["inv"], 16)
    tampered = bytes([blind_sig[0] ^ 1]) + blind_sig[1:]
    for bad_sig, bad_msg in ((tampered, msg), (blind_sig[1:], msg), (blind_sig, msg + b"x")):
        with pytest.raises(PrivacyPassClientError):
            client._finalize(pk, bad_msg, bad_sig, inv)
    with pytest.raises(PrivacyPassClientError):
        client._finalize(pk, msg, blind_sig, (inv + 1) % pk.n)


def test_blind_is_randomized_and_validates_inputs() -> None:
    pk = parse_token_key(ISSUER_PK)
    first, inv1 = client._blind(pk, b"message")
    second, inv2 = client._blind(pk, b"message")
    assert first != second and inv1 != inv2 and len(first) == 256
    for bad in ({"salt": b"\x00" * 47}, {"r": 0}, {"r": pk.n}, {"r": pk.n + 5}):
        with pytest.raises(PrivacyPassClientError):
            client._blind(pk, b"message", **bad)


# --------------------------------------------------------------------------- RFC 9578 §6.5 token keys

OID = {
    "pss": "1.2.840.113549.1.1.10",
    "rsa": "1.2.840.113549.1.1.1",
    "mgf1": "1.2.840.113549.1.1.8",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha256": "2.16.840.1.101.3.4.2.1",
}


def der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = b""
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.insert(0, 0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(chunk)
    return der(0x06, out)


def der_uint(value: int) -> bytes:
    return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


@dataclass
class SpkiSpec:
    n: int
    e: int = 65537
    alg: str = "pss"
    hash: str = "sha384"
    mgf_hash: str = "sha384"
    salt: int | None = 48
    null_params: bool = False
    trailer: int | None = None
    omit: set[int] = field(default_factory=set)

    def encode(self) -> bytes:
        def hash_alg(name: str) -> bytes:
            return der(0x30, der_oid(OID[name]) + (der(0x05, b"") if self.null_params else b""))

        fields = {
            0: hash_alg(self.hash),
            1: der(0x30, der_oid(OID["mgf1"]) + hash_alg(self.mgf_hash)),
            2: der_uint(self.salt) if self.salt is not None else b"",
            3: der_uint(self.trailer) if self.trailer is not None else b"",
        }
        params = b"".join(der(0xA0 + i, v) for i, v in fields.items() if v and i not in self.omit)
        alg = der(0x30, der_oid(OID[self.alg]) + der(0x30, params))
        key = der(0x30, der_uint(self.n) + der_uint(self.e))
        return der(0x30, alg + der(0x03, b"\x00" + key))


def test_token_key_spki_matches_the_rfc_encoding_and_cryptography() -> None:
    numbers = parse_token_key(ISSUER_PK)
    assert isinstance(ISSUER_SK, rsa.RSAPrivateKey)
    assert numbers == ISSUER_SK.public_key().public_numbers()
    # cryptography 44+ loads id-RSASSA-PSS SPKIs (it does not expose the PSS parameters).
    loaded = load_der_public_key(ISSUER_PK)
    assert isinstance(loaded, rsa.RSAPublicKey) and loaded.public_numbers() == numbers
    assert SpkiSpec(numbers.n, numbers.e).encode() == ISSUER_PK
    # RFC 9577 §7's token_key_id is SHA-256 of exactly this SPKI.
    assert token_key_id(ISSUER_PK).hex() == RFC9577["challenge_redemption"][0]["token_key_id"]


def test_token_key_accepts_null_hash_parameters_and_explicit_trailer() -> None:
    n = parse_token_key(ISSUER_PK).n
    assert parse_token_key(SpkiSpec(n, null_params=True).encode()).n == n
    assert parse_token_key(SpkiSpec(n, trailer=1).encode()).n == n


@pytest.mark.parametrize(
    "changes",
    [
        {"alg": "rsa"},
        {"hash": "sha256"},
        {"mgf_hash": "sha256"},
        {"salt": 32},
        {"salt": 0},
        {"omit": {0}},
        {"omit": {1}},
        {"omit": {2}},
        {"trailer": 2},
        {"e": 65536},
        {"e": 1},
        {"n": 1 << 2047},  # even modulus
        {"n": (1 << 1023) + 1},  # 1024-bit: not Nk = 256 bytes
        {"n": (1 << 3071) + 1},
    ],
    ids=repr,
)
def test_token_key_rejects_wrong_parameters(changes: dict[str, Any]) -> None:
    spec = replace(SpkiSpec(parse_token_key(ISSUER_PK).n), **changes)
    with pytest.raises(PrivacyPassClientError):
        parse_token_key(spec.encode())


def test_token_key_rejects_malformed_der() -> None:
    for bad in (
        b"",
        ISSUER_PK[:-1],
        ISSUER_PK + b"\x00",
        b"\x30\x80" + ISSUER_PK[4:],
        b"\x31" + ISSUER_PK[1:],
    ):
        with pytest.raises(PrivacyPassClientError):
            parse_token_key(bad)


# --------------------------------------------------------------------------- RFC 9578 Appendix A.2, pat-go


@pytest.mark.parametrize("v", TYPE2_VECTORS)
def test_type2_vector_token_request_and_token(v: dict[str, str]) -> None:
    pk_s, challenge = hx(v["pkS"]), hx(v["token_challenge"])
    assert pk_s == ISSUER_PK  # both vector sets use one issuer key
    assert parse_token_challenge(challenge)[0] == 2
    request, pending = client._create_token_request(
        challenge, pk_s, nonce=hx(v["nonce"]), r=int(v["blind"], 16), salt=hx(v["salt"])
    )
    assert request == hx(v["token_request"])
    assert request[2] == token_key_id(pk_s)[-1] and len(request) == 2 + 1 + 256
    # The issuer's answer is deterministic: the test issuer reproduces the vector's.
    assert isinstance(ISSUER_SK, rsa.RSAPrivateKey)
    assert blind_sign(ISSUER_SK, request[3:]) == hx(v["token_response"])
    token = client._finalize_token(pending, hx(v["token_response"]))
    assert token == hx(v["token"])
    verify_token(token, pk_s, challenge)


@pytest.mark.parametrize("v", TYPE2_VECTORS)
def test_type2_vector_blind_is_r_not_its_inverse(v: dict[str, str]) -> None:
    pk = parse_token_key(hx(v["pkS"]))
    blind = int(v["blind"], 16)
    assert 1 < blind < pk.n
    request, _ = client._create_token_request(
        hx(v["token_challenge"]),
        hx(v["pkS"]),
        nonce=hx(v["nonce"]),
        r=pow(blind, -1, pk.n),
        salt=hx(v["salt"]),
    )
    assert request != hx(v["token_request"])


def test_type2_finalize_token_rejects_bad_responses() -> None:
    v = RFC9578_TYPE2[0]
    _, pending = client._create_token_request(
        hx(v["token_challenge"]), ISSUER_PK, nonce=hx(v["nonce"]), r=int(v["blind"], 16), salt=hx(v["salt"])
    )
    response = hx(v["token_response"])
    for bad in (response[:-1], response + b"\x00", bytes([response[0] ^ 0x80]) + response[1:], b"\xff" * 256):
        with pytest.raises(PrivacyPassClientError):
            client._finalize_token(pending, bad)


def test_verify_token_rejects_mismatches() -> None:
    v = RFC9578_TYPE2[0]
    token, challenge = hx(v["token"]), hx(v["token_challenge"])
    verify_token(token, ISSUER_PK)
    other_challenge = hx(RFC9578_TYPE2[1]["token_challenge"])
    assert other_challenge != challenge
    with pytest.raises(PrivacyPassClientError):
        verify_token(token, ISSUER_PK, other_challenge)
    for bad in (token[:-1], b"\x00\x01" + token[2:], token[:-1] + bytes([token[-1] ^ 1])):
        with pytest.raises(PrivacyPassClientError):
            verify_token(bad, ISSUER_PK, challenge)


# --------------------------------------------------------------------------- RFC 9577 §7


@pytest.mark.parametrize(
    "v",
    [v for v in RFC9577["challenge_redemption"] if v["token_type"] == "0002"],
    ids=lambda v: v["origin_info"],
)
def test_rfc9577_token_challenge_and_authenticator_input(v: dict[str, str]) -> None:
    raw = encode_token_challenge(
        2, hx(v["issuer_name"]).decode(), hx(v["redemption_context"]), hx(v["origin_info"]).decode()
    )
    assert parse_token_challenge(raw) == (
        2,
        hx(v["issuer_name"]).decode(),
        hx(v["redemption_context"]),
        hx(v["origin_info"]).decode(),
    )
    token_input = encode_token_input(2, hx(v["nonce"]), raw, hx(v["token_key_id"]))
    assert token_input == hx(v["token_authenticator_input"])


def test_rfc9577_grease_redemption_vector_is_skipped_knowingly() -> None:
    greased = [v for v in RFC9577["challenge_redemption"] if v["token_type"] != "0002"]
    assert [v["token_type"] for v in greased] == ["0000"]


def _header_vectors() -> list[tuple[dict[str, str], str]]:
    """(expected parameters, unfolded field value) per RFC 9577 §7.2 header vector."""
    text = RFC9577["http_header_section_raw"]
    body = text.split("~~~")[1]
    lines = body.strip("\n").split("\n")
    out: list[tuple[dict[str, str], str]] = []
    expected: dict[str, str] = {}
    key = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("WWW-Authenticate:"):
            folded = [line]
            i += 1
            while i < len(lines) and lines[i].strip():
                folded.append(lines[i])
                i += 1
            out.append((expected, "".join(folded).removeprefix("WWW-Authenticate:").strip()))
            expected = {}
            continue
        m = re.match(r"^([a-z-]+-\d+): ?(.*)$", line)
        if m:
            key = m[1]
            expected[key] = m[2].strip()
        elif line.strip():
            expected[key] += line.strip()
        i += 1
    return out


HEADER_VECTORS = _header_vectors()


def test_rfc9577_header_vectors_were_found() -> None:
    assert len(HEADER_VECTORS) == 3
    assert HEADER_VECTORS[2][1].startswith('Basic realm="grease", PrivateToken challenge="AACs')


@pytest.mark.parametrize("index", range(3))
def test_rfc9577_header_vector_parses(index: int) -> None:
    expected, header = HEADER_VECTORS[index]
    want = []
    j = 0
    while f"token-type-{j}" in expected:
        token_type = int(expected[f"token-type-{j}"], 16)
        if token_type in (1, 2):  # the GREASE type 0x0000 challenge must be ignored
            max_age = expected.get(f"max-age-{j}")
            want.append(
                (
                    token_type,
                    hx(expected[f"token-challenge-{j}"]),
                    hx(expected[f"token-key-{j}"]),
                    int(max_age) if max_age is not None else None,
                )
            )
        j += 1
    assert want, "every header vector has a type 1 or 2 challenge"
    parsed = parse_www_authenticate(header)
    got = [(c.token_type, c.raw, c.token_key, c.max_age) for c in parsed if c.token_type in (1, 2)]
    assert got == want
    assert all(c.token_type in (1, 2) for c in parsed)  # neither Basic nor the GREASE one leaked
    for c in parsed:
        assert (c.token_type, c.issuer_name, c.redemption_context, c.origin_info) == parse_token_challenge(
            c.raw
        )
        assert c.issuer_name == "issuer.example" and c.origin_info == "origin.example"
        if c.token_type == 2:
            assert c.token_key == ISSUER_PK


# --------------------------------------------------------------------------- header parsing edge cases

CHALLENGE = encode_token_challenge(2, "issuer.example", b"\x07" * 32, "origin.example")
KEY_B64 = base64.urlsafe_b64encode(ISSUER_PK).decode()
CH_B64 = base64.urlsafe_b64encode(CHALLENGE).decode()


def _raw_challenge(raw: bytes) -> str:
    return f'PrivateToken challenge="{base64.urlsafe_b64encode(raw).decode()}"'


def _ok(header: str) -> list[Challenge]:
    return parse_www_authenticate(header)


def test_header_parses_quoted_and_token_values_padded_or_not() -> None:
    expected = Challenge(2, "issuer.example", b"\x07" * 32, "origin.example", CHALLENGE, ISSUER_PK, 10)
    forms = [
        f'PrivateToken challenge="{CH_B64}", token-key="{KEY_B64}", max-age="10"',
        f"PrivateToken challenge={_unpadded(CHALLENGE)}, token-key={_unpadded(ISSUER_PK)}, max-age=10",
        f'privatetoken CHALLENGE = "{CH_B64}" ,Token-Key="{KEY_B64}",MAX-AGE=10, realm="x", foo=bar',
        f'PrivateToken challenge="{CH_B64[:5]}\\{CH_B64[5:]}", token-key="{KEY_B64}", max-age="10"',
        f'  ,, PrivateToken\tchallenge="{CH_B64}",,token-key="{KEY_B64}" , max-age="10" ,',
    ]
    for header in forms:
        assert _ok(header) == [expected], header


def test_header_keeps_order_and_skips_other_schemes() -> None:
    other = encode_token_challenge(1, "issuer.example")
    header = (
        f'Basic realm="a, PrivateToken challenge=x", PrivateToken challenge="{CH_B64}", '
        f'token-key="{KEY_B64}", Bearer abc.def==, Negotiate, '
        f'PrivateToken challenge="{base64.urlsafe_b64encode(other).decode()}", token-key="AAAA"'
    )
    got = _ok(header)
    assert [(c.token_type, c.raw, c.max_age) for c in got] == [(2, CHALLENGE, None), (1, other, None)]
    assert got[1].token_key == b"\x00\x00\x00" and got[1].redemption_context == b""


def test_header_without_token_key_parses_but_cannot_issue() -> None:
    (c,) = _ok(f'PrivateToken challenge="{CH_B64}"')
    assert c.token_key == b"" and c.max_age is None
    with pytest.raises(PrivacyPassClientError):
        issue_token(c, "http://127.0.0.1:9/never", None)


@pytest.mark.parametrize(
    "bad",
    [
        'PrivateToken challenge="!!!!"',  # not base64url
        f'PrivateToken challenge="{CH_B64}="',  # bad padding
        f'PrivateToken challenge="{CH_B64[:-3]}"',  # truncated TokenChallenge
        f'PrivateToken token-key="{KEY_B64}"',  # no challenge
        f'PrivateToken challenge="{CH_B64}", challenge="{CH_B64}"',  # duplicate parameter
        f'PrivateToken challenge="{CH_B64}", max-age="ten"',
        f'PrivateToken challenge="{CH_B64}", max-age="-1"',
        f'PrivateToken challenge="{CH_B64}", token-key="not base64!"',
        f"PrivateToken {_unpadded(CHALLENGE)}==",  # token68 form
        f'PrivateToken challenge="{CH_B64}" junk',  # garbage after a parameter
        f'PrivateToken challenge="{CH_B64}',  # unterminated quoted-string
        f'PrivateToken challenge="{CH_B64}\x01"',  # control character
        _raw_challenge(b"\x00\x02\x00\x01a\x05abcde\x00\x00"),  # redemption_context of 5 bytes
        _raw_challenge(b"\x00\x02\x00\x00\x00\x00\x00"),  # empty issuer_name
        _raw_challenge(b"\x00\x02\x00\x02\xc3\xa9\x00\x00\x00"),  # non-ASCII issuer_name
        _raw_challenge(CHALLENGE + b"\x00"),  # trailing byte
        "@@@",
        "=",
        "",
    ],
)
def test_header_ignores_malformed_challenges_but_keeps_good_ones(bad: str) -> None:
    assert _ok(bad) == []
    good = f'PrivateToken challenge="{CH_B64}", token-key="{KEY_B64}"'
    if bad.count('"') % 2 == 0:  # an unterminated quote swallows the rest of the field
        assert [c.raw for c in _ok(f"{bad}, {good}")] == [CHALLENGE]
    if bad.startswith("PrivateToken"):  # a stray element would count as a parameter of `good`
        assert [c.raw for c in _ok(f"{good}, {bad}")] == [CHALLENGE]
    assert _ok(f"{good}, @@@") == _ok(f"{good}, =") == []


def test_authorization_header_is_padded_base64url() -> None:
    token = hx(RFC9578_TYPE2[0]["token"])
    value = authorization_header(token)
    m = re.fullmatch(r'PrivateToken token="([A-Za-z0-9_-]+=*)"', value)
    assert m is not None and len(m[1]) % 4 == 0
    assert b64url_decode(m[1]) == token


def test_b64url_decode_accepts_both_paddings_and_rejects_standard_alphabet() -> None:
    for data in (b"", b"a", b"ab", b"abc", b"\xfb\xff\xfe"):
        padded = base64.urlsafe_b64encode(data).decode()
        assert b64url_decode(padded) == data == b64url_decode(padded.rstrip("="))
    for bad in ("+/8=", "a", "ab=", "abc==", "a b="):
        with pytest.raises(PrivacyPassClientError):
            b64url_decode(bad)


# --------------------------------------------------------------------------- over HTTP


class _Issuer(BaseHTTPRequestHandler):
    """A test-only RFC 9578 issuer: directory and type 0x0002 token requests."""

    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []
    mode: ClassVar[str] = "ok"
    directory: ClassVar[bytes] = b""
    directory_type: ClassVar[str] = "application/private-token-issuer-directory"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, dict(self.headers.items()), b""))
        if self.path != "/.well-known/private-token-issuer-directory":
            self._reply(404, "text/plain", b"no")
            return
        self._reply(200, self.directory_type, self.directory)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, dict(self.headers.items()), body))
        if self.mode == "401" or self.headers.get("Authorization") != "Bearer s3cret":
            self._reply(401, "text/plain", b"who are you")
            return
        if self.mode == "500":
            self._reply(500, "text/plain", b"oops")
            return
        if (
            self.path != "/token-request"
            or self.headers.get("Content-Type") != "application/private-token-request"
            or len(body) != 259
            or body[:3] != b"\x00\x02" + token_key_id(ISSUER_PK)[-1:]
        ):
            self._reply(400, "text/plain", b"bad request")
            return
        assert isinstance(ISSUER_SK, rsa.RSAPrivateKey)
        blinded = body[3:]
        if self.mode == "bad-sig":  # sign something else
            blinded = bytes([blinded[0] ^ 1]) + blinded[1:]
        sig = blind_sign(ISSUER_SK, blinded)
        ctype = "application/private-token-response"
        if self.mode == "wrong-type":
            ctype = "application/octet-stream"
        if self.mode == "short":
            sig = sig[:-1]
        self._reply(200, ctype, sig)


def _directory(**extra: Any) -> bytes:
    keys = [
        {"token-type": 2, "token-key": base64.urlsafe_b64encode(b"future key").decode(), "not-before": 2**40},
        {"token-type": 1, "token-key": "AAAA"},
        {"token-type": 2, "token-key": KEY_B64, "not-before": 1},
    ]
    return json.dumps({"issuer-request-uri": "/token-request", "token-keys": keys, **extra}).encode()


@pytest.fixture
def issuer() -> Iterator[str]:
    _Issuer.seen = []
    _Issuer.mode = "ok"
    _Issuer.directory = _directory()
    _Issuer.directory_type = "application/private-token-issuer-directory"
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Issuer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _challenge() -> Challenge:
    header = f'PrivateToken challenge="{CH_B64}", token-key="{KEY_B64}", max-age="10"'
    (challenge,) = parse_www_authenticate(header)
    return challenge


def test_directory_then_issuance_end_to_end(issuer: str) -> None:
    directory_url = issuer + "/.well-known/private-token-issuer-directory"
    directory = fetch_issuer_directory(directory_url)
    request_url = issuer_request_url(directory, directory_url)
    assert request_url == issuer + "/token-request"
    assert directory_token_keys(directory, 2) == [ISSUER_PK]
    assert directory_token_keys(directory, 2, now=2**41)[0] == b"future key"

    challenge = _challenge()
    token = issue_token(challenge, request_url, "s3cret")
    # Independent checks of the Token: layout and an RSASSA-PSS verification by cryptography.
    assert len(token) == 2 + 32 + 32 + 32 + 256
    assert token[:2] == b"\x00\x02"
    assert token[34:66] == hashlib.sha256(CHALLENGE).digest()
    assert token[66:98] == hashlib.sha256(ISSUER_PK).digest()
    loaded = load_der_public_key(ISSUER_PK)
    assert isinstance(loaded, rsa.RSAPublicKey)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    loaded.verify(token[98:], token[:98], pss, hashes.SHA384())
    verify_token(token, ISSUER_PK, CHALLENGE)
    assert b64url_decode(authorization_header(token).split('"')[1]) == token

    get, post = _Issuer.seen
    assert get[0] == "GET" and get[2]["Accept"] == "application/private-token-issuer-directory"
    method, path, headers, body = post
    assert (method, path) == ("POST", "/token-request")
    assert headers["Content-Type"] == "application/private-token-request"
    assert headers["Accept"] == "application/private-token-response"
    assert headers["Authorization"] == "Bearer s3cret"
    assert body[:3] == b"\x00\x02" + hashlib.sha256(ISSUER_PK).digest()[-1:] and len(body) == 259

    # Two issuances are unlinkable at the wire: fresh nonce and blind every time.
    again = issue_token(challenge, request_url, "s3cret")
    assert again[2:34] != token[2:34] and _Issuer.seen[-1][3] != body


def test_issuance_without_credential_sends_no_authorization(issuer: str) -> None:
    with pytest.raises(PrivacyPassClientError) as info:
        issue_token(_challenge(), issuer + "/token-request", None)
    assert info.value.status == 401
    assert "Authorization" not in _Issuer.seen[-1][2]


@pytest.mark.parametrize(("mode", "status"), [("401", 401), ("500", 500), ("wrong-type", 200)])
def test_issuance_http_failures(issuer: str, mode: str, status: int) -> None:
    _Issuer.mode = mode
    with pytest.raises(PrivacyPassClientError) as info:
        issue_token(_challenge(), issuer + "/token-request", "s3cret")
    assert info.value.status == status


@pytest.mark.parametrize("mode", ["short", "bad-sig"])
def test_issuance_rejects_bad_token_responses(issuer: str, mode: str) -> None:
    _Issuer.mode = mode
    with pytest.raises(PrivacyPassClientError) as info:
        issue_token(_challenge(), issuer + "/token-request", "s3cret")
    assert info.value.status is None


def test_issuance_refuses_other_token_types_and_bad_urls() -> None:
    type1 = encode_token_challenge(1, "issuer.example")
    with pytest.raises(PrivacyPassClientError):
        issue_token(replace(_challenge(), token_type=1, raw=type1), "http://127.0.0.1:9/x", None)
    with pytest.raises(PrivacyPassClientError):
        issue_token(_challenge(), "ftp://issuer.invalid/token-request", None)
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PrivacyPassClientError) as info:
        issue_token(_challenge(), f"http://127.0.0.1:{port}/token-request", None)
    assert info.value.status is None


def _keys(*entries: object) -> bytes:
    return json.dumps({"issuer-request-uri": "/r", "token-keys": list(entries)}).encode()


@pytest.mark.parametrize(
    "directory",
    [
        b"not json",
        b"[]",
        json.dumps({"token-keys": []}).encode(),
        json.dumps({"issuer-request-uri": "/r"}).encode(),
        _keys({"token-type": "2", "token-key": "AAAA"}),
        _keys({"token-type": True, "token-key": "AAAA"}),
        _keys({"token-type": 2, "token-key": "+/+/"}),
        _keys({"token-type": 2, "token-key": "AAAA", "not-before": "1"}),
        _keys("AAAA"),
    ],
)
def test_directory_rejects_malformed_documents(issuer: str, directory: bytes) -> None:
    _Issuer.directory = directory
    with pytest.raises(PrivacyPassClientError):
        fetch_issuer_directory(issuer + "/.well-known/private-token-issuer-directory")


def test_directory_http_errors(issuer: str) -> None:
    with pytest.raises(PrivacyPassClientError) as info:
        fetch_issuer_directory(issuer + "/nowhere")
    assert info.value.status == 404
    _Issuer.directory_type = "application/json"
    with pytest.raises(PrivacyPassClientError):
        fetch_issuer_directory(issuer + "/.well-known/private-token-issuer-directory")
