"""HPKE (RFC 9180) for the one suite privproc speaks, through ``pyhpke`` contexts.

privproc uses DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM in base
mode. ``pyhpke`` 0.6.5 does not implement one-shot seal/open, so this module
wraps its sender/recipient contexts, and turns its exceptions into
:class:`~privproc.errors.CryptoError` so callers handle one error type.

The ``ephemeral_secret`` argument of :func:`setup_sender` exists for the
RFC test vectors only; production callers leave it ``None``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKeyPair
from pyhpke import PyHPKEError as _PyHPKEError
from pyhpke.context_interface import ContextInterface

from privproc.errors import CryptoError

KEM_X25519_HKDF_SHA256 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_128_GCM = 0x0001

#: Sizes of the suite's parts (RFC 9180 §7).
NENC = 32  # X25519 public key
NSK = 32
NK = 16  # AES-128 key
NN = 12  # GCM nonce
NT = 16  # GCM tag


@dataclass(frozen=True)
class Suite:
    """An HPKE cipher suite by its registry identifiers."""

    kem_id: int = KEM_X25519_HKDF_SHA256
    kdf_id: int = KDF_HKDF_SHA256
    aead_id: int = AEAD_AES_128_GCM

    @property
    def is_supported(self) -> bool:
        return (self.kem_id, self.kdf_id, self.aead_id) == (
            KEM_X25519_HKDF_SHA256,
            KDF_HKDF_SHA256,
            AEAD_AES_128_GCM,
        )


DEFAULT_SUITE = Suite()

_CIPHER_SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM)


def _cipher_suite(suite: Suite) -> CipherSuite:
    if not suite.is_supported:
        raise CryptoError("unsupported HPKE suite")
    return _CIPHER_SUITE


@dataclass(frozen=True)
class KeyPair:
    """A raw X25519 key pair (32-byte secret, 32-byte public)."""

    secret: bytes
    public: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"KeyPair(public={self.public.hex()})"


def generate_key_pair() -> KeyPair:
    """A fresh key pair from the operating system's CSPRNG."""
    return key_pair_from_secret(secrets.token_bytes(NSK))


def key_pair_from_secret(secret: bytes) -> KeyPair:
    """The key pair whose secret is ``secret`` (X25519 clamps it on use)."""
    if len(secret) != NSK:
        raise CryptoError("bad private key length")
    public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
    return KeyPair(secret=secret, public=public)


def derive_key_pair(ikm: bytes) -> KeyPair:
    """RFC 9180 DeriveKeyPair(ikm) for the suite's KEM."""
    pair = _CIPHER_SUITE.kem.derive_key_pair(ikm)
    return KeyPair(secret=pair.private_key.to_private_bytes(), public=pair.public_key.to_public_bytes())


class Context:
    """An HPKE encryption context of one side (sender or recipient)."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: ContextInterface) -> None:
        self._ctx = ctx

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        try:
            return self._ctx.seal(plaintext, aad)
        except _PyHPKEError as err:
            raise CryptoError("seal failed") from err

    def open(self, ciphertext: bytes, aad: bytes = b"") -> bytes:
        try:
            return self._ctx.open(ciphertext, aad)
        except _PyHPKEError as err:
            raise CryptoError("decryption failed") from err

    def export(self, exporter_context: bytes, length: int) -> bytes:
        try:
            return self._ctx.export(exporter_context, length)
        except _PyHPKEError as err:
            raise CryptoError("export failed") from err


def setup_sender(
    public_key: bytes,
    info: bytes,
    *,
    suite: Suite = DEFAULT_SUITE,
    ephemeral_secret: bytes | None = None,
) -> tuple[bytes, Context]:
    """SetupBaseS: returns ``(enc, context)`` for a recipient's ``public_key``."""
    cs = _cipher_suite(suite)
    try:
        pkr = cs.kem.deserialize_public_key(public_key)
        eks = None
        if ephemeral_secret is not None:
            pair = key_pair_from_secret(ephemeral_secret)
            eks = KEMKeyPair(
                cs.kem.deserialize_private_key(pair.secret), cs.kem.deserialize_public_key(pair.public)
            )
        enc, ctx = cs.create_sender_context(pkr, info=info, eks=eks)
    except (_PyHPKEError, ValueError) as err:
        raise CryptoError("sender setup failed") from err
    return enc, Context(ctx)


class RecipientKey:
    """A private key loaded once for many :func:`setup_recipient` calls.

    Deserialising an X25519 key costs about a third of a whole
    decapsulation, so a gateway keeps its keys loaded.
    """

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) != NSK:
            raise CryptoError("bad private key length")
        try:
            self._key = _CIPHER_SUITE.kem.deserialize_private_key(secret)
        except (_PyHPKEError, ValueError) as err:
            raise CryptoError("bad private key") from err

    def __repr__(self) -> str:  # never print the secret
        return "RecipientKey(...)"


def setup_recipient(
    enc: bytes, secret_key: bytes | RecipientKey, info: bytes, *, suite: Suite = DEFAULT_SUITE
) -> Context:
    """SetupBaseR: the recipient's context for the encapsulated key ``enc``."""
    cs = _cipher_suite(suite)
    if len(enc) != NENC:
        raise CryptoError("bad encapsulated key length")
    key = secret_key if isinstance(secret_key, RecipientKey) else RecipientKey(secret_key)
    try:
        ctx = cs.create_recipient_context(enc, key._key, info=info)
    except (_PyHPKEError, ValueError) as err:
        # An all-zero shared secret (small-order enc) lands here too.
        raise CryptoError("recipient setup failed") from err
    return Context(ctx)


__all__ = [
    "AEAD_AES_128_GCM",
    "DEFAULT_SUITE",
    "KDF_HKDF_SHA256",
    "KEM_X25519_HKDF_SHA256",
    "NENC",
    "NK",
    "NN",
    "NT",
    "Context",
    "KeyPair",
    "RecipientKey",
    "Suite",
    "derive_key_pair",
    "generate_key_pair",
    "key_pair_from_secret",
    "setup_recipient",
    "setup_sender",
]
