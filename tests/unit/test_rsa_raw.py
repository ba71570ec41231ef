"""Native RSASP1 through OpenSSL: equal to the definition, checked, typed errors, thread-safe."""

from __future__ import annotations

import copy
import gc
import pickle
import secrets
import ssl
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from privproc import errors
from privproc.crypto import rsa_raw
from privproc.runtime import status

K = 256  # bytes of a 2048-bit modulus


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def native(private_key: rsa.RSAPrivateKey) -> rsa_raw.NativeRsaPrivateKey:
    return rsa_raw.NativeRsaPrivateKey(private_key)


def _modulus(key: rsa.RSAPrivateKey) -> int:
    return key.public_key().public_numbers().n


def test_libcrypto_is_openssl_3_of_the_ssl_module() -> None:
    version = rsa_raw.openssl_version()
    assert version.startswith("OpenSSL ") and int(version.split()[1].split(".")[0]) >= 3
    if version.endswith("(_ssl extension)"):
        # The very library the ssl module reports.
        assert version == f"{ssl.OPENSSL_VERSION} (_ssl extension)"


def test_native_equals_reference_on_random_inputs(
    private_key: rsa.RSAPrivateKey, native: rsa_raw.NativeRsaPrivateKey
) -> None:
    n = _modulus(private_key)
    e = private_key.public_key().public_numbers().e
    assert native.modulus_len == K
    inputs = [0, 1, 2, n - 1, n - 2] + [secrets.randbelow(n) for _ in range(20)]
    for m in inputs:
        message = m.to_bytes(K, "big")
        signature = native.rsasp1(message)
        assert len(signature) == K
        assert signature == rsa_raw.rsasp1_reference(private_key, message)
        assert pow(int.from_bytes(signature, "big"), e, n) == m


def test_bad_inputs_are_typed_client_errors(
    private_key: rsa.RSAPrivateKey, native: rsa_raw.NativeRsaPrivateKey
) -> None:
    n = _modulus(private_key)
    bad = [
        b"",
        b"\x01",
        bytes(K - 1),
        bytes(K + 1),
        b"\x01" * (K - 1),
        n.to_bytes(K, "big"),
        (n + 1).to_bytes(K, "big"),
        b"\xff" * K,
    ]
    for message in bad:
        for sign in (native.rsasp1, lambda m: rsa_raw.rsasp1_reference(private_key, m)):
            with pytest.raises(errors.CryptoError) as info:
                sign(message)
            error = info.value
            assert not isinstance(error, rsa_raw.NativeCryptoError)
            assert status.http_status(error) == 400
            assert str(error) in ("unexpected input size", "message representative out of range")


def test_faulty_result_is_never_returned(
    native: rsa_raw.NativeRsaPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand in for a fault: the public-operation check sees a different value.
    monkeypatch.setattr(rsa_raw.NativeRsaPrivateKey, "_public_op", lambda self, sig: bytes(K))
    with pytest.raises(rsa_raw.NativeCryptoError, match="signature failed verification") as info:
        native.rsasp1((5).to_bytes(K, "big"))
    assert status.http_status(info.value) == 500


def test_concurrent_signing_from_threads(
    private_key: rsa.RSAPrivateKey, native: rsa_raw.NativeRsaPrivateKey
) -> None:
    n = _modulus(private_key)
    e = private_key.public_key().public_numbers().e
    messages = [secrets.randbelow(n).to_bytes(K, "big") for _ in range(256)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(native.rsasp1, messages))
    for message, signature in zip(messages, results, strict=True):
        assert pow(int.from_bytes(signature, "big"), e, n) == int.from_bytes(message, "big")
    assert results[0] == rsa_raw.rsasp1_reference(private_key, messages[0])


def test_keys_are_freed_and_not_copyable(private_key: rsa.RSAPrivateKey) -> None:
    for _ in range(5):
        key = rsa_raw.NativeRsaPrivateKey(private_key)
        assert repr(key) == "<NativeRsaPrivateKey 2048-bit>"
        for duplicate in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError):
                duplicate(key)
        del key
        gc.collect()


def test_non_rsa_key_is_refused() -> None:
    with pytest.raises(TypeError):
        rsa_raw.NativeRsaPrivateKey(ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]


def test_missing_libcrypto_is_a_typed_error_at_load(
    private_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rsa_raw, "_load", lambda: None)
    with pytest.raises(
        rsa_raw.LibcryptoUnavailableError, match="no usable OpenSSL 3 libcrypto found"
    ) as info:
        rsa_raw.NativeRsaPrivateKey(private_key)
    assert isinstance(info.value, errors.CryptoError)
    assert status.grpc_status(info.value)[1] == "crypto_unavailable: no usable OpenSSL 3 libcrypto found"
