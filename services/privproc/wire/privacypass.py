"""Privacy Pass structures, RFC 9577 (HTTP authentication) and RFC 9578 (issuance) — sans-I/O.

Token challenges, tokens, the ``PrivateToken`` HTTP authentication
parameters, token requests/responses for types 0x0001 (VOPRF P-384) and
0x0002 (blind RSA 2048), and the issuer directory. The cryptography lives in
:mod:`privproc.crypto.voprf` and :mod:`privproc.crypto.blindrsa`; this module
only frames and parses, for the ACS, the gateway and the client alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from privproc.errors import TruncatedError, WireError

TOKEN_TYPE_VOPRF = 0x0001
TOKEN_TYPE_BLIND_RSA = 0x0002

MEDIA_TYPE_TOKEN_REQUEST = "application/private-token-request"
MEDIA_TYPE_TOKEN_RESPONSE = "application/private-token-response"
MEDIA_TYPE_ISSUER_DIRECTORY = "application/private-token-issuer-directory"
ISSUER_DIRECTORY_PATH = "/.well-known/private-token-issuer-directory"
AUTH_SCHEME = "PrivateToken"

NONCE_LEN = 32
DIGEST_LEN = 32
KEY_ID_LEN = 32
REDEMPTION_CONTEXT_LEN = 32

#: Per token type: (Nk authenticator length, blinded message length, response length).
_SIZES = {
    TOKEN_TYPE_VOPRF: (48, 49, 49 + 2 * 48),
    TOKEN_TYPE_BLIND_RSA: (256, 256, 256),
}


class PrivacyPassFormatError(WireError):
    """A Privacy Pass structure or header that does not parse."""


def authenticator_length(token_type: int) -> int:
    try:
        return _SIZES[token_type][0]
    except KeyError:
        raise PrivacyPassFormatError("unsupported token type") from None


def b64url_encode(data: bytes) -> str:
    """base64url WITH padding, as RFC 9577 and RFC 9578 require of every field they define.

    RFC 9577 §2.1, ``challenge``: "This document follows the default padding
    behavior described in Section 3.2 of [RFC4648], so the base64url value
    MUST include padding." — and the same for ``token-key`` (§2.1: "As with
    "challenge", the base64url value MUST include padding.") and for the
    ``token`` credential (§2.2). RFC 9578 §4, issuer directory ``token-key``:
    "The base64url encoding of the Public Key for use with the issuance
    protocol, including padding". Clients that follow the RFC refuse
    unpadded values, so we never send one.
    """
    return base64.urlsafe_b64encode(data).decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*(={0,2})")


def b64url_decode(text: str) -> bytes:
    """base64url, padded (as the RFCs require senders to) or unpadded; nothing looser.

    The RFCs bind senders only; accepting a value whose padding was dropped
    is harmless and is what deployed peers send. Anything else that is not
    RFC 4648 §5 is refused: another alphabet, padding in the wrong amount,
    or non-zero bits after the last byte (so that one value has one spelling).
    """
    match = _B64URL.fullmatch(text)
    if match is None:
        raise PrivacyPassFormatError("invalid base64url")
    bare = text.rstrip("=")
    if match.group(1) and len(text) % 4:
        raise PrivacyPassFormatError("invalid base64url padding")
    if len(bare) % 4 == 1:
        raise PrivacyPassFormatError("invalid base64url length")
    padded = bare + "=" * (-len(bare) % 4)
    if match.group(1) and padded != text:
        raise PrivacyPassFormatError("invalid base64url padding")
    try:
        data = base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError):
        raise PrivacyPassFormatError("invalid base64url") from None
    if base64.urlsafe_b64encode(data).decode("ascii") != padded:
        raise PrivacyPassFormatError("non-canonical base64url")
    return data


def token_key_id(encoded_public_key: bytes) -> bytes:
    """RFC 9578: the key id is SHA-256 of the public key's encoding."""
    return hashlib.sha256(encoded_public_key).digest()


def truncated_key_id(key_id: bytes) -> int:
    """RFC 9578 §5.3/§6.3: the least significant byte of the key id."""
    return key_id[-1]


class _Reader:
    """Bounded reads over a byte string; every overrun is a typed error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or len(self.data) - self.pos < n:
            raise TruncatedError("Privacy Pass structure truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def end(self) -> None:
        if self.pos != len(self.data):
            raise PrivacyPassFormatError("trailing bytes")


@dataclass(frozen=True)
class TokenChallenge:
    """RFC 9577 §2.1.1."""

    token_type: int
    issuer_name: str
    redemption_context: bytes = b""
    origin_info: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.redemption_context) not in (0, REDEMPTION_CONTEXT_LEN):
            raise ValueError("redemption_context must be empty or 32 bytes")
        if not self.issuer_name:
            raise ValueError("issuer_name must not be empty")

    def encode(self) -> bytes:
        issuer = self.issuer_name.encode("ascii")
        origins = ",".join(self.origin_info).encode("ascii")
        return (
            struct.pack(">HH", self.token_type, len(issuer))
            + issuer
            + bytes([len(self.redemption_context)])
            + self.redemption_context
            + struct.pack(">H", len(origins))
            + origins
        )

    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes) -> TokenChallenge:
        reader = _Reader(data)
        token_type = reader.u16()
        issuer = reader.take(reader.u16())
        context = reader.take(reader.u8())
        origins = reader.take(reader.u16())
        reader.end()
        if not issuer:
            raise PrivacyPassFormatError("empty issuer name")
        if len(context) not in (0, REDEMPTION_CONTEXT_LEN):
            raise PrivacyPassFormatError("bad redemption context length")
        try:
            issuer_name = issuer.decode("ascii")
            origin_info = tuple(origins.decode("ascii").split(",")) if origins else ()
        except UnicodeDecodeError:
            raise PrivacyPassFormatError("non-ASCII name") from None
        return cls(token_type, issuer_name, context, origin_info)


@dataclass(frozen=True)
class Token:
    """RFC 9577 §2.2: what a client redeems."""

    token_type: int
    nonce: bytes
    challenge_digest: bytes
    token_key_id: bytes
    authenticator: bytes

    def authenticator_input(self) -> bytes:
        """What the authenticator signs or evaluates (RFC 9578 §5.5, §6.5)."""
        return token_authenticator_input(
            self.token_type, self.nonce, self.challenge_digest, self.token_key_id
        )

    def encode(self) -> bytes:
        return self.authenticator_input() + self.authenticator

    @classmethod
    def decode(cls, data: bytes) -> Token:
        reader = _Reader(data)
        token_type = reader.u16()
        nk = authenticator_length(token_type)
        token = cls(
            token_type,
            reader.take(NONCE_LEN),
            reader.take(DIGEST_LEN),
            reader.take(KEY_ID_LEN),
            reader.take(nk),
        )
        reader.end()
        return token


def token_authenticator_input(token_type: int, nonce: bytes, challenge_digest: bytes, key_id: bytes) -> bytes:
    if (len(nonce), len(challenge_digest), len(key_id)) != (NONCE_LEN, DIGEST_LEN, KEY_ID_LEN):
        raise ValueError("nonce, digest and key id are 32 bytes each")
    return struct.pack(">H", token_type) + nonce + challenge_digest + key_id


@dataclass(frozen=True)
class TokenRequest:
    """RFC 9578 §5.3 (type 1) and §6.3 (type 2)."""

    token_type: int
    truncated_token_key_id: int
    blinded_msg: bytes

    def encode(self) -> bytes:
        return struct.pack(">HB", self.token_type, self.truncated_token_key_id) + self.blinded_msg

    @classmethod
    def decode(cls, data: bytes) -> TokenRequest:
        reader = _Reader(data)
        token_type = reader.u16()
        if token_type not in _SIZES:
            raise PrivacyPassFormatError("unsupported token type")
        request = cls(token_type, reader.u8(), reader.take(_SIZES[token_type][1]))
        reader.end()
        return request


def decode_token_response(token_type: int, data: bytes) -> bytes:
    """Check a TokenResponse's length for ``token_type``; returns it unchanged."""
    if token_type not in _SIZES:
        raise PrivacyPassFormatError("unsupported token type")
    if len(data) != _SIZES[token_type][2]:
        raise PrivacyPassFormatError("bad token response length")
    return data


# --- RFC 9577 HTTP authentication parameters --------------------------------------------------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME_OR_NAME = re.compile(rf"[ \t]*({_TOKEN})[ \t]*")
_VALUE = re.compile(rf'[ \t]*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))[ \t]*')
_TOKEN68 = re.compile(r"[ \t]*([A-Za-z0-9._~+/-]+=*)[ \t]*(?=,|$)")


def _parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """RFC 9110 §11.6.1 challenge lists: ``scheme name=value, ..., scheme2 ...``.

    Returns (scheme, params) pairs; parameter names are lowercased, quoted
    values unescaped. token68 credentials are accepted and ignored.
    """
    out: list[tuple[str, dict[str, str]]] = []
    pos, n = 0, len(header)
    while pos < n:
        if header[pos] in ", \t":
            pos += 1
            continue
        match = _SCHEME_OR_NAME.match(header, pos)
        if match is None:
            raise PrivacyPassFormatError("malformed authentication header")
        pos = match.end()
        if pos < n and header[pos] == "=" and out:
            # name=value, belonging to the current challenge
            value = _VALUE.match(header, pos + 1)
            if value is None:
                raise PrivacyPassFormatError("malformed authentication header")
            name = match.group(1).lower()
            params = out[-1][1]
            if name in params:
                raise PrivacyPassFormatError("duplicate auth parameter")
            quoted, bare = value.group(1), value.group(2)
            params[name] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            pos = value.end()
        else:
            out.append((match.group(1), {}))
            token68 = _TOKEN68.match(header, pos)
            if token68 is not None and "=" not in header[pos : token68.end()].rstrip("= \t"):
                pos = token68.end()
    return out


def _split_scheme(header: str) -> dict[str, str]:
    challenges = _parse_challenges(header)
    if len(challenges) != 1 or challenges[0][0].lower() != AUTH_SCHEME.lower():
        raise PrivacyPassFormatError("not a PrivateToken credential")
    return challenges[0][1]


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate: PrivateToken`` challenge (RFC 9577 §2.1)."""

    challenge: TokenChallenge
    token_key: bytes
    max_age: int | None = None

    def header_value(self) -> str:
        value = (
            f'{AUTH_SCHEME} challenge="{b64url_encode(self.challenge.encode())}", '
            f'token-key="{b64url_encode(self.token_key)}"'
        )
        return value if self.max_age is None else f"{value}, max-age={self.max_age}"

    @classmethod
    def parse(cls, header: str) -> Challenge:
        """Exactly one ``PrivateToken`` challenge."""
        return cls.from_params(_split_scheme(header))

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Challenge:
        if "challenge" not in params or "token-key" not in params:
            raise PrivacyPassFormatError("challenge lacks a required parameter")
        max_age = params.get("max-age")
        if max_age is not None and not max_age.isdigit():
            raise PrivacyPassFormatError("bad max-age")
        return cls(
            TokenChallenge.decode(b64url_decode(params["challenge"])),
            b64url_decode(params["token-key"]),
            int(max_age) if max_age is not None else None,
        )


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Every usable ``PrivateToken`` challenge in a ``WWW-Authenticate`` value.

    Other schemes, unknown parameters and challenges that do not parse
    (GREASE) are ignored, as RFC 9577 §2.1 asks of clients.
    """
    found: list[Challenge] = []
    for scheme, params in _parse_challenges(header):
        if scheme.lower() != AUTH_SCHEME.lower():
            continue
        try:
            found.append(Challenge.from_params(params))
        except WireError:
            continue
    return found


def authorization_header(token: Token) -> str:
    """``Authorization: PrivateToken token="..."`` (RFC 9577 §2.2)."""
    return f'{AUTH_SCHEME} token="{b64url_encode(token.encode())}"'


def parse_authorization(header: str) -> Token:
    """The token of an ``Authorization: PrivateToken token="..."`` credential (RFC 9577 §2.2).

    "All unknown or unsupported parameters to "PrivateToken" authentication
    credentials MUST be ignored" (§2.2): only ``token`` is read.
    """
    params = _split_scheme(header)
    if "token" not in params:
        raise PrivacyPassFormatError("authorization lacks a token parameter")
    return Token.decode(b64url_decode(params["token"]))


# --- RFC 9578 §4 issuer directory ---------------------------------------------------------


@dataclass(frozen=True)
class DirectoryKey:
    token_type: int
    token_key: bytes
    not_before: int | None = None


@dataclass(frozen=True)
class IssuerDirectory:
    issuer_request_uri: str
    token_keys: tuple[DirectoryKey, ...]

    def encode(self) -> bytes:
        keys: list[dict[str, Any]] = []
        for key in self.token_keys:
            item: dict[str, Any] = {"token-type": key.token_type, "token-key": b64url_encode(key.token_key)}
            if key.not_before is not None:
                item["not-before"] = key.not_before
            keys.append(item)
        body = {"issuer-request-uri": self.issuer_request_uri, "token-keys": keys}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> IssuerDirectory:
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise PrivacyPassFormatError("issuer directory is not JSON") from None
        if not isinstance(parsed, dict):
            raise PrivacyPassFormatError("issuer directory is not an object")
        uri, keys = parsed.get("issuer-request-uri"), parsed.get("token-keys")
        if not isinstance(uri, str) or not isinstance(keys, list) or len(keys) > 64:
            raise PrivacyPassFormatError("issuer directory lacks its fields")
        out: list[DirectoryKey] = []
        for item in keys:
            if not isinstance(item, dict):
                raise PrivacyPassFormatError("bad token key entry")
            token_type, token_key, not_before = (
                item.get("token-type"),
                item.get("token-key"),
                item.get("not-before"),
            )
            if (
                not isinstance(token_type, int)
                or isinstance(token_type, bool)
                or not isinstance(token_key, str)
                or not (
                    not_before is None or (isinstance(not_before, int) and not isinstance(not_before, bool))
                )
            ):
                raise PrivacyPassFormatError("bad token key entry")
            out.append(DirectoryKey(token_type, b64url_decode(token_key), not_before))
        return cls(uri, tuple(out))
