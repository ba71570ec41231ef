"""The standard OHTTP client, checked on its own against the published RFC vectors.

Nothing here touches privproc: RFC 9180 Appendix A.1.1, RFC 9458 Appendix A and the RFC 9292
examples pin every byte, and a tiny gateway written in this file (from RFC 9458 §4.3-§4.4) plays
the server side, also over real HTTP on localhost.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from . import standard_ohttp_client as client
from .standard_ohttp_client import (
    KeyConfig,
    OhttpClientError,
    decode_bhttp_response,
    encapsulate,
    encode_bhttp_request,
    parse_key_config,
    parse_key_configs,
)

VECTORS = Path(__file__).parents[1] / "vectors"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


OHTTP = _load("rfc9458-appendixA.json")
HPKE = _load("rfc9180-x25519-sha256-aes128gcm.json")


def h(key: str, source: dict[str, Any] = OHTTP) -> bytes:
    return bytes.fromhex(source[key])


def _public(sk: X25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _ohttp_keys(*configs: bytes) -> bytes:
    return b"".join(len(c).to_bytes(2, "big") + c for c in configs)


# --------------------------------------------------------------------------- test-side gateway


class TinyGateway:
    """Gateway side of RFC 9458 §4.3-§4.4, for X25519/HKDF-SHA256/AES-128-GCM only.

    The request side reuses the client's HPKE key schedule (pinned separately by RFC 9180 A.1.1);
    the response side is written here independently with plain HKDF and AES-GCM.
    """

    def __init__(self, sk: bytes, key_id: int = 1) -> None:
        self.sk = X25519PrivateKey.from_private_bytes(sk)
        self.key_id = key_id
        self.pk = _public(self.sk)

    def key_config(self) -> bytes:
        return bytes([self.key_id]) + b"\x00\x20" + self.pk + b"\x00\x04\x00\x01\x00\x01"

    def decapsulate(self, encapsulated_request: bytes) -> tuple[bytes, bytes, bytes]:
        """Returns (bhttp_request, enc, exported_secret)."""
        hdr, enc, ct = encapsulated_request[:7], encapsulated_request[7:39], encapsulated_request[39:]
        assert hdr == bytes([self.key_id]) + bytes.fromhex("002000010001")
        dh = self.sk.exchange(X25519PublicKey.from_public_bytes(enc))
        suite = client.KEM_SUITE_ID
        eae_prk = client.labeled_extract(suite, b"", b"eae_prk", dh)
        shared_secret = client.labeled_expand(suite, eae_prk, b"shared_secret", enc + self.pk, 32)
        info = b"message/bhttp request\x00" + hdr
        key, base_nonce, exporter_secret = client.key_schedule_base(shared_secret, info)
        bhttp = AESGCM(key).decrypt(base_nonce, ct, b"")
        secret = client.hpke_export(exporter_secret, b"message/bhttp response", 16)
        return bhttp, enc, secret

    @staticmethod
    def encapsulate_response(
        enc: bytes, exported_secret: bytes, response_nonce: bytes, bhttp_response: bytes
    ) -> tuple[bytes, dict[str, bytes]]:
        """RFC 9458 §4.4; returns the encapsulated response and the intermediates."""
        salt = enc + response_nonce
        prk = hmac.digest(salt, exported_secret, "sha256")
        aead_key = HKDFExpand(algorithm=hashes.SHA256(), length=16, info=b"key").derive(prk)
        aead_nonce = HKDFExpand(algorithm=hashes.SHA256(), length=12, info=b"nonce").derive(prk)
        ct = AESGCM(aead_key).encrypt(aead_nonce, bhttp_response, b"")
        steps = {"salt": salt, "prk": prk, "key": aead_key, "nonce": aead_nonce}
        return response_nonce + ct, steps


# --------------------------------------------------------------------------- RFC 9180 A.1.1


def test_hpke_vector_is_the_base_mode_x25519_sha256_aes128gcm_entry() -> None:
    assert (HPKE["mode"], HPKE["kem_id"], HPKE["kdf_id"], HPKE["aead_id"]) == ("0", "32", "1", "1")
    assert "RFC 9180" in HPKE["_source"]


def test_hpke_encap_reproduces_shared_secret_and_enc() -> None:
    shared_secret, enc = client.dhkem_encap(h("pkRm", HPKE), h("skEm", HPKE))
    assert enc == h("enc", HPKE) == h("pkEm", HPKE)
    assert shared_secret == h("shared_secret", HPKE)


def test_hpke_key_schedule_reproduces_key_nonce_exporter_secret() -> None:
    key, base_nonce, exporter_secret = client.key_schedule_base(h("shared_secret", HPKE), h("info", HPKE))
    assert key == h("key", HPKE)
    assert base_nonce == h("base_nonce", HPKE)
    assert exporter_secret == h("exporter_secret", HPKE)


def test_hpke_seal_at_sequence_zero_and_exports() -> None:
    (first,) = [e for e in HPKE["encryptions"] if e["sequence number"] == "0"]
    assert bytes.fromhex(first["nonce"]) == h("base_nonce", HPKE)
    sealed = AESGCM(h("key", HPKE)).encrypt(
        h("base_nonce", HPKE), bytes.fromhex(first["pt"]), bytes.fromhex(first["aad"])
    )
    assert sealed == bytes.fromhex(first["ct"])
    for export in HPKE["exports"]:
        value = client.hpke_export(
            h("exporter_secret", HPKE), bytes.fromhex(export["exporter_context"]), int(export["L"])
        )
        assert value == bytes.fromhex(export["exported_value"])


# --------------------------------------------------------------------------- RFC 9458 Appendix A


def test_key_config_parses_and_matches_server_key() -> None:
    single = parse_key_config(h("key_config"))
    (listed,) = parse_key_configs(_ohttp_keys(h("key_config")))
    assert single == listed
    assert listed.key_id == 1 and listed.kem_id == 0x20
    assert listed.public_key == _public(X25519PrivateKey.from_private_bytes(h("server_x25519_sk")))
    assert listed.symmetric_algorithms == ((1, 1), (1, 3))


def test_key_config_list_skips_unknown_kems_and_rejects_garbage() -> None:
    unknown = b"\x07\x00\x10" + bytes(65) + b"\x00\x04\x00\x01\x00\x01"  # P-256 KEM: not ours
    configs = parse_key_configs(_ohttp_keys(unknown, h("key_config")))
    assert [c.key_id for c in configs] == [1]
    for bad in (b"", b"\x00", _ohttp_keys(h("key_config"))[:-1], _ohttp_keys(h("key_config")[:-2])):
        with pytest.raises(OhttpClientError):
            parse_key_configs(bad)


def test_bhttp_request_encoding_matches_appendix_a() -> None:
    assert encode_bhttp_request("GET", "https", "example.com", "/") == h("bhttp_request")
    full = encode_bhttp_request("GET", "https", "example.com", "/", truncate=False)
    assert full == h("bhttp_request") + b"\x00\x00\x00"


def test_bhttp_request_encoding_matches_rfc9292_example() -> None:
    # RFC 9292 §5.1, "Known-Length Binary Encoding of Request" (not truncated).
    expected = bytes.fromhex(
        "0003474554056874747073000a2f68656c6c6f2e747874406c0a757365722d6167656e74"
        "346375726c2f372e31362e33206c69626375726c2f372e31362e33204f70656e53534c2f"
        "302e392e376c207a6c69622f312e322e3304686f73740f7777772e6578616d706c652e63"
        "6f6d0f6163636570742d6c616e677561676506656e2c206d690000"
    )
    headers = [
        ("User-Agent", "curl/7.16.3 libcurl/7.16.3 OpenSSL/0.9.7l zlib/1.2.3"),
        ("Host", "www.example.com"),
        ("Accept-Language", "en, mi"),
    ]
    assert encode_bhttp_request("GET", "https", "", "/hello.txt", headers, truncate=False) == expected
    assert encode_bhttp_request("GET", "https", "", "/hello.txt", headers) == expected[:-2]


def test_encapsulated_request_matches_appendix_a() -> None:
    config = parse_key_config(h("key_config"))
    assert config is not None
    encapsulated, opener = encapsulate(config, h("bhttp_request"), ephemeral_secret=h("client_ephemeral_sk"))
    assert encapsulated == h("encapsulated_request")
    assert opener.enc == h("client_ephemeral_pk")
    assert opener.exported_secret == h("exported_secret")


def test_gateway_side_reproduces_appendix_a_response() -> None:
    gateway = TinyGateway(h("server_x25519_sk"))
    assert gateway.key_config()[:35] == h("key_config")[:35]  # key id, KEM id, public key
    bhttp, enc, secret = gateway.decapsulate(h("encapsulated_request"))
    assert (bhttp, enc, secret) == (h("bhttp_request"), h("client_ephemeral_pk"), h("exported_secret"))
    response_nonce = h("encapsulated_response")[:16]
    encapsulated, steps = TinyGateway.encapsulate_response(enc, secret, response_nonce, h("bhttp_response"))
    assert steps == {
        "salt": h("response_salt"),
        "prk": h("response_prk"),
        "key": h("response_aead_key"),
        "nonce": h("response_aead_nonce"),
    }
    assert encapsulated == h("encapsulated_response")


def test_response_opener_opens_appendix_a_response() -> None:
    config = parse_key_config(h("key_config"))
    assert config is not None
    _, opener = encapsulate(config, h("bhttp_request"), ephemeral_secret=h("client_ephemeral_sk"))
    assert opener.open(h("encapsulated_response")) == h("bhttp_response")
    assert decode_bhttp_response(opener.open(h("encapsulated_response"))) == (200, [], b"")


def test_tampered_response_is_rejected() -> None:
    config = parse_key_config(h("key_config"))
    assert config is not None
    _, opener = encapsulate(config, h("bhttp_request"), ephemeral_secret=h("client_ephemeral_sk"))
    original = h("encapsulated_response")
    for index in (0, 15, 16, len(original) - 1):
        tampered = bytearray(original)
        tampered[index] ^= 0x01
        with pytest.raises(OhttpClientError):
            opener.open(bytes(tampered))
    with pytest.raises(OhttpClientError):
        opener.open(original[:-1])
    with pytest.raises(OhttpClientError):
        opener.open(original[:20])


def test_fresh_encapsulations_differ_and_round_trip() -> None:
    gateway = TinyGateway(h("server_x25519_sk"))
    config = parse_key_config(h("key_config"))
    assert config is not None
    first, opener = encapsulate(config, b"payload")
    second, _ = encapsulate(config, b"payload")
    assert first != second
    bhttp, enc, secret = gateway.decapsulate(first)
    assert bhttp == b"payload"
    response, _ = TinyGateway.encapsulate_response(enc, secret, bytes(range(16)), b"\x01\x40\xc8")
    assert opener.open(response) == b"\x01\x40\xc8"


def test_encapsulate_refuses_config_without_our_suite() -> None:
    config = KeyConfig(1, 0x20, bytes(32), ((1, 3),))
    with pytest.raises(OhttpClientError):
        encapsulate(config, b"")


# --------------------------------------------------------------------------- RFC 9292 responses


def test_decode_minimal_response() -> None:
    assert decode_bhttp_response(bytes.fromhex("0140c8")) == (200, [], b"")


def test_decode_rfc9292_known_length_response_with_trailer() -> None:
    # RFC 9292 §5.2, "Known-Length Encoding of Response".
    data = bytes.fromhex(
        "0140c8001d5468697320636f6e74656e7420636f6e7461696e732043524c462e0d0a0d07747261696c65720474657874"
    )
    assert decode_bhttp_response(data) == (200, [], b"This content contains CRLF.\r\n")


def test_decode_skips_informational_responses_and_accepts_padding() -> None:
    v = client.encode_varint

    def section(*fields: tuple[bytes, bytes]) -> bytes:
        body = b"".join(v(len(n)) + n + v(len(x)) + x for n, x in fields)
        return v(len(body)) + body

    data = (
        v(1)
        + v(102)
        + section((b"running", b'"sleep 15"'))
        + v(103)
        + section((b"link", b"</style.css>; rel=preload"))
        + v(200)
        + section((b"content-type", b"text/plain"), (b"x-a", b""))
        + v(5)
        + b"hello"
        + section()
        + bytes(10)
    )
    expected = (200, [("content-type", "text/plain"), ("x-a", "")], b"hello")
    assert decode_bhttp_response(data) == expected
    # Truncation (RFC 9292 §3.8): missing trailing sections are empty.
    assert decode_bhttp_response(v(1) + v(404) + section((b"a", b"b"))) == (404, [("a", "b")], b"")
    assert decode_bhttp_response(v(1) + v(204) + section() + v(2) + b"ok") == (204, [], b"ok")


@pytest.mark.parametrize(
    "hexdata",
    [
        "",  # nothing at all
        "0040c8",  # framing indicator 0 is a request
        "0340c8",  # indeterminate-length response: not supported here
        "0140",  # truncated varint
        "01406600",  # informational response without a final one
        "014258",  # status 600
        "0140c80003",  # header section longer than the message
        "0140c80005414243",  # content truncated mid-way
        "0140c800000001",  # non-zero padding
        "0140c803000161",  # empty field name
        "0140c80a073a7374617475730132",  # :status pseudo-field
    ],
)
def test_decode_rejects_invalid_responses(hexdata: str) -> None:
    with pytest.raises(OhttpClientError):
        decode_bhttp_response(bytes.fromhex(hexdata))


def test_varint_round_trip() -> None:
    # RFC 9000 Appendix A.1 examples, plus the largest value.
    for value, encoded in (
        (37, "25"),
        (15293, "7bbd"),
        (494878333, "9d7f3e7d"),
        (151288809941952652, "c2197c5eff14e88c"),
        (2**62 - 1, "ff" * 8),
    ):
        assert client.encode_varint(value).hex() == encoded
        assert client._read_varint(bytes.fromhex(encoded), 0) == (value, len(encoded) // 2)
    assert client._read_varint(bytes.fromhex("4025"), 0) == (37, 2)  # non-minimal is allowed
    with pytest.raises(OhttpClientError):
        client.encode_varint(2**62)


# --------------------------------------------------------------------------- HTTP binding


class _Handler(BaseHTTPRequestHandler):
    gateway: ClassVar[TinyGateway]
    keys_type: ClassVar[str] = "application/ohttp-keys"
    response_type: ClassVar[str] = "message/ohttp-res"
    seen: ClassVar[list[tuple[str, str, bytes]]] = []

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.headers.get("Accept", ""), b""))
        self._reply(200, self.keys_type, _ohttp_keys(self.gateway.key_config()))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.headers.get("Content-Type", ""), body))
        try:
            bhttp, enc, secret = self.gateway.decapsulate(body)
        except (AssertionError, ValueError):  # RFC 9458 §5.2: undecryptable -> 400
            self._reply(400, "text/plain", b"bad request")
            return
        self.seen.append(("BHTTP", "", bhttp))
        answer = bytes.fromhex("0140c8000b68656c6c6f20776f726c64")  # 200, content "hello world"
        response, _ = TinyGateway.encapsulate_response(enc, secret, bytes(16), answer)
        self._reply(200, self.response_type, response)


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.gateway = TinyGateway(X25519PrivateKey.generate().private_bytes_raw(), key_id=7)
    _Handler.seen = []
    _Handler.keys_type = "application/ohttp-keys"
    _Handler.response_type = "message/ohttp-res"
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_request_over_http_end_to_end(server: str) -> None:
    result = client.request(
        f"{server}/keys", f"{server}/gateway", "POST", "example.com", "/v1/x", [("X-Test", "1")], b"hi"
    )
    assert result == (200, [], b"hello world")
    (get, post, bhttp) = _Handler.seen
    assert get[:2] == ("GET", "application/ohttp-keys")
    assert post[:2] == ("POST", "message/ohttp-req")
    assert post[2][0] == 7
    assert bhttp[2] == encode_bhttp_request("POST", "https", "example.com", "/v1/x", [("x-test", "1")], b"hi")


def test_wrong_content_types_are_rejected(server: str) -> None:
    _Handler.keys_type = "application/octet-stream"
    with pytest.raises(OhttpClientError):
        client.fetch_key_configs(f"{server}/keys")
    _Handler.keys_type = "application/ohttp-keys"
    (config,) = client.fetch_key_configs(f"{server}/keys")
    _Handler.response_type = "text/plain"
    encapsulated, _ = encapsulate(config, h("bhttp_request"))
    with pytest.raises(OhttpClientError):
        client.post_encapsulated(f"{server}/gateway", encapsulated)


def test_http_errors_are_reported(server: str) -> None:
    with pytest.raises(OhttpClientError):
        client.post_encapsulated(f"{server}/gateway", b"")  # the gateway answers 400
