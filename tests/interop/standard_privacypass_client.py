"""A minimal, standard Privacy Pass client written from the RFCs alone.

It exists to show that a client with no knowledge of privproc, given only an origin's
``WWW-Authenticate`` challenge and the issuer's URLs, obtains a token that the origin accepts.
It deliberately imports nothing from ``privproc``: only the standard library (``hashlib`` for
SHA-256/SHA-384 and MGF1, Python integers for the blinding arithmetic, which involves only
public values) and ``cryptography`` for the final RSASSA-PSS signature check.

* RFC 9577 (HTTP authentication scheme): TokenChallenge, the ``PrivateToken`` challenge
  (``challenge``, ``token-key``, optional ``max-age``), the Token and
  ``Authorization: PrivateToken token=...``; header syntax from RFC 9110 §11.
* RFC 9578 (issuance protocols): the issuer directory (§4) and token type 0x0002,
  Blind RSA 2048 (§6): token key = DER SubjectPublicKeyInfo with id-RSASSA-PSS
  (SHA-384, MGF1-SHA-384, salt 48), ``token_key_id = SHA-256(SPKI)``, TokenRequest and
  TokenResponse, HTTP issuance.
* RFC 9474 (RSA blind signatures): RSABSSA-SHA384-PSS-Deterministic, i.e. PrepareIdentity,
  Blind (§4.2) and Finalize (§4.4) with EMSA-PSS-ENCODE of RFC 8017 §9.1.1.

Only token type 0x0002 can be issued; challenges of any token type whose content follows the
default TokenChallenge structure are parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import math
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

# RFC 9578 §8.2.2 / RFC 9577 §6.2: the one token type this client issues.
TOKEN_TYPE_BLIND_RSA = 0x0002
TOKEN_TYPE_VOPRF = 0x0001
NK = 256  # RFC 9578 §8.2.2: Nk of type 0x0002 (modulus and signature length in bytes)
NID = 32  # Nid of type 0x0002: token_key_id is SHA-256 of the SPKI
NONCE_LEN = 32  # RFC 9577 §2.2
SALT_LEN = 48  # RFC 9474 §5: RSABSSA-SHA384-PSS-* use sLen = hLen = 48
HASH_LEN = 48  # SHA-384
REDEMPTION_CONTEXT_LENGTHS = (0, 32)  # RFC 9577 §2.1.1

SCHEME = "PrivateToken"  # RFC 9577 §2
TOKEN_REQUEST_MEDIA_TYPE = "application/private-token-request"  # RFC 9578 §6.1
TOKEN_RESPONSE_MEDIA_TYPE = "application/private-token-response"  # RFC 9578 §6.2
ISSUER_DIRECTORY_MEDIA_TYPE = "application/private-token-issuer-directory"  # RFC 9578 §4
ISSUER_DIRECTORY_PATH = "/.well-known/private-token-issuer-directory"  # RFC 9578 §4
TIMEOUT_SECONDS = 10.0


class PrivacyPassClientError(Exception):
    """Any failure of this client; ``status`` is the HTTP status code when an HTTP exchange failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Challenge:
    """One ``PrivateToken`` challenge (RFC 9577 §2.1).

    ``raw`` is the TokenChallenge bytes (the decoded ``challenge`` parameter); the other
    TokenChallenge fields are decoded from it. ``token_key`` is the decoded ``token-key``
    parameter, ``b""`` when the origin omitted it (RFC 9577 §2.1 lets it do so when clients
    get the key out of band: then take it from the issuer directory and ``dataclasses.replace``).
    """

    token_type: int
    issuer_name: str
    redemption_context: bytes
    origin_info: str
    raw: bytes
    token_key: bytes
    max_age: int | None


# --------------------------------------------------------------------------- encodings


_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64url_decode(value: str) -> bytes:
    """Base64url (RFC 4648 §5), padded or not; anything outside the alphabet is an error."""
    if not _B64URL.fullmatch(value):
        raise PrivacyPassClientError("not base64url")
    stripped = value.rstrip("=")
    if "=" in value and len(value) % 4:
        raise PrivacyPassClientError("bad base64url padding")
    if len(stripped) % 4 == 1:
        raise PrivacyPassClientError("bad base64url length")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise PrivacyPassClientError("not base64url") from exc


def b64url_encode(data: bytes) -> str:
    """Base64url with padding, as RFC 9577 §2.1/§2.2 require."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def _ascii(data: bytes, what: str) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise PrivacyPassClientError(f"{what} is not ASCII") from exc


def encode_token_challenge(
    token_type: int, issuer_name: str, redemption_context: bytes = b"", origin_info: str = ""
) -> bytes:
    """RFC 9577 §2.1.1: the default TokenChallenge structure."""
    name = issuer_name.encode("ascii")
    origins = origin_info.encode("ascii")
    if not name or len(name) > 0xFFFF or len(origins) > 0xFFFF:
        raise PrivacyPassClientError("issuer_name or origin_info out of range")
    if len(redemption_context) not in REDEMPTION_CONTEXT_LENGTHS:
        raise PrivacyPassClientError("redemption_context must be 0 or 32 bytes")
    return (
        token_type.to_bytes(2, "big")
        + len(name).to_bytes(2, "big")
        + name
        + bytes([len(redemption_context)])
        + redemption_context
        + len(origins).to_bytes(2, "big")
        + origins
    )


def parse_token_challenge(raw: bytes) -> tuple[int, str, bytes, str]:
    """RFC 9577 §2.1.1: (token_type, issuer_name, redemption_context, origin_info)."""
    if len(raw) < 2:
        raise PrivacyPassClientError("TokenChallenge too short")
    token_type = int.from_bytes(raw[:2], "big")
    pos = 2
    if len(raw) < pos + 2:
        raise PrivacyPassClientError("TokenChallenge truncated (issuer_name)")
    n = int.from_bytes(raw[pos : pos + 2], "big")
    pos += 2
    if n < 1 or len(raw) < pos + n:
        raise PrivacyPassClientError("TokenChallenge issuer_name invalid")
    issuer_name = _ascii(raw[pos : pos + n], "issuer_name")
    pos += n
    if len(raw) < pos + 1:
        raise PrivacyPassClientError("TokenChallenge truncated (redemption_context)")
    n = raw[pos]
    pos += 1
    if n not in REDEMPTION_CONTEXT_LENGTHS or len(raw) < pos + n:
        raise PrivacyPassClientError("TokenChallenge redemption_context must be 0 or 32 bytes")
    redemption_context = raw[pos : pos + n]
    pos += n
    if len(raw) < pos + 2:
        raise PrivacyPassClientError("TokenChallenge truncated (origin_info)")
    n = int.from_bytes(raw[pos : pos + 2], "big")
    pos += 2
    if len(raw) != pos + n:
        raise PrivacyPassClientError("TokenChallenge origin_info length mismatch")
    origin_info = _ascii(raw[pos:], "origin_info")
    return token_type, issuer_name, redemption_context, origin_info


def encode_token_input(token_type: int, nonce: bytes, challenge_raw: bytes, token_key_id: bytes) -> bytes:
    """RFC 9577 §2.2.2 AuthenticatorInput: token_type || nonce || SHA-256(challenge) || token_key_id."""
    if len(nonce) != NONCE_LEN:
        raise PrivacyPassClientError("nonce must be 32 bytes")
    return token_type.to_bytes(2, "big") + nonce + hashlib.sha256(challenge_raw).digest() + token_key_id


# --------------------------------------------------------------------------- RFC 9110 §11 header syntax

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = frozenset("-._~+/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS = " \t"


class _Syntax(Exception):
    """A malformed list element; the parser skips to the next comma."""


@dataclass
class _RawChallenge:
    scheme: str
    params: dict[str, str]
    token68: str | None = None
    bad: bool = False


class _HeaderParser:
    """``WWW-Authenticate = #challenge`` (RFC 9110 §11.6.1, §11.2, §11.3, §5.6).

    challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param = token BWS "=" BWS ( token / quoted-string )
    A malformed list element marks bad the challenge it belongs to (a stray element after a
    challenge's parameters counts as one of them); parsing resumes after the next comma.
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def _peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def _skip_ws(self) -> None:
        while self._peek() and self._peek() in _WS:
            self.i += 1

    def _token(self) -> str:
        start = self.i
        while self._peek() and self._peek() in _TCHAR:
            self.i += 1
        return self.s[start : self.i]

    def _quoted(self) -> str:
        assert self._peek() == '"'
        self.i += 1
        out: list[str] = []
        error = ""  # reported at the closing quote, so that quote pairing stays in step
        while True:
            c = self._peek()
            if not c:
                raise _Syntax("unterminated quoted-string")
            self.i += 1
            if c == '"':
                if error:
                    raise _Syntax(error)
                return "".join(out)
            if c == "\\":
                c = self._peek()
                if not c:
                    raise _Syntax("unterminated quoted-string")
                self.i += 1
            if not (c == "\t" or " " <= c <= "~" or ord(c) >= 0x80):
                error = "control character in quoted-string"
            out.append(c)

    def _value(self) -> str:
        if self._peek() == '"':
            return self._quoted()
        value = self._token()
        if not value:
            raise _Syntax("empty auth-param value")
        return value

    def _skip_to_comma(self) -> None:
        while self._peek() and self._peek() != ",":
            if self._peek() == '"':
                try:
                    self._quoted()
                except _Syntax:
                    self.i = len(self.s)
            else:
                self.i += 1

    def _end_of_element(self) -> None:
        self._skip_ws()
        if self._peek() not in ("", ","):
            raise _Syntax(f"unexpected {self._peek()!r}")

    def _param(self, name: str, current: _RawChallenge) -> None:
        """At '=' after ``name``: read the value into ``current``."""
        self.i += 1
        self._skip_ws()
        value = self._value()
        self._end_of_element()
        key = name.lower()
        if key in current.params or current.token68 is not None:
            current.bad = True  # RFC 9110 §11.2: each parameter name only once per challenge
        current.params[key] = value

    def _after_scheme(self, current: _RawChallenge) -> None:
        """After an auth-scheme: nothing, a token68 or the first auth-param."""
        if self._peek() in ("", ","):
            return
        if self._peek() not in _WS:
            raise _Syntax("auth-scheme not followed by SP")
        self._skip_ws()
        if self._peek() in ("", ","):
            return
        start = self.i
        name = self._token()
        self._skip_ws()
        if name and self._peek() == "=":
            after = self.i + 1
            while after < len(self.s) and self.s[after] in _WS:
                after += 1
            nxt = self.s[after] if after < len(self.s) else ""
            if nxt == '"' or (nxt and nxt in _TCHAR):
                self._param(name, current)
                return
        # token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
        self.i = start
        while self._peek() and self._peek() in _TOKEN68:
            self.i += 1
        if self.i == start:
            raise _Syntax("neither token68 nor auth-param")
        while self._peek() == "=":
            self.i += 1
        current.token68 = self.s[start : self.i]
        self._end_of_element()

    def parse(self) -> list[_RawChallenge]:
        out: list[_RawChallenge] = []
        current: _RawChallenge | None = None
        while True:
            while self._peek() and (self._peek() in _WS or self._peek() == ","):
                self.i += 1
            if not self._peek():
                return out
            try:
                name = self._token()
                if not name:
                    raise _Syntax(f"unexpected {self._peek()!r}")
                mark = self.i
                self._skip_ws()
                if self._peek() == "=":
                    if current is None:
                        raise _Syntax("auth-param before any auth-scheme")
                    self._param(name, current)
                else:
                    self.i = mark
                    current = _RawChallenge(scheme=name, params={})
                    out.append(current)
                    self._after_scheme(current)
            except _Syntax:
                if current is not None:
                    current.bad = True
                self._skip_to_comma()


def _challenge_from_params(params: dict[str, str]) -> Challenge:
    if "challenge" not in params:
        raise PrivacyPassClientError("no challenge parameter")
    raw = b64url_decode(params["challenge"])
    token_type, issuer_name, redemption_context, origin_info = parse_token_challenge(raw)
    token_key = b64url_decode(params["token-key"]) if "token-key" in params else b""
    max_age: int | None = None
    if "max-age" in params:
        text = params["max-age"]
        if not (text.isascii() and text.isdigit()):
            raise PrivacyPassClientError("max-age is not a non-negative integer")
        max_age = int(text)
    return Challenge(token_type, issuer_name, redemption_context, origin_info, raw, token_key, max_age)


def parse_www_authenticate(value: str) -> list[Challenge]:
    """Every well-formed ``PrivateToken`` challenge of a ``WWW-Authenticate`` field value, in order.

    Other schemes, unknown parameters and challenges that fail to parse (bad header syntax,
    token68 form, duplicate or missing ``challenge``, bad base64url, malformed TokenChallenge,
    redemption_context not 0 or 32 bytes, non-ASCII names, bad ``max-age``) are ignored. Several
    field lines may be joined with ", " first (RFC 9110 §5.3).
    """
    result: list[Challenge] = []
    for raw in _HeaderParser(value).parse():
        if raw.scheme.lower() != SCHEME.lower() or raw.bad or raw.token68 is not None:
            continue
        try:
            result.append(_challenge_from_params(raw.params))
        except PrivacyPassClientError:
            continue
    return result


def authorization_header(token: bytes) -> str:
    """RFC 9577 §2.2: the ``Authorization`` field value presenting ``token``."""
    return f'{SCHEME} token="{b64url_encode(token)}"'


# --------------------------------------------------------------------------- DER SubjectPublicKeyInfo

OID_RSASSA_PSS = "1.2.840.113549.1.1.10"  # RFC 4055 §3.1 / RFC 5756
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"


def _der_read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER TLV at ``pos``: (tag, content, next position); single-byte tags, definite lengths."""
    if pos + 2 > len(data):
        raise PrivacyPassClientError("DER truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise PrivacyPassClientError("DER multi-byte tag")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise PrivacyPassClientError("DER bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise PrivacyPassClientError("DER non-minimal length")
        pos += count
    if pos + length > len(data):
        raise PrivacyPassClientError("DER content truncated")
    return tag, data[pos : pos + length], pos + length


def _der_items(content: bytes) -> list[tuple[int, bytes]]:
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(content):
        tag, value, pos = _der_read(content, pos)
        items.append((tag, value))
    return items


def _der_single(data: bytes, tag: int) -> bytes:
    got, value, end = _der_read(data, 0)
    if got != tag or end != len(data):
        raise PrivacyPassClientError(f"DER: expected exactly one element with tag {tag:#x}")
    return value


def _der_oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise PrivacyPassClientError("DER bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    starting = True
    for byte in content:
        if starting and byte == 0x80:
            raise PrivacyPassClientError("DER non-minimal OID arc")
        value = (value << 7) | (byte & 0x7F)
        starting = not byte & 0x80
        if starting:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _der_uint(content: bytes) -> int:
    if not content or content[0] & 0x80:
        raise PrivacyPassClientError("DER INTEGER empty or negative")
    if len(content) > 1 and content[0] == 0 and not content[1] & 0x80:
        raise PrivacyPassClientError("DER INTEGER not minimal")
    return int.from_bytes(content, "big")


def _algorithm(content: bytes) -> tuple[str, list[tuple[int, bytes]]]:
    """AlgorithmIdentifier content: (OID, parameter elements)."""
    items = _der_items(content)
    if not items or items[0][0] != 0x06:
        raise PrivacyPassClientError("DER AlgorithmIdentifier without OID")
    return _der_oid(items[0][1]), items[1:]


def _hash_is_sha384(content: bytes) -> bool:
    oid, params = _algorithm(content)
    # The parameters of a SHA-2 AlgorithmIdentifier are absent or NULL (RFC 5754 §2).
    return oid == OID_SHA384 and params in ([], [(0x05, b"")])


def parse_token_key(spki: bytes) -> RSAPublicNumbers:
    """RFC 9578 §6.5: a type 0x0002 token key, DER SPKI with id-RSASSA-PSS and its parameters.

    Requires RSASSA-PSS-params (RFC 4055 §3.1) of SHA-384, MGF1 with SHA-384 and salt length 48
    (trailer field absent or 1), and a modulus of Nk = 256 bytes.
    """
    items = _der_items(_der_single(spki, 0x30))
    if len(items) != 2 or items[0][0] != 0x30 or items[1][0] != 0x03:
        raise PrivacyPassClientError("SPKI is not SEQUENCE { AlgorithmIdentifier, BIT STRING }")
    oid, params = _algorithm(items[0][1])
    if oid != OID_RSASSA_PSS:
        raise PrivacyPassClientError(f"token key algorithm {oid} is not id-RSASSA-PSS")
    if len(params) != 1 or params[0][0] != 0x30:
        raise PrivacyPassClientError("id-RSASSA-PSS without RSASSA-PSS-params")
    fields: dict[int, bytes] = {}
    last = -1
    for tag, value in _der_items(params[0][1]):
        number = tag - 0xA0
        if not 0 <= number <= 3 or number <= last:
            raise PrivacyPassClientError("RSASSA-PSS-params: unexpected or misordered field")
        last = number
        fields[number] = _der_single(value, 0x30) if number < 2 else _der_single(value, 0x02)
    # Absent fields take the DEFAULTs (SHA-1, MGF1-SHA-1, 20), which are all wrong here.
    if 0 not in fields or not _hash_is_sha384(fields[0]):
        raise PrivacyPassClientError("RSASSA-PSS hashAlgorithm is not SHA-384")
    if 1 not in fields:
        raise PrivacyPassClientError("RSASSA-PSS maskGenAlgorithm absent (MGF1-SHA-1)")
    mgf_oid, mgf_params = _algorithm(fields[1])
    if mgf_oid != OID_MGF1 or len(mgf_params) != 1 or mgf_params[0][0] != 0x30:
        raise PrivacyPassClientError("RSASSA-PSS maskGenAlgorithm is not MGF1")
    if not _hash_is_sha384(mgf_params[0][1]):
        raise PrivacyPassClientError("RSASSA-PSS MGF1 hash is not SHA-384")
    if 2 not in fields or _der_uint(fields[2]) != SALT_LEN:
        raise PrivacyPassClientError("RSASSA-PSS saltLength is not 48")
    if 3 in fields and _der_uint(fields[3]) != 1:
        raise PrivacyPassClientError("RSASSA-PSS trailerField is not 1")
    bits = items[1][1]
    if not bits or bits[0] != 0:
        raise PrivacyPassClientError("SPKI BIT STRING has unused bits")
    key = _der_items(_der_single(bits[1:], 0x30))
    if len(key) != 2 or key[0][0] != 0x02 or key[1][0] != 0x02:
        raise PrivacyPassClientError("RSAPublicKey is not SEQUENCE { INTEGER, INTEGER }")
    n, e = _der_uint(key[0][1]), _der_uint(key[1][1])
    if (n.bit_length() + 7) // 8 != NK or n % 2 == 0:
        raise PrivacyPassClientError(f"RSA modulus must be {NK * 8} bits and odd")
    if e < 3 or e % 2 == 0 or e >= n:
        raise PrivacyPassClientError("RSA public exponent invalid")
    return RSAPublicNumbers(e, n)


def token_key_id(spki: bytes) -> bytes:
    """RFC 9578 §6.5: SHA-256 of the DER SPKI."""
    return hashlib.sha256(spki).digest()


# --------------------------------------------------------------------------- RFC 9474 / RFC 8017


def _mgf1_sha384(seed: bytes, length: int) -> bytes:
    """RFC 8017 §B.2.1 MGF1 with SHA-384."""
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha384(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _emsa_pss_encode(msg: bytes, em_bits: int, salt: bytes) -> bytes:
    """RFC 8017 §9.1.1 EMSA-PSS-ENCODE with SHA-384 and MGF1-SHA-384; the salt is given."""
    em_len = (em_bits + 7) // 8
    m_hash = hashlib.sha384(msg).digest()
    if em_len < HASH_LEN + len(salt) + 2:
        raise PrivacyPassClientError("encoding error")
    h = hashlib.sha384(b"\x00" * 8 + m_hash + salt).digest()
    db = b"\x00" * (em_len - len(salt) - HASH_LEN - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1_sha384(h, em_len - HASH_LEN - 1), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    return bytes(masked) + h + b"\xbc"


def _modulus_len(public_numbers: RSAPublicNumbers) -> int:
    return (public_numbers.n.bit_length() + 7) // 8


def _blind(
    public_numbers: RSAPublicNumbers, msg: bytes, r: int | None = None, salt: bytes | None = None
) -> tuple[bytes, int]:
    """RFC 9474 §4.2 Blind for RSABSSA-SHA384-PSS-*: (blinded_msg, inv).

    ``msg`` is the prepared message (PrepareIdentity for the Deterministic variant, so the message
    itself). ``r`` and ``salt`` default to fresh randomness; tests inject the vectors' values.
    """
    n, e = public_numbers.n, public_numbers.e
    k = _modulus_len(public_numbers)
    if salt is None:
        salt = secrets.token_bytes(SALT_LEN)
    if len(salt) != SALT_LEN:
        raise PrivacyPassClientError("salt must be 48 bytes")
    m = int.from_bytes(_emsa_pss_encode(msg, n.bit_length() - 1, salt), "big")
    if math.gcd(m, n) != 1:
        raise PrivacyPassClientError("invalid input")
    if r is None:
        while True:
            r = secrets.randbelow(n - 1) + 1
            if math.gcd(r, n) == 1:
                break
    if not 1 <= r < n:
        raise PrivacyPassClientError("blind out of range")
    try:
        inv = pow(r, -1, n)
    except ValueError as exc:
        raise PrivacyPassClientError("blinding error") from exc
    z = (m * pow(r, e, n)) % n
    return z.to_bytes(k, "big"), inv


def _rsassa_pss_verify(public_numbers: RSAPublicNumbers, msg: bytes, sig: bytes) -> None:
    """RFC 8017 §8.1.2 RSASSA-PSS-VERIFY, SHA-384, MGF1-SHA-384, sLen 48 (``cryptography``)."""
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=SALT_LEN)
    try:
        public_numbers.public_key().verify(sig, msg, pss, hashes.SHA384())
    except InvalidSignature as exc:
        raise PrivacyPassClientError("invalid signature") from exc


def _finalize(public_numbers: RSAPublicNumbers, msg: bytes, blind_sig: bytes, inv: int) -> bytes:
    """RFC 9474 §4.4 Finalize: unblind ``blind_sig`` and verify it over ``msg``; returns sig."""
    k = _modulus_len(public_numbers)
    if len(blind_sig) != k:
        raise PrivacyPassClientError("unexpected input size")
    z = int.from_bytes(blind_sig, "big")
    if z >= public_numbers.n:
        raise PrivacyPassClientError("blind signature out of range")
    sig = ((z * inv) % public_numbers.n).to_bytes(k, "big")
    _rsassa_pss_verify(public_numbers, msg, sig)
    return sig


# --------------------------------------------------------------------------- RFC 9578 §6 (type 0x0002)


@dataclass(frozen=True)
class _PendingToken:
    """Client state between TokenRequest and TokenResponse."""

    public_numbers: RSAPublicNumbers
    token_input: bytes
    inv: int


def _create_token_request(
    challenge_raw: bytes,
    token_key: bytes,
    *,
    nonce: bytes | None = None,
    r: int | None = None,
    salt: bytes | None = None,
) -> tuple[bytes, _PendingToken]:
    """RFC 9578 §6.1: the TokenRequest for a type 0x0002 challenge, and the state to finalize it."""
    token_type = parse_token_challenge(challenge_raw)[0]
    if token_type != TOKEN_TYPE_BLIND_RSA:
        raise PrivacyPassClientError(f"token type {token_type:#06x} is not supported")
    public_numbers = parse_token_key(token_key)
    key_id = token_key_id(token_key)
    token_input = encode_token_input(
        token_type, secrets.token_bytes(NONCE_LEN) if nonce is None else nonce, challenge_raw, key_id
    )
    blinded_msg, inv = _blind(public_numbers, token_input, r=r, salt=salt)
    request = token_type.to_bytes(2, "big") + key_id[-1:] + blinded_msg
    return request, _PendingToken(public_numbers, token_input, inv)


def _finalize_token(pending: _PendingToken, token_response: bytes) -> bytes:
    """RFC 9578 §6.3: TokenResponse (blind_sig[Nk]) → the encoded Token."""
    if len(token_response) != NK:
        raise PrivacyPassClientError(f"TokenResponse is {len(token_response)} bytes, not {NK}")
    authenticator = _finalize(pending.public_numbers, pending.token_input, token_response, pending.inv)
    return pending.token_input + authenticator


def verify_token(token: bytes, token_key: bytes, challenge_raw: bytes | None = None) -> None:
    """RFC 9578 §6.4: check a type 0x0002 Token against the token key (and the challenge, if given)."""
    if len(token) != 2 + NONCE_LEN + 32 + NID + NK:
        raise PrivacyPassClientError("token has the wrong length for type 0x0002")
    if int.from_bytes(token[:2], "big") != TOKEN_TYPE_BLIND_RSA:
        raise PrivacyPassClientError("token is not of type 0x0002")
    if token[2 + NONCE_LEN + 32 : 2 + NONCE_LEN + 32 + NID] != token_key_id(token_key):
        raise PrivacyPassClientError("token_key_id does not match the token key")
    if challenge_raw is not None and token[2 + NONCE_LEN : 2 + NONCE_LEN + 32] != (
        hashlib.sha256(challenge_raw).digest()
    ):
        raise PrivacyPassClientError("challenge_digest does not match the challenge")
    split = 2 + NONCE_LEN + 32 + NID
    _rsassa_pss_verify(parse_token_key(token_key), token[:split], token[split:])


# --------------------------------------------------------------------------- HTTP

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _exchange(req: urllib.request.Request, expected_media_type: str, what: str) -> bytes:
    if urllib.parse.urlsplit(req.full_url).scheme not in ("http", "https"):
        raise PrivacyPassClientError(f"{what}: only http and https URLs are supported")
    try:
        with _OPENER.open(req, timeout=TIMEOUT_SECONDS) as resp:
            status, ctype, body = resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as exc:
        raise PrivacyPassClientError(f"{what} answered HTTP {exc.code}", status=exc.code) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise PrivacyPassClientError(f"{what} failed: {exc}") from exc
    if status != 200:
        raise PrivacyPassClientError(f"{what} answered HTTP {status}", status=status)
    if _media_type(ctype) != expected_media_type:
        raise PrivacyPassClientError(f"{what} answered Content-Type {ctype!r}", status=status)
    return bytes(body)


def fetch_issuer_directory(url: str) -> dict[str, Any]:
    """RFC 9578 §4: GET the issuer directory and check its shape.

    The returned object has ``issuer-request-uri`` (a string, possibly relative: see
    :func:`issuer_request_url`) and ``token-keys``, a list of objects with an integer
    ``token-type``, a base64url ``token-key`` and an optional integer ``not-before``.
    """
    req = urllib.request.Request(url, headers={"Accept": ISSUER_DIRECTORY_MEDIA_TYPE}, method="GET")
    body = _exchange(req, ISSUER_DIRECTORY_MEDIA_TYPE, "issuer directory")
    try:
        directory = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrivacyPassClientError("issuer directory is not JSON") from exc
    if not isinstance(directory, dict):
        raise PrivacyPassClientError("issuer directory is not a JSON object")
    if not isinstance(directory.get("issuer-request-uri"), str):
        raise PrivacyPassClientError("issuer directory lacks issuer-request-uri")
    keys = directory.get("token-keys")
    if not isinstance(keys, list):
        raise PrivacyPassClientError("issuer directory lacks token-keys")
    for entry in keys:
        if not isinstance(entry, dict):
            raise PrivacyPassClientError("token-keys entry is not an object")
        token_type, token_key = entry.get("token-type"), entry.get("token-key")
        if not isinstance(token_type, int) or isinstance(token_type, bool):
            raise PrivacyPassClientError("token-keys entry lacks an integer token-type")
        if not isinstance(token_key, str):
            raise PrivacyPassClientError("token-keys entry lacks a token-key string")
        b64url_decode(token_key)
        not_before = entry.get("not-before")
        if not_before is not None and (not isinstance(not_before, int) or isinstance(not_before, bool)):
            raise PrivacyPassClientError("token-keys not-before is not an integer")
    return directory


def issuer_request_url(directory: dict[str, Any], directory_url: str) -> str:
    """The absolute issuer request URL: ``issuer-request-uri`` resolved against the directory URL."""
    return urllib.parse.urljoin(directory_url, str(directory["issuer-request-uri"]))


def directory_token_keys(directory: dict[str, Any], token_type: int, now: float | None = None) -> list[bytes]:
    """The decoded keys of ``token_type`` already valid (``not-before`` ≤ now), in preference order."""
    current = time.time() if now is None else now
    return [
        b64url_decode(entry["token-key"])
        for entry in directory["token-keys"]
        if entry["token-type"] == token_type and entry.get("not-before", 0) <= current
    ]


def _post_token_request(url: str, token_request: bytes, bearer_credential: str | None) -> bytes:
    """RFC 9578 §6.1-§6.2: POST the TokenRequest, return the TokenResponse."""
    headers = {
        "Content-Type": TOKEN_REQUEST_MEDIA_TYPE,
        "Accept": TOKEN_RESPONSE_MEDIA_TYPE,
        "Cache-Control": "no-cache, no-store",
    }
    if bearer_credential is not None:
        headers["Authorization"] = f"Bearer {bearer_credential}"
    req = urllib.request.Request(url, data=token_request, headers=headers, method="POST")
    return _exchange(req, TOKEN_RESPONSE_MEDIA_TYPE, "token request")


def issue_token(challenge: Challenge, token_request_url: str, bearer_credential: str | None) -> bytes:
    """Run RFC 9578 §6 issuance for a type 0x0002 challenge; returns the encoded, verified Token.

    Fresh nonce, salt and blind; ``Authorization: Bearer <credential>`` on the token request when
    a credential is given (the attester's authentication of this client, outside the RFCs).
    """
    if challenge.token_type != TOKEN_TYPE_BLIND_RSA:
        raise PrivacyPassClientError(f"token type {challenge.token_type:#06x} is not supported")
    if not challenge.token_key:
        raise PrivacyPassClientError("challenge carries no token-key")
    token_request, pending = _create_token_request(challenge.raw, challenge.token_key)
    token_response = _post_token_request(token_request_url, token_request, bearer_credential)
    return _finalize_token(pending, token_response)
