"""RSA Blind Signatures, RFC 9474: RSABSSA-SHA384, PSS and PSSZERO, Randomized and Deterministic.

The client :func:`prepare` s a message, :func:`blind` s it to the signer's
public key, the signer's :class:`BlindSigner` signs the blinded message
without learning it, and the client :func:`finalize` s the answer into an
ordinary RSASSA-PSS signature (SHA-384, MGF1-SHA-384) that anyone can
:func:`verify`.

The client side works on public values and the client's own blinding
factor, so plain Python integers do there. The signer's private operation
is only ever the native, blinded, constant-time one of
:mod:`privproc.crypto.rsa_raw`, and each of its results is verified before
it is released (§4.3).

Privacy Pass publishes the issuer key of token type 0x0002 as a DER
SubjectPublicKeyInfo naming id-RSASSA-PSS with fixed parameters (RFC 9578
§6.5): :func:`rsassa_pss_spki` writes it and
:func:`public_key_from_spki_pss` reads it back, strictly.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass, field
from enum import Enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from privproc.crypto.rsa_raw import NativeRsaPrivateKey
from privproc.errors import CryptoError, WireError
from privproc.wire import der

#: Output length of SHA-384, the hash of every variant here.
HASH_LEN = 48
#: Length of the random message prefix of the Randomized variants (§4.1).
PREFIX_LEN = 32


class Variant(Enum):
    """The RSABSSA-SHA384 variants of RFC 9474 §5; the value is the RFC's name."""

    SHA384_PSS_RANDOMIZED = "RSABSSA-SHA384-PSS-Randomized"
    SHA384_PSSZERO_RANDOMIZED = "RSABSSA-SHA384-PSSZERO-Randomized"
    SHA384_PSS_DETERMINISTIC = "RSABSSA-SHA384-PSS-Deterministic"
    SHA384_PSSZERO_DETERMINISTIC = "RSABSSA-SHA384-PSSZERO-Deterministic"

    @property
    def salt_len(self) -> int:
        """PSS salt length in bytes: 48 for PSS, 0 for PSSZERO."""
        return 0 if "-PSSZERO-" in self.value else HASH_LEN

    @property
    def randomized(self) -> bool:
        """Whether :func:`prepare` adds a random prefix to the message."""
        return self.value.endswith("-Randomized")


@dataclass(frozen=True)
class BlindingState:
    """What the client keeps between :func:`blind` and :func:`finalize`.

    ``inv`` (the inverse of the blinding factor) links the blinded message to
    the final signature, so it is kept out of ``repr``.
    """

    inv: int = field(repr=False)
    encoded_msg: bytes = field(repr=False)


# --- RFC 8017 primitives ------------------------------------------------------


def _modulus_len(public_key: rsa.RSAPublicKey) -> int:
    return (public_key.key_size + 7) // 8


def _mgf1_sha384(seed: bytes, length: int) -> bytes:
    """MGF1 with SHA-384 (RFC 8017 §B.2.1)."""
    blocks = (length + HASH_LEN - 1) // HASH_LEN
    mask = b"".join(hashlib.sha384(seed + counter.to_bytes(4, "big")).digest() for counter in range(blocks))
    return mask[:length]


def emsa_pss_encode(message: bytes, em_bits: int, salt: bytes) -> bytes:
    """EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with SHA-384 and MGF1-SHA-384.

    ``em_bits`` is the modulus length in bits minus one for RSASSA-PSS;
    ``salt`` is the salt itself (its length is sLen).
    """
    em_len = (em_bits + 7) // 8
    if em_len < HASH_LEN + len(salt) + 2:
        raise CryptoError("encoding error")
    m_hash = hashlib.sha384(message).digest()
    h = hashlib.sha384(bytes(8) + m_hash + salt).digest()
    db = bytes(em_len - len(salt) - HASH_LEN - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1_sha384(h, len(db)), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    return bytes(masked) + h + b"\xbc"


# --- RFC 9474 §4 ------------------------------------------------------------------


def prepare(msg: bytes, variant: Variant, *, prefix: bytes | None = None) -> bytes:
    """Prepare (§4.1): ``msg`` as is, or after a 32-byte random prefix (Randomized).

    ``prefix`` is for test vectors only.
    """
    if not variant.randomized:
        if prefix is not None:
            raise ValueError("a deterministic variant takes no prefix")
        return bytes(msg)
    if prefix is None:
        prefix = secrets.token_bytes(PREFIX_LEN)
    elif len(prefix) != PREFIX_LEN:
        raise ValueError("the message prefix must be 32 bytes")
    return bytes(prefix) + bytes(msg)


def blind(
    public_key: rsa.RSAPublicKey,
    prepared_msg: bytes,
    variant: Variant,
    *,
    r: int | None = None,
    salt: bytes | None = None,
) -> tuple[bytes, BlindingState]:
    """Blind (§4.2): the blinded message for the signer, and the state to finalize.

    ``r`` (the blinding factor, in ``[1, n)``) and ``salt`` are for test
    vectors only; by default both are fresh random values.
    """
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise TypeError("an RSA public key is required")
    numbers = public_key.public_numbers()
    n, e = numbers.n, numbers.e
    if salt is None:
        salt = secrets.token_bytes(variant.salt_len)
    elif len(salt) != variant.salt_len:
        raise ValueError("the salt length does not match the variant")
    encoded_msg = emsa_pss_encode(prepared_msg, n.bit_length() - 1, salt)
    m = int.from_bytes(encoded_msg, "big")
    if math.gcd(m, n) != 1:
        raise CryptoError("invalid input")
    if r is None:
        r = 1 + secrets.randbelow(n - 1)
    elif not 1 <= r < n:
        raise ValueError("the blinding factor must be in [1, n)")
    try:
        inv = pow(r, -1, n)
    except ValueError as err:
        raise CryptoError("blinding error") from err
    blinded = m * pow(r, e, n) % n
    return blinded.to_bytes(_modulus_len(public_key), "big"), BlindingState(inv=inv, encoded_msg=encoded_msg)


class BlindSigner:
    """The signer's side (§4.3): RSASP1 on blinded messages, natively, verified."""

    __slots__ = ("_key",)

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._key = NativeRsaPrivateKey(private_key)

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key

    @property
    def modulus_len(self) -> int:
        return self._key.modulus_len

    def blind_sign(self, blinded_msg: bytes) -> bytes:
        """BlindSign (§4.3): the blind signature of a ``modulus_len``-byte blinded message.

        Raises :class:`~privproc.errors.CryptoError` for a message of the
        wrong size or out of range, and a 500-class subclass of it if the
        result fails its verification.
        """
        return self._key.rsasp1(blinded_msg)


def finalize(
    public_key: rsa.RSAPublicKey,
    prepared_msg: bytes,
    blind_sig: bytes,
    state: BlindingState,
    variant: Variant,
) -> bytes:
    """Finalize (§4.4): unblind ``blind_sig`` and verify it; the RSASSA-PSS signature."""
    modulus_len = _modulus_len(public_key)
    if len(blind_sig) != modulus_len:
        raise CryptoError("unexpected input size")
    numbers = public_key.public_numbers()
    s = int.from_bytes(blind_sig, "big") * state.inv % numbers.n
    if pow(s, numbers.e, numbers.n) != int.from_bytes(state.encoded_msg, "big"):
        raise CryptoError("invalid signature")
    signature = s.to_bytes(modulus_len, "big")
    verify(public_key, prepared_msg, signature, variant)
    return signature


def verify(public_key: rsa.RSAPublicKey, prepared_msg: bytes, signature: bytes, variant: Variant) -> None:
    """Verify (§4.5): RSASSA-PSS-VERIFY with SHA-384, MGF1-SHA-384 and the variant's salt length."""
    if len(signature) != _modulus_len(public_key):
        raise CryptoError("invalid signature")
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=variant.salt_len)
    try:
        public_key.verify(signature, prepared_msg, pss, hashes.SHA384())
    except InvalidSignature as err:
        raise CryptoError("invalid signature") from err


# --- RFC 9578 §6.5: the issuer key as an RSASSA-PSS SubjectPublicKeyInfo -----------

#: Bounds on the modulus the decoder accepts, in bits.
MIN_MODULUS_BITS = 2048
MAX_MODULUS_BITS = 8192
#: Largest public exponent the decoder accepts, in bits (OpenSSL's own cap).
MAX_EXPONENT_BITS = 64

_ID_RSASSA_PSS = "1.2.840.113549.1.1.10"
_ID_MGF1 = "1.2.840.113549.1.1.8"
_ID_SHA384 = "2.16.840.1.101.3.4.2.2"
# RFC 4055: hash AlgorithmIdentifiers without parameters; trailerField left
# at its DEFAULT (so absent, as DER requires); each field [n] EXPLICIT.
_SHA384_ALGORITHM = der.encode_tlv(der.TAG_SEQUENCE, der.encode_oid(_ID_SHA384))
#: The whole DER AlgorithmIdentifier of an RFC 9578 §6.5 issuer key.
PSS_SHA384_ALGORITHM_IDENTIFIER = der.encode_tlv(
    der.TAG_SEQUENCE,
    der.encode_oid(_ID_RSASSA_PSS)
    + der.encode_tlv(
        der.TAG_SEQUENCE,
        der.encode_tlv(der.context(0), _SHA384_ALGORITHM)
        + der.encode_tlv(
            der.context(1), der.encode_tlv(der.TAG_SEQUENCE, der.encode_oid(_ID_MGF1) + _SHA384_ALGORITHM)
        )
        + der.encode_tlv(der.context(2), der.encode_integer(HASH_LEN)),
    ),
)


def rsassa_pss_spki(public_key: rsa.RSAPublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of ``public_key`` as RFC 9578 §6.5 encodes it.

    id-RSASSA-PSS with hashAlgorithm SHA-384, maskGenAlgorithm MGF1-SHA-384
    and saltLength 48; the SHA-256 of these bytes is the Privacy Pass token
    key ID.
    """
    numbers = public_key.public_numbers()
    rsa_public_key = der.encode_tlv(
        der.TAG_SEQUENCE, der.encode_integer(numbers.n) + der.encode_integer(numbers.e)
    )
    return der.encode_tlv(
        der.TAG_SEQUENCE,
        PSS_SHA384_ALGORITHM_IDENTIFIER + der.encode_tlv(der.TAG_BIT_STRING, b"\x00" + rsa_public_key),
    )


class SpkiFormatError(WireError):
    """Bytes that are not an RFC 9578 §6.5 RSASSA-PSS SubjectPublicKeyInfo."""


def public_key_from_spki_pss(spki: bytes) -> rsa.RSAPublicKey:
    """Parse an RFC 9578 §6.5 SubjectPublicKeyInfo, strictly.

    The algorithm identifier must be exactly the one :func:`rsassa_pss_spki`
    writes (no NULL hash parameters, no explicit trailerField), the encoding
    must be DER with nothing after it, and the key must be an RSA key of
    2048 to 8192 bits with an odd public exponent of at most 64 bits. So any
    key this accepts re-encodes to the same bytes. Anything else raises
    :class:`~privproc.errors.WireError` (:class:`~privproc.errors.TruncatedError`
    for a key cut short).
    """
    body = der.whole(spki, der.Reader.sequence)
    if body.element(der.TAG_SEQUENCE) != PSS_SHA384_ALGORITHM_IDENTIFIER:
        raise SpkiFormatError("public key is not RSASSA-PSS with SHA-384")
    bits, unused = body.bit_string()
    body.finish()
    if unused:
        raise SpkiFormatError("public key bit string has unused bits")
    key = der.whole(bits, der.Reader.sequence)
    n, e = key.integer(), key.integer()
    key.finish()
    if not MIN_MODULUS_BITS <= n.bit_length() <= MAX_MODULUS_BITS or n <= 0 or not n & 1:
        raise SpkiFormatError("unsupported RSA modulus")
    if not 3 <= e < n or not e & 1 or e.bit_length() > MAX_EXPONENT_BITS:
        raise SpkiFormatError("unsupported RSA public exponent")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as err:
        raise SpkiFormatError("invalid RSA public key") from err
