"""Oblivious HTTP message encapsulation, RFC 9458 — sans-I/O.

Key configurations (§3) and ``application/ohttp-keys`` lists (§3.2),
request encapsulation (§4.3) and response encapsulation (§4.4), for the
client and for a gateway holding several keys at once (rotation).

Everything here is pure: bytes in, bytes out. The HTTP and gRPC adapters
carry the bytes; the error classes say which HTTP answer each failure gets
(RFC 9458 §5.2, §5.3) without telling an attacker more than the RFC does.
"""

from __future__ import annotations

import hmac as stdlib_hmac
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privproc.errors import CryptoError, TruncatedError, WireError
from privproc.wire import hpke

MEDIA_TYPE_REQUEST = "message/ohttp-req"
MEDIA_TYPE_RESPONSE = "message/ohttp-res"
MEDIA_TYPE_KEYS = "application/ohttp-keys"
#: RFC 9458 §5.3 problem type for a key configuration the gateway won't use.
KEY_PROBLEM_TYPE = "https://iana.org/assignments/http-problem-types#ohttp-key"

REQUEST_LABEL = b"message/bhttp request"
RESPONSE_LABEL = b"message/bhttp response"

#: Public key sizes of the HPKE KEMs (RFC 9180 §7.1), to parse configs we
#: do not use: a list may advertise them and we must skip them cleanly.
_KEM_PUBLIC_KEY_SIZES = {0x0010: 65, 0x0011: 97, 0x0012: 133, 0x0020: 32, 0x0021: 56}

_HEADER = struct.Struct(">BHHH")  # key_id, kem_id, kdf_id, aead_id


class OhttpFormatError(WireError):
    """An encapsulated message or key configuration that does not parse."""


class KeyConfigRejectedError(CryptoError):
    """The gateway cannot use the request's key (RFC 9458 §5.3).

    Unknown key id, unsupported suite and failed decryption all raise this
    one type with one message, so the answer is no oracle for which.
    """

    reason = "ohttp_key"
    problem_type = KEY_PROBLEM_TYPE


class ResponseDecryptError(CryptoError):
    """The client could not open an encapsulated response."""

    reason = "response_decrypt"


@dataclass(frozen=True)
class SymmetricSuite:
    """A (KDF, AEAD) pair a key configuration accepts."""

    kdf_id: int
    aead_id: int


@dataclass(frozen=True)
class KeyConfig:
    """One key configuration (RFC 9458 §3.1)."""

    key_id: int
    kem_id: int
    public_key: bytes
    suites: tuple[SymmetricSuite, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 0xFF:
            raise ValueError("key_id must fit in one byte")
        size = _KEM_PUBLIC_KEY_SIZES.get(self.kem_id)
        if size is not None and len(self.public_key) != size:
            raise ValueError("public key length does not match the KEM")
        if not self.suites:
            raise ValueError("a key configuration needs at least one symmetric suite")

    def encode(self) -> bytes:
        """The key configuration bytes (§3.1)."""
        suites = b"".join(struct.pack(">HH", s.kdf_id, s.aead_id) for s in self.suites)
        return (
            struct.pack(">BH", self.key_id, self.kem_id)
            + self.public_key
            + struct.pack(">H", len(suites))
            + suites
        )

    @classmethod
    def decode(cls, data: bytes) -> KeyConfig:
        """Parse exactly one key configuration; trailing bytes are an error."""
        config, end = _decode_key_config(data, 0)
        if end != len(data):
            raise OhttpFormatError("trailing bytes after key configuration")
        return config

    def supported_suite(self) -> SymmetricSuite | None:
        """The first of this config's suites that privproc's HPKE can use."""
        for suite in self.suites:
            if hpke.Suite(self.kem_id, suite.kdf_id, suite.aead_id).is_supported:
                return suite
        return None


def _decode_key_config(data: bytes, offset: int) -> tuple[KeyConfig, int]:
    if len(data) - offset < 3:
        raise TruncatedError("key configuration truncated")
    key_id, kem_id = struct.unpack_from(">BH", data, offset)
    npk = _KEM_PUBLIC_KEY_SIZES.get(kem_id)
    if npk is None:
        raise OhttpFormatError("unknown KEM in key configuration")
    offset += 3
    if len(data) - offset < npk + 2:
        raise TruncatedError("key configuration truncated")
    public_key = data[offset : offset + npk]
    offset += npk
    (suites_len,) = struct.unpack_from(">H", data, offset)
    offset += 2
    if suites_len == 0 or suites_len % 4:
        raise OhttpFormatError("bad symmetric suite list length")
    if len(data) - offset < suites_len:
        raise TruncatedError("key configuration truncated")
    suites = tuple(
        SymmetricSuite(*struct.unpack_from(">HH", data, offset + i)) for i in range(0, suites_len, 4)
    )
    return KeyConfig(key_id, kem_id, public_key, suites), offset + suites_len


def encode_key_config_list(configs: Iterable[KeyConfig]) -> bytes:
    """The ``application/ohttp-keys`` body: each config with a 2-byte length (§3.2)."""
    out = bytearray()
    for config in configs:
        encoded = config.encode()
        out += struct.pack(">H", len(encoded)) + encoded
    return bytes(out)


def decode_key_config_list(data: bytes, *, max_configs: int = 64) -> list[KeyConfig]:
    """Parse an ``application/ohttp-keys`` body.

    Configurations with a KEM we cannot parse are skipped (the length prefix
    lets us), as §3.2 expects of clients; a malformed list is an error.
    """
    configs: list[KeyConfig] = []
    offset = 0
    entries = 0
    while offset < len(data):
        entries += 1
        if entries > max_configs:
            raise OhttpFormatError("too many key configurations")
        if len(data) - offset < 2:
            raise TruncatedError("key configuration list truncated")
        (length,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if len(data) - offset < length:
            raise TruncatedError("key configuration list truncated")
        chunk = data[offset : offset + length]
        offset += length
        if len(chunk) >= 3 and struct.unpack_from(">H", chunk, 1)[0] not in _KEM_PUBLIC_KEY_SIZES:
            continue
        try:
            configs.append(KeyConfig.decode(chunk))
        except ValueError as err:  # e.g. an empty suite list in an otherwise parsable config
            raise OhttpFormatError("invalid key configuration") from err
    return configs


def select_key_config(configs: Sequence[KeyConfig]) -> tuple[KeyConfig, SymmetricSuite]:
    """The first configuration (and suite) privproc can encapsulate to."""
    for config in configs:
        suite = config.supported_suite()
        if suite is not None:
            return config, suite
    raise KeyConfigRejectedError("no usable key configuration")


#: Length of the request header (key id and the three algorithm ids, §4.1).
REQUEST_HEADER_SIZE = _HEADER.size


def request_header(config: KeyConfig, suite: SymmetricSuite) -> bytes:
    """The ``hdr`` of §4.3 (and of chunked OHTTP): key id, KEM, KDF and AEAD ids."""
    return _HEADER.pack(config.key_id, config.kem_id, suite.kdf_id, suite.aead_id)


def response_keys(secret: bytes, enc: bytes, response_nonce: bytes) -> tuple[bytes, bytes]:
    """§4.4: aead_key and aead_nonce from the exported secret (HKDF-SHA256).

    prk = Extract(enc || response_nonce, secret); key = Expand(prk, "key", Nk);
    nonce = Expand(prk, "nonce", Nn). Both lengths are under one SHA-256
    block, so each Expand is the single block HMAC(prk, info || 0x01).
    """
    prk = stdlib_hmac.digest(enc + response_nonce, secret, "sha256")
    key = stdlib_hmac.digest(prk, b"key\x01", "sha256")[: hpke.NK]
    nonce = stdlib_hmac.digest(prk, b"nonce\x01", "sha256")[: hpke.NN]
    return key, nonce


#: ``max(Nn, Nk)``: the length of the response nonce and of the exported secret (§4.4).
RESPONSE_NONCE_LEN = max(hpke.NN, hpke.NK)


class ClientContext:
    """What the client keeps to open the one response to its request."""

    __slots__ = ("_enc", "_secret")

    def __init__(self, enc: bytes, secret: bytes) -> None:
        self._enc = enc
        self._secret = secret

    def decapsulate_response(self, encapsulated: bytes) -> bytes:
        """Open an encapsulated response (§4.4); raises on any tampering."""

        if len(encapsulated) < RESPONSE_NONCE_LEN + hpke.NT:
            raise TruncatedError("encapsulated response truncated")
        nonce = encapsulated[:RESPONSE_NONCE_LEN]
        key, aead_nonce = response_keys(self._secret, self._enc, nonce)
        try:
            return AESGCM(key).decrypt(aead_nonce, encapsulated[RESPONSE_NONCE_LEN:], None)
        except InvalidTag as err:
            raise ResponseDecryptError("encapsulated response did not authenticate") from err


def encapsulate_request(
    config: KeyConfig,
    request: bytes,
    *,
    suite: SymmetricSuite | None = None,
    ephemeral_secret: bytes | None = None,
) -> tuple[bytes, ClientContext]:
    """Encapsulate a Binary HTTP ``request`` to ``config`` (§4.3).

    Returns the ``message/ohttp-req`` body and the context that opens the
    response. ``ephemeral_secret`` is for test vectors only.
    """
    if suite is None:
        suite = config.supported_suite()
        if suite is None:
            raise KeyConfigRejectedError("no usable key configuration")
    header = request_header(config, suite)
    enc, ctx = hpke.setup_sender(
        config.public_key,
        REQUEST_LABEL + b"\x00" + header,
        suite=hpke.Suite(config.kem_id, suite.kdf_id, suite.aead_id),
        ephemeral_secret=ephemeral_secret,
    )
    ciphertext = ctx.seal(request)
    secret = ctx.export(RESPONSE_LABEL, RESPONSE_NONCE_LEN)
    return header + enc + ciphertext, ClientContext(enc, secret)


@dataclass(frozen=True)
class GatewayKey:
    """A key configuration with its private key, as a gateway holds it."""

    config: KeyConfig
    secret: bytes = field(repr=False)

    @classmethod
    def generate(cls, key_id: int) -> GatewayKey:
        """A fresh X25519 key for the default suite under ``key_id``."""
        pair = hpke.generate_key_pair()
        return cls.from_secret(key_id, pair.secret)

    @classmethod
    def derive(cls, key_id: int, ikm: bytes) -> GatewayKey:
        """The key RFC 9180 ``DeriveKeyPair(ikm)`` gives, under ``key_id``: the same ``ikm``, the same key."""
        return cls.from_secret(key_id, hpke.derive_key_pair(ikm).secret)

    @classmethod
    def from_secret(cls, key_id: int, secret: bytes) -> GatewayKey:
        pair = hpke.key_pair_from_secret(secret)
        config = KeyConfig(
            key_id=key_id,
            kem_id=hpke.KEM_X25519_HKDF_SHA256,
            public_key=pair.public,
            suites=(SymmetricSuite(hpke.KDF_HKDF_SHA256, hpke.AEAD_AES_128_GCM),),
        )
        return cls(config=config, secret=secret)


class ServerContext:
    """What the gateway keeps to answer one decapsulated request."""

    __slots__ = ("_enc", "_secret")

    def __init__(self, enc: bytes, secret: bytes) -> None:
        self._enc = enc
        self._secret = secret

    def encapsulate_response(self, response: bytes, *, response_nonce: bytes | None = None) -> bytes:
        """Encapsulate a Binary HTTP ``response`` (§4.4) under a fresh nonce.

        ``response_nonce`` is for test vectors only.
        """

        nonce = secrets.token_bytes(RESPONSE_NONCE_LEN) if response_nonce is None else response_nonce
        if len(nonce) != RESPONSE_NONCE_LEN:
            raise ValueError("response nonce has the wrong length")
        key, aead_nonce = response_keys(self._secret, self._enc, nonce)
        return nonce + AESGCM(key).encrypt(aead_nonce, response, None)


class Keyring:
    """The keys a gateway accepts requests for, by key id (§3, rotation)."""

    def __init__(self, keys: Iterable[GatewayKey]) -> None:
        self._keys: dict[int, GatewayKey] = {}
        self._loaded: dict[int, hpke.RecipientKey] = {}
        for key in keys:
            if key.config.key_id in self._keys:
                raise ValueError("duplicate key id in keyring")
            self._keys[key.config.key_id] = key
            self._loaded[key.config.key_id] = hpke.RecipientKey(key.secret)

    def key_ids(self) -> list[int]:
        return sorted(self._keys)

    def decapsulate_request(self, encapsulated: bytes) -> tuple[bytes, ServerContext]:
        """Open a ``message/ohttp-req`` body: ``(binary_http_request, context)``."""
        minimum = _HEADER.size + hpke.NENC + hpke.NT
        if len(encapsulated) < minimum:
            raise TruncatedError("encapsulated request truncated")
        header = encapsulated[: _HEADER.size]
        enc = encapsulated[_HEADER.size : _HEADER.size + hpke.NENC]
        ciphertext = encapsulated[_HEADER.size + hpke.NENC :]
        ctx = self.recipient_context(header, enc, REQUEST_LABEL)
        try:
            request = ctx.open(ciphertext)
            secret = ctx.export(RESPONSE_LABEL, RESPONSE_NONCE_LEN)
        except CryptoError as err:
            raise KeyConfigRejectedError("key configuration not acceptable") from err
        return request, ServerContext(enc, secret)

    def recipient_context(self, header: bytes, enc: bytes, label: bytes) -> hpke.Context:
        """The HPKE context for a request ``header`` (§4.1) and ``enc``, with info ``label || 0 || header``.

        Shared with chunked OHTTP, which differs only in ``label``. Raises
        :class:`KeyConfigRejectedError` for an unknown key id, a suite the
        key does not offer, or an ``enc`` HPKE refuses (one answer for all).
        """
        if len(header) != _HEADER.size:
            raise KeyConfigRejectedError("key configuration not acceptable")
        key_id, kem_id, kdf_id, aead_id = _HEADER.unpack(header)
        key = self._keys.get(key_id)
        suite = SymmetricSuite(kdf_id, aead_id)
        if key is None or kem_id != key.config.kem_id or suite not in key.config.suites:
            raise KeyConfigRejectedError("key configuration not acceptable")
        try:
            return hpke.setup_recipient(
                enc,
                self._loaded[key_id],
                label + b"\x00" + header,
                suite=hpke.Suite(kem_id, kdf_id, aead_id),
            )
        except CryptoError as err:
            raise KeyConfigRejectedError("key configuration not acceptable") from err
