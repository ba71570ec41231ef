"""OHTTP message crypto (RFC 9458) against raw pyhpke, in one process, no I/O.

1. Client ``encapsulate_request`` vs pyhpke sender setup + seal of the same
   bytes (public key deserialized once, outside the loop).
2. Gateway ``Keyring.decapsulate_request`` + ``ServerContext.encapsulate_response``
   vs pyhpke recipient setup + open + export (private key deserialized once).
   A second row times ``decapsulate_request`` alone against the same baseline,
   so the response encapsulation's share shows.
3. Client ``ClientContext.decapsulate_response`` vs a bare AES-128-GCM open of
   the same response with the key already derived: the ratio is the cost of
   the RFC 9458 section 4.4 key derivation (HMAC + two HKDF-Expand).
"""

from __future__ import annotations

import itertools
import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

from bench._common import Report, Result, Settings, compare
from privproc import __version__
from privproc.gateway.routes import json_response
from privproc.wire import bhttp, ohttp

GROUP = "ohttp"
POOL_SIZE = 64
KEY_ID = 1


def _health_request() -> bytes:
    return bhttp.encode_request(bhttp.Request("GET", "https", "privproc.local", "/v1/health"))


def _health_response() -> bytes:
    body: dict[str, object] = {"service": "privproc-gateway", "status": "serving", "version": __version__}
    return bhttp.encode_response(json_response(200, body))


def _response_keys(secret: bytes, enc: bytes, response_nonce: bytes) -> tuple[bytes, bytes]:
    """RFC 9458 section 4.4, written out independently of privproc."""
    mac = hmac.HMAC(enc + response_nonce, hashes.SHA256())
    mac.update(secret)
    prk = mac.finalize()
    key = HKDFExpand(hashes.SHA256(), 16, b"key").derive(prk)
    nonce = HKDFExpand(hashes.SHA256(), 12, b"nonce").derive(prk)
    return key, nonce


def run(settings: Settings) -> Report:
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM)
    key = ohttp.GatewayKey.generate(KEY_ID)
    config = key.config
    keyring = ohttp.Keyring([key])
    request = _health_request()
    response = _health_response()
    header = struct.pack(
        ">BHHH", config.key_id, config.kem_id, config.suites[0].kdf_id, config.suites[0].aead_id
    )
    info = ohttp.REQUEST_LABEL + b"\x00" + header
    pkr = suite.kem.deserialize_public_key(config.public_key)
    skr = suite.kem.deserialize_private_key(key.secret)
    results: list[Result] = []

    # (1) client encapsulate
    def encapsulate() -> object:
        return ohttp.encapsulate_request(config, request)

    def raw_seal() -> object:
        enc, ctx = suite.create_sender_context(pkr, info=info)
        return enc + ctx.seal(request)

    samples, base = compare(encapsulate, raw_seal, settings)
    results.append(
        Result(
            GROUP,
            "client encapsulate_request",
            samples,
            "pyhpke sender setup+seal",
            base,
            note="encapsulate also parses the public key and exports the response secret",
        )
    )

    # (2) gateway decapsulate (+ encapsulate the answer)
    pool = [ohttp.encapsulate_request(config, request) for _ in range(POOL_SIZE)]
    payloads = [payload for payload, _ in pool]
    split = [(p[len(header) : len(header) + 32], p[len(header) + 32 :]) for p in payloads]
    next_payload = itertools.cycle(payloads).__next__
    next_split = itertools.cycle(split).__next__
    # Sanity: the raw baseline really opens what the client sealed.
    enc0, ct0 = split[0]
    if suite.create_recipient_context(enc0, skr, info=info).open(ct0) != request:
        raise RuntimeError("raw pyhpke baseline does not open the encapsulated request")

    def decapsulate_and_answer() -> object:
        _, ctx = keyring.decapsulate_request(next_payload())
        return ctx.encapsulate_response(response)

    def decapsulate_only() -> object:
        return keyring.decapsulate_request(next_payload())

    def raw_open() -> object:
        enc, ct = next_split()
        ctx = suite.create_recipient_context(enc, skr, info=info)
        plaintext = ctx.open(ct)
        ctx.export(ohttp.RESPONSE_LABEL, 16)
        return plaintext

    samples, base = compare(decapsulate_and_answer, raw_open, settings)
    results.append(
        Result(
            GROUP,
            "gateway decapsulate+encapsulate_response",
            samples,
            "pyhpke recipient setup+open+export",
            base,
            note="includes the response encapsulation the baseline does not do",
        )
    )
    samples, base = compare(decapsulate_only, raw_open, settings)
    results.append(
        Result(GROUP, "gateway decapsulate_request only", samples, "pyhpke recipient setup+open+export", base)
    )

    # (3) client decapsulate_response
    payload, client_ctx = pool[0]
    _, server_ctx = keyring.decapsulate_request(payload)
    answer = server_ctx.encapsulate_response(response)
    if client_ctx.decapsulate_response(answer) != response:
        raise RuntimeError("client cannot open the gateway's answer")
    # The baseline derives the section 4.4 keys itself, from raw pyhpke.
    secret = suite.create_recipient_context(enc0, skr, info=info).export(ohttp.RESPONSE_LABEL, 16)
    aead_key, aead_nonce = _response_keys(secret, enc0, answer[:16])
    sealed = answer[16:]
    if AESGCM(aead_key).decrypt(aead_nonce, sealed, None) != response:
        raise RuntimeError("raw baseline does not open the gateway's answer")

    def decapsulate_response() -> object:
        return client_ctx.decapsulate_response(answer)

    def raw_gcm_open() -> object:
        return AESGCM(aead_key).decrypt(aead_nonce, sealed, None)

    samples, base = compare(decapsulate_response, raw_gcm_open, settings)
    results.append(
        Result(
            GROUP,
            "client decapsulate_response",
            samples,
            "AES-128-GCM open, key pre-derived",
            base,
            note="ratio = cost of the section 4.4 key derivation",
        )
    )

    notes = [
        f"ohttp: ops/s = median of {settings.micro_repeats} interleaved runs of "
        f"{settings.micro_seconds:g} s each (after {settings.micro_warmup:g} s warm-up); "
        "ratio = median of the per-run ratios; single thread, no I/O.",
    ]
    return Report(results, notes)
