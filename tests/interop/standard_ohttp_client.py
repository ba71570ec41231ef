"""A minimal, standard Oblivious HTTP client written from the RFCs alone.

It exists to show that a client with no knowledge of privproc can talk to the
privproc OHTTP gateway and relay.  It deliberately imports nothing from
``privproc`` and does not use ``pyhpke``: only the standard library and the
``cryptography`` primitives X25519, HMAC/HKDF-Expand (SHA-256) and AES-GCM.

* RFC 9180 (HPKE): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base
  mode, single-shot seal at sequence 0 and the secret exporter.
* RFC 9458 (OHTTP): key configurations, ``application/ohttp-keys``,
  encapsulation of requests and responses, the HTTP binding.
* RFC 9292 (Binary HTTP): known-length request encoding and response decoding.
"""

from __future__ import annotations

import hmac
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

# RFC 9180 §7: identifiers and sizes of the one suite this client speaks.
KEM_X25519_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_128_GCM = 0x0001
N_SECRET = 32  # DHKEM(X25519) Nsecret
N_PK = 32  # DHKEM(X25519) Npk (= Nenc)
N_H = 32  # HKDF-SHA256 Nh
N_K = 16  # AES-128-GCM Nk
N_N = 12  # AES-128-GCM Nn
N_T = 16  # AES-128-GCM Nt

REQUEST_LABEL = b"message/bhttp request"  # RFC 9458 §4.3
RESPONSE_LABEL = b"message/bhttp response"  # RFC 9458 §4.4
KEYS_MEDIA_TYPE = "application/ohttp-keys"  # RFC 9458 §3.2
REQUEST_MEDIA_TYPE = "message/ohttp-req"  # RFC 9458 §4.1
RESPONSE_MEDIA_TYPE = "message/ohttp-res"  # RFC 9458 §4.2
TIMEOUT_SECONDS = 10.0


class OhttpClientError(ValueError):
    """Any failure of this client: malformed input, bad HTTP exchange, failed decryption."""


# --------------------------------------------------------------------------- RFC 9180


def i2osp(value: int, length: int) -> bytes:
    """RFC 9180 §3: I2OSP, big-endian encoding on ``length`` bytes."""
    return value.to_bytes(length, "big")


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 §2.2 Extract with SHA-256 (an empty salt is the same key as HashLen zeros)."""
    return hmac.digest(salt, ikm, "sha256")


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 §2.3 Expand with SHA-256."""
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    """RFC 9180 §4: ``Extract(salt, "HPKE-v1" || suite_id || label || ikm)``."""
    return hkdf_extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    """RFC 9180 §4: ``Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L)``."""
    return hkdf_expand(prk, i2osp(length, 2) + b"HPKE-v1" + suite_id + label + info, length)


KEM_SUITE_ID = b"KEM" + i2osp(KEM_X25519_SHA256, 2)  # RFC 9180 §4.1
HPKE_SUITE_ID = (
    b"HPKE" + i2osp(KEM_X25519_SHA256, 2) + i2osp(KDF_HKDF_SHA256, 2) + i2osp(AEAD_AES_128_GCM, 2)
)  # RFC 9180 §5.1


def dhkem_encap(pk_r: bytes, sk_e: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 §4.1 Encap() for DHKEM(X25519, HKDF-SHA256), with the ephemeral key given.

    Returns ``(shared_secret, enc)``.
    """
    ephemeral = X25519PrivateKey.from_private_bytes(sk_e)
    try:
        dh = ephemeral.exchange(X25519PublicKey.from_public_bytes(pk_r))
    except ValueError as exc:  # RFC 9180 §7.1.4: an all-zero X25519 output is an error
        raise OhttpClientError("X25519 produced an invalid shared secret") from exc
    if dh == bytes(len(dh)):
        raise OhttpClientError("X25519 produced the all-zero shared secret")
    enc = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kem_context = enc + pk_r
    eae_prk = labeled_extract(KEM_SUITE_ID, b"", b"eae_prk", dh)
    shared_secret = labeled_expand(KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, N_SECRET)
    return shared_secret, enc


def key_schedule_base(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    """RFC 9180 §5.1 KeySchedule() in mode_base (no PSK).

    Returns ``(key, base_nonce, exporter_secret)``.
    """
    mode_base = 0x00
    psk_id_hash = labeled_extract(HPKE_SUITE_ID, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(HPKE_SUITE_ID, b"", b"info_hash", info)
    context = i2osp(mode_base, 1) + psk_id_hash + info_hash
    secret = labeled_extract(HPKE_SUITE_ID, shared_secret, b"secret", b"")
    key = labeled_expand(HPKE_SUITE_ID, secret, b"key", context, N_K)
    base_nonce = labeled_expand(HPKE_SUITE_ID, secret, b"base_nonce", context, N_N)
    exporter_secret = labeled_expand(HPKE_SUITE_ID, secret, b"exp", context, N_H)
    return key, base_nonce, exporter_secret


def hpke_export(exporter_secret: bytes, exporter_context: bytes, length: int) -> bytes:
    """RFC 9180 §5.3 Context.Export()."""
    return labeled_expand(HPKE_SUITE_ID, exporter_secret, b"sec", exporter_context, length)


# --------------------------------------------------------------------------- RFC 9458


@dataclass(frozen=True)
class KeyConfig:
    """RFC 9458 §3.1 Key Configuration (only configurations with a KEM this client knows)."""

    key_id: int
    kem_id: int
    public_key: bytes
    symmetric_algorithms: tuple[tuple[int, int], ...]  # (kdf_id, aead_id) pairs


def parse_key_config(data: bytes) -> KeyConfig | None:
    """RFC 9458 §3.1: decode one Key Config that fills ``data`` exactly.

    Returns None for a KEM this client does not implement (its public key length is unknown).
    """
    if len(data) < 3:
        raise OhttpClientError("key config too short")
    key_id, kem_id = data[0], int.from_bytes(data[1:3], "big")
    if kem_id != KEM_X25519_SHA256:
        return None
    rest = data[3:]
    if len(rest) < N_PK + 2:
        raise OhttpClientError("key config truncated")
    public_key, rest = rest[:N_PK], rest[N_PK:]
    algs_len, rest = int.from_bytes(rest[:2], "big"), rest[2:]
    if algs_len < 4 or algs_len % 4 != 0 or algs_len != len(rest):
        raise OhttpClientError("bad HPKE Symmetric Algorithms length")
    algs = tuple(
        (int.from_bytes(rest[i : i + 2], "big"), int.from_bytes(rest[i + 2 : i + 4], "big"))
        for i in range(0, algs_len, 4)
    )
    return KeyConfig(key_id, kem_id, public_key, algs)


def parse_key_configs(data: bytes) -> list[KeyConfig]:
    """RFC 9458 §3.2 ``application/ohttp-keys``: Key Configs, each preceded by a 2-byte length.

    Configurations with an unsupported KEM are skipped; malformed input raises.
    """
    if not data:
        raise OhttpClientError("empty application/ohttp-keys")
    configs: list[KeyConfig] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise OhttpClientError("truncated key config length")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if length == 0 or pos + length > len(data):
            raise OhttpClientError("key config length out of range")
        config = parse_key_config(data[pos : pos + length])
        pos += length
        if config is not None:
            configs.append(config)
    return configs


class ResponseOpener:
    """The client state kept between an Encapsulated Request and its response (RFC 9458 §4.4)."""

    def __init__(self, enc: bytes, exported_secret: bytes) -> None:
        self.enc = enc
        self.exported_secret = exported_secret

    def open(self, encapsulated_response: bytes) -> bytes:
        """RFC 9458 §4.4: decrypt ``response_nonce || ct`` and return the Binary HTTP response."""
        nonce_len = max(N_N, N_K)
        if len(encapsulated_response) < nonce_len + N_T:
            raise OhttpClientError("encapsulated response too short")
        response_nonce, ct = encapsulated_response[:nonce_len], encapsulated_response[nonce_len:]
        prk = hkdf_extract(self.enc + response_nonce, self.exported_secret)
        aead_key = hkdf_expand(prk, b"key", N_K)
        aead_nonce = hkdf_expand(prk, b"nonce", N_N)
        try:
            return AESGCM(aead_key).decrypt(aead_nonce, ct, b"")
        except InvalidTag as exc:
            raise OhttpClientError("encapsulated response failed authentication") from exc


def _has_our_suite(config: KeyConfig) -> bool:
    return (KDF_HKDF_SHA256, AEAD_AES_128_GCM) in config.symmetric_algorithms


def encapsulate(
    config: KeyConfig, bhttp_request: bytes, *, ephemeral_secret: bytes | None = None
) -> tuple[bytes, ResponseOpener]:
    """RFC 9458 §4.3: build ``hdr || enc || ct`` for ``bhttp_request``.

    ``ephemeral_secret`` fixes the HPKE ephemeral key (for known-answer tests only).
    """
    if config.kem_id != KEM_X25519_SHA256 or not _has_our_suite(config):
        raise OhttpClientError("key config offers no X25519/HKDF-SHA256/AES-128-GCM suite")
    hdr = (
        i2osp(config.key_id, 1)
        + i2osp(KEM_X25519_SHA256, 2)
        + i2osp(KDF_HKDF_SHA256, 2)
        + i2osp(AEAD_AES_128_GCM, 2)
    )
    info = REQUEST_LABEL + b"\x00" + hdr
    if ephemeral_secret is None:
        ephemeral_secret = X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    shared_secret, enc = dhkem_encap(config.public_key, ephemeral_secret)
    key, base_nonce, exporter_secret = key_schedule_base(shared_secret, info)
    ct = AESGCM(key).encrypt(base_nonce, bhttp_request, b"")  # seq 0: nonce = base_nonce
    secret = hpke_export(exporter_secret, RESPONSE_LABEL, max(N_N, N_K))
    return hdr + enc + ct, ResponseOpener(enc, secret)


# --------------------------------------------------------------------------- RFC 9292


def encode_varint(value: int) -> bytes:
    """RFC 9000 §16 variable-length integer (as used by RFC 9292 §3), shortest form."""
    for length, prefix in ((1, 0x00), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * length - 2):
            encoded = bytearray(value.to_bytes(length, "big"))
            encoded[0] |= prefix
            return bytes(encoded)
    raise OhttpClientError("integer too large for a varint")


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """RFC 9000 §16: decode a varint at ``pos``; returns ``(value, new_pos)``."""
    if pos >= len(data):
        raise OhttpClientError("truncated varint")
    length = 1 << (data[pos] >> 6)
    if pos + length > len(data):
        raise OhttpClientError("truncated varint")
    value = int.from_bytes(data[pos : pos + length], "big") & ((1 << (8 * length - 2)) - 1)
    return value, pos + length


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """A varint length followed by that many bytes."""
    length, pos = _read_varint(data, pos)
    if pos + length > len(data):
        raise OhttpClientError("truncated length-prefixed field")
    return data[pos : pos + length], pos + length


def _prefixed(value: bytes) -> bytes:
    return encode_varint(len(value)) + value


def encode_bhttp_request(
    method: str,
    scheme: str,
    authority: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    content: bytes = b"",
    *,
    truncate: bool = True,
) -> bytes:
    """RFC 9292 §3.1/§3.2 known-length request (framing indicator 0).

    Field names are lowercased (RFC 9292 §3.6 via RFC 9113 §8.2.1).  With ``truncate``, trailing
    empty sections are omitted as RFC 9292 §3.8 allows (as in RFC 9458 Appendix A); the trailer
    section is always empty.
    """
    out = encode_varint(0)
    for part in (method, scheme, authority, path):
        out += _prefixed(part.encode("ascii"))
    fields = b"".join(
        _prefixed(name.lower().encode("ascii")) + _prefixed(value.encode("latin-1"))
        for name, value in headers
    )
    sections = [_prefixed(fields), _prefixed(content), _prefixed(b"")]
    if truncate:
        while sections and sections[-1] == b"\x00":
            sections.pop()
    return out + b"".join(sections)


def _read_field_section(data: bytes, pos: int) -> tuple[list[tuple[str, str]], int]:
    """RFC 9292 §3.1 Known-Length Field Section; a message ending here is truncated (§3.8)."""
    if pos == len(data):
        return [], pos
    section, pos = _read_bytes(data, pos)
    fields: list[tuple[str, str]] = []
    i = 0
    while i < len(section):
        name, i = _read_bytes(section, i)
        value, i = _read_bytes(section, i)
        if not name:
            raise OhttpClientError("empty field name")
        if name in (b":method", b":scheme", b":authority", b":path", b":status"):
            raise OhttpClientError("control data pseudo-field in a field section")
        fields.append((name.decode("latin-1"), value.decode("latin-1")))
    return fields, pos


def decode_bhttp_response(data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """RFC 9292 §3 known-length response (framing indicator 1) -> (status, headers, content).

    Informational (1xx) responses (§3.5.1) are skipped; truncated trailing sections count as empty
    (§3.8); trailers are read and dropped; padding must be zero bytes (§3.8).
    """
    framing, pos = _read_varint(data, 0)
    if framing != 1:
        raise OhttpClientError(f"not a known-length response (framing indicator {framing})")
    while True:
        status, pos = _read_varint(data, pos)
        if not 100 <= status <= 599:
            raise OhttpClientError(f"invalid status code {status}")
        if status >= 200:
            break
        if pos == len(data):
            raise OhttpClientError("message ends inside an informational response")
        _, pos = _read_field_section(data, pos)
    headers, pos = _read_field_section(data, pos)
    content = b""
    if pos < len(data):
        content, pos = _read_bytes(data, pos)
    _, pos = _read_field_section(data, pos)
    if any(data[pos:]):
        raise OhttpClientError("non-zero padding")
    return status, headers, content


# --------------------------------------------------------------------------- RFC 9458 §5 (HTTP)

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def fetch_key_configs(url: str) -> list[KeyConfig]:
    """RFC 9458 §3.2 / RFC 9540-style key fetch: GET ``application/ohttp-keys``."""
    req = urllib.request.Request(url, headers={"Accept": KEYS_MEDIA_TYPE}, method="GET")
    try:
        with _OPENER.open(req, timeout=TIMEOUT_SECONDS) as resp:
            status, ctype, body = resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as exc:
        raise OhttpClientError(f"key fetch failed with HTTP {exc.code}") from exc
    if status != 200:
        raise OhttpClientError(f"key fetch returned HTTP {status}")
    if _media_type(ctype) != KEYS_MEDIA_TYPE:
        raise OhttpClientError(f"key fetch returned Content-Type {ctype!r}")
    return parse_key_configs(body)


def post_encapsulated(url: str, body: bytes) -> bytes:
    """RFC 9458 §5: POST a ``message/ohttp-req``; expect 200 with ``message/ohttp-res``."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": REQUEST_MEDIA_TYPE}, method="POST")
    try:
        with _OPENER.open(req, timeout=TIMEOUT_SECONDS) as resp:
            status, ctype, answer = resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as exc:
        raise OhttpClientError(f"relay/gateway answered HTTP {exc.code}") from exc
    if status != 200:
        raise OhttpClientError(f"relay/gateway answered HTTP {status}")
    if _media_type(ctype) != RESPONSE_MEDIA_TYPE:
        raise OhttpClientError(f"relay/gateway answered Content-Type {ctype!r}")
    return bytes(answer)


def request(
    keys_url: str,
    post_url: str,
    method: str,
    authority: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    content: bytes = b"",
    *,
    scheme: str = "https",
) -> tuple[int, list[tuple[str, str]], bytes]:
    """RFC 9458 §5 end to end: fetch keys, encapsulate, POST, open, decode the response."""
    configs = [c for c in fetch_key_configs(keys_url) if _has_our_suite(c)]
    if not configs:
        raise OhttpClientError("no usable key configuration")
    bhttp = encode_bhttp_request(method, scheme, authority, path, headers, content)
    encapsulated, opener = encapsulate(configs[0], bhttp)
    return decode_bhttp_response(opener.open(post_encapsulated(post_url, encapsulated)))
