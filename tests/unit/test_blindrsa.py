"""RFC 9474 blind RSA: vectors byte for byte, round trips, tampering, and the RFC 9578 issuer key encoding."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.crypto import blindrsa
from privproc.crypto.blindrsa import Variant
from privproc.errors import CryptoError, TruncatedError, WireError
from privproc.runtime import status
from tests.support import load_vector

RFC9474 = load_vector("rfc9474-testvectors.json")
TYPE2 = (
    load_vector("rfc9578-type2.json")["type2_blind_rsa_2048"]
    + load_vector("pat-go-type2-issuance.json")["vectors"]
)
h = bytes.fromhex
TOKEN_TYPE_BLIND_RSA = b"\x00\x02"


def _vector_key(vector: dict[str, str]) -> rsa.RSAPrivateKey:
    return _private_key_from_numbers(*(int(vector[name], 16) for name in ("p", "q", "n", "e", "d")))


@functools.cache  # the four variants share one 4096-bit key, slow to check
def _private_key_from_numbers(p: int, q: int, n: int, e: int, d: int) -> rsa.RSAPrivateKey:
    public = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
    ).private_key()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signer(key: rsa.RSAPrivateKey) -> blindrsa.BlindSigner:
    return blindrsa.BlindSigner(key)


# --- RFC 9474 §8 vectors ----------------------------------------------------------


@pytest.mark.parametrize("variant", list(Variant), ids=lambda v: v.value)
def test_rfc9474_vector(variant: Variant) -> None:
    vector = RFC9474[variant.value]
    private_key = _vector_key(vector)
    public_key = private_key.public_key()
    n = public_key.public_numbers().n

    prefix = h(vector["msg_prefix"]) if variant.randomized else None
    prepared = blindrsa.prepare(h(vector["msg"]), variant, prefix=prefix)
    assert prepared == h(vector["prepared_msg"])

    r = pow(int(vector["inv"], 16), -1, n)  # the vector gives inv = r^-1 mod n
    blinded, state = blindrsa.blind(public_key, prepared, variant, r=r, salt=h(vector["salt"]))
    assert state.encoded_msg == h(vector["encoded_msg"])
    assert state.inv == int(vector["inv"], 16)
    assert blinded == h(vector["blinded_msg"])

    blind_sig = blindrsa.BlindSigner(private_key).blind_sign(blinded)  # the native operation
    assert blind_sig == h(vector["blind_sig"])

    signature = blindrsa.finalize(public_key, prepared, blind_sig, state, variant)
    assert signature == h(vector["sig"])
    blindrsa.verify(public_key, prepared, signature, variant)


def test_variant_parameters() -> None:
    assert [(v.salt_len, v.randomized) for v in Variant] == [(48, True), (0, True), (48, False), (0, False)]
    assert set(RFC9474) - {"_source"} == {v.value for v in Variant}


def test_prepare() -> None:
    msg = b"hello"
    for variant in (Variant.SHA384_PSS_RANDOMIZED, Variant.SHA384_PSSZERO_RANDOMIZED):
        first, second = blindrsa.prepare(msg, variant), blindrsa.prepare(msg, variant)
        assert len(first) == 32 + len(msg) and first.endswith(msg) and first != second
        with pytest.raises(ValueError):
            blindrsa.prepare(msg, variant, prefix=bytes(31))
    for variant in (Variant.SHA384_PSS_DETERMINISTIC, Variant.SHA384_PSSZERO_DETERMINISTIC):
        assert blindrsa.prepare(msg, variant) == msg
        with pytest.raises(ValueError):
            blindrsa.prepare(msg, variant, prefix=bytes(32))


# --- round trips and tampering ----------------------------------------------------


@pytest.mark.parametrize("variant", list(Variant), ids=lambda v: v.value)
def test_round_trip(variant: Variant, key: rsa.RSAPrivateKey, signer: blindrsa.BlindSigner) -> None:
    public_key = key.public_key()
    prepared = blindrsa.prepare(b"a message the signer never sees", variant)
    blinded, state = blindrsa.blind(public_key, prepared, variant)
    again, _ = blindrsa.blind(public_key, prepared, variant)
    assert len(blinded) == signer.modulus_len == 256 and blinded != again
    signature = blindrsa.finalize(public_key, prepared, signer.blind_sign(blinded), state, variant)
    blindrsa.verify(public_key, prepared, signature, variant)
    assert "inv" not in repr(state) and str(state.inv) not in repr(state)


def test_tampered_blind_signature_is_refused(key: rsa.RSAPrivateKey, signer: blindrsa.BlindSigner) -> None:
    variant = Variant.SHA384_PSS_RANDOMIZED
    public_key = key.public_key()
    prepared = blindrsa.prepare(b"msg", variant)
    blinded, state = blindrsa.blind(public_key, prepared, variant)
    blind_sig = signer.blind_sign(blinded)
    for index in (0, 100, len(blind_sig) - 1):
        tampered = bytearray(blind_sig)
        tampered[index] ^= 0x04
        with pytest.raises(CryptoError, match="invalid signature"):
            blindrsa.finalize(public_key, prepared, bytes(tampered), state, variant)
    for wrong_size in (blind_sig[:-1], blind_sig + b"\x00", b""):
        with pytest.raises(CryptoError, match="unexpected input size"):
            blindrsa.finalize(public_key, prepared, wrong_size, state, variant)
    # The right blind signature for another message does not finalize either.
    _, other_state = blindrsa.blind(public_key, blindrsa.prepare(b"other", variant), variant)
    with pytest.raises(CryptoError):
        blindrsa.finalize(public_key, prepared, blind_sig, other_state, variant)


def test_verify_refuses_wrong_key_message_variant_and_size(
    key: rsa.RSAPrivateKey, signer: blindrsa.BlindSigner
) -> None:
    variant = Variant.SHA384_PSS_DETERMINISTIC
    public_key = key.public_key()
    prepared = blindrsa.prepare(b"msg", variant)
    blinded, state = blindrsa.blind(public_key, prepared, variant)
    signature = blindrsa.finalize(public_key, prepared, signer.blind_sign(blinded), state, variant)
    other_key = _vector_key(RFC9474[variant.value]).public_key()
    for args in (
        (other_key, prepared, signature, variant),
        (public_key, prepared + b"!", signature, variant),
        (public_key, prepared, signature, Variant.SHA384_PSSZERO_DETERMINISTIC),
        (public_key, prepared, signature[:-1], variant),
        (public_key, prepared, bytes(256), variant),
    ):
        with pytest.raises(CryptoError, match="invalid signature"):
            blindrsa.verify(*args)


def test_signer_input_errors(key: rsa.RSAPrivateKey, signer: blindrsa.BlindSigner) -> None:
    n = key.public_key().public_numbers().n
    for bad in (b"", bytes(255), bytes(257), n.to_bytes(256, "big"), b"\xff" * 256):
        with pytest.raises(CryptoError) as info:
            signer.blind_sign(bad)
        assert status.http_status(info.value) == 400
        assert str(info.value) in ("unexpected input size", "message representative out of range")


def test_blind_argument_checks(key: rsa.RSAPrivateKey) -> None:
    public_key = key.public_key()
    n = public_key.public_numbers().n
    for r in (0, n, -1):
        with pytest.raises(ValueError):
            blindrsa.blind(public_key, b"m", Variant.SHA384_PSS_DETERMINISTIC, r=r)
    with pytest.raises(ValueError):
        blindrsa.blind(public_key, b"m", Variant.SHA384_PSSZERO_DETERMINISTIC, salt=bytes(48))
    # r sharing a factor with n has no inverse.
    p = key.private_numbers().p
    with pytest.raises(CryptoError, match="blinding error"):
        blindrsa.blind(public_key, b"m", Variant.SHA384_PSS_DETERMINISTIC, r=p)
    with pytest.raises(CryptoError, match="encoding error"):
        blindrsa.emsa_pss_encode(b"m", 8 * (48 + 48 + 1), bytes(48))


# --- RFC 9578 §6.5 issuer keys, and the type 0x0002 issuance vectors -----------------


def _token_key_id(vector: dict[str, Any]) -> bytes:
    # Token = token_type(2) nonce(32) challenge_digest(32) token_key_id(32) authenticator(Nk)
    return h(vector["token"])[66:98]


@pytest.mark.parametrize("index", range(len(TYPE2)))
def test_type2_vector_key_encoding(index: int) -> None:
    vector = TYPE2[index]
    spki = h(vector["pkS"])
    public_key = blindrsa.public_key_from_spki_pss(spki)
    assert blindrsa.rsassa_pss_spki(public_key) == spki
    private_key = serialization.load_pem_private_key(h(vector["skS"]), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert blindrsa.rsassa_pss_spki(private_key.public_key()) == spki
    assert public_key.public_numbers() == private_key.public_key().public_numbers()
    token_key_id = hashlib.sha256(spki).digest()
    assert _token_key_id(vector) == token_key_id
    assert h(vector["token_request"])[2] == token_key_id[-1]  # truncated_token_key_id
    assert spki[4:67] == blindrsa.PSS_SHA384_ALGORITHM_IDENTIFIER


@pytest.mark.parametrize("index", range(len(TYPE2)))
def test_type2_vector_issuance(index: int) -> None:
    """RFC 9578 type 0x0002 uses RSABSSA-SHA384-PSS-Deterministic over the token input."""
    vector = TYPE2[index]
    variant = Variant.SHA384_PSS_DETERMINISTIC
    private_key = serialization.load_pem_private_key(h(vector["skS"]), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    public_key = private_key.public_key()
    challenge_digest = hashlib.sha256(h(vector["token_challenge"])).digest()
    token_input = TOKEN_TYPE_BLIND_RSA + h(vector["nonce"]) + challenge_digest + _token_key_id(vector)
    token = h(vector["token"])
    assert token[:98] == token_input

    prepared = blindrsa.prepare(token_input, variant)
    blinded, state = blindrsa.blind(
        public_key, prepared, variant, r=int(vector["blind"], 16), salt=h(vector["salt"])
    )
    assert TOKEN_TYPE_BLIND_RSA + h(vector["token_request"])[2:3] + blinded == h(vector["token_request"])
    blind_sig = blindrsa.BlindSigner(private_key).blind_sign(blinded)
    assert blind_sig == h(vector["token_response"])
    authenticator = blindrsa.finalize(public_key, prepared, blind_sig, state, variant)
    assert authenticator == token[98:]
    blindrsa.verify(public_key, token_input, authenticator, variant)


def test_spki_round_trip_and_strictness(key: rsa.RSAPrivateKey) -> None:
    public_key = key.public_key()
    spki = blindrsa.rsassa_pss_spki(public_key)
    assert blindrsa.public_key_from_spki_pss(spki).public_numbers() == public_key.public_numbers()

    rsa_encryption = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    vector_spki = h(TYPE2[0]["pkS"])
    assert vector_spki.endswith(b"\x02\x03\x01\x00\x01")
    rejected = [
        b"",
        rsa_encryption,
        spki + b"\x00",
        vector_spki[:-5] + b"\x02\x03\x01\x00\x00",  # even exponent
        vector_spki[:-5] + b"\x02\x03\x00\x00\x03",  # non-minimal integer
        vector_spki[:-5] + b"\x02\x03\x81\x00\x01",  # negative exponent
        blindrsa.rsassa_pss_spki(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()),
    ]
    rejected += [spki[:cut] for cut in range(len(spki))]
    for der in rejected:
        with pytest.raises(WireError) as info:
            blindrsa.public_key_from_spki_pss(der)
        assert len(der) < 8 or der.hex()[:16] not in str(info.value)
    with pytest.raises(TruncatedError):
        blindrsa.public_key_from_spki_pss(spki[:-1])


def _decodes_canonically_or_raises(der: bytes) -> None:
    try:
        public_key = blindrsa.public_key_from_spki_pss(der)
    except WireError:
        return
    assert blindrsa.rsassa_pss_spki(public_key) == der


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_spki_decoder_any_bytes(data: bytes) -> None:
    _decodes_canonically_or_raises(data)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(h(TYPE2[0]["pkS"])) - 1),
    st.integers(min_value=0, max_value=255),
    st.binary(max_size=3),
)
def test_spki_decoder_mutated_vector(index: int, value: int, suffix: bytes) -> None:
    der = bytearray(h(TYPE2[0]["pkS"]))
    der[index] = value
    _decodes_canonically_or_raises(bytes(der))
    _decodes_canonically_or_raises(bytes(der) + suffix)
