"""VOPRF(P-384, SHA-384), RFC 9497, as Privacy Pass token type 0x0001 uses it (RFC 9578 §5).

A thin, typed wrapper over the ``voprf`` package (Rust, ``voprf.p384``). It
speaks the RFC 9578 wire layout only:

* blinded element: ``SerializeElement`` (compressed SEC1), :data:`NE` bytes;
* token response body: ``evaluated_element || c || s``, :data:`NE` + 2 * :data:`NS`
  bytes (RFC 9578 §5.2: ``SerializeElement(evaluatedElement) || SerializeProof(proof)``,
  with ``SerializeProof`` = ``SerializeScalar(c) || SerializeScalar(s)``, RFC 9497 §2.2);
* output / token authenticator: :data:`NH` bytes.

The package's own ``VerifiableOutput`` encoding is ``c || s || evaluated_element``
(proof first); this module reorders in both directions, so nothing outside
it ever sees the package layout.

Lengths are checked before any call into the extension, and every error the
package raises becomes a :class:`~privproc.errors.WireError` (bytes that are
not a valid encoding) or a :class:`~privproc.errors.CryptoError` (a proof that
does not verify, a key that cannot be derived), with fixed messages that
never carry input data or keys.

Keys: the package cannot import a raw scalar. An issuer key is therefore
kept as its RFC 9497 ``DeriveKeyPair`` inputs (seed, info); see
:meth:`IssuerKey.derive` and :meth:`IssuerKey.generate`.
"""

from __future__ import annotations

import secrets
from typing import Final

from voprf import p384

from privproc.errors import CryptoError, WireError

#: Serialized element: compressed SEC1 point (RFC 9497 §4.4).
NE: Final = 49
#: Serialized scalar: big-endian, fully reduced (RFC 9497 §4.4).
NS: Final = 48
#: Output length of SHA-384, the PRF output (the type-1 token authenticator).
NH: Final = 48
#: ``SerializeProof``: ``c || s``.
PROOF_SIZE: Final = 2 * NS
#: RFC 9578 type-1 ``TokenResponse`` body: ``evaluated_element || proof``.
EVALUATION_SIZE: Final = NE + PROOF_SIZE
#: Inputs and key info are framed with a 2-byte length (RFC 9497 ``I2OSP(len, 2)``).
MAX_INPUT_SIZE: Final = 0xFFFF
#: Accepted ``DeriveKeyPair`` seed sizes: RFC 9497 §3.2.1 says ``Ns`` bytes, its
#: Appendix A test vectors use 32 bytes for every suite.
SEED_SIZES: Final = (32, NS)


class IssuerKey:
    """An issuer's VOPRF key pair (mode 0x01, suite P384-SHA384).

    Build it with :meth:`derive` or :meth:`generate`, never directly. The
    secret scalar lives inside the extension and cannot be exported; persist
    the (seed, info) pair instead.
    """

    __slots__ = ("_evaluator", "public_key")

    def __init__(self, evaluator: p384.Evaluator) -> None:
        self._evaluator = evaluator
        #: ``SerializeElement(pkS)``, :data:`NE` bytes.
        self.public_key: bytes = evaluator.public_key.serialize()

    def __repr__(self) -> str:
        return "IssuerKey(<P384-SHA384 VOPRF>)"

    @classmethod
    def derive(cls, seed: bytes, info: bytes) -> IssuerKey:
        """RFC 9497 §3.2.1 ``DeriveKeyPair(seed, info)`` for the VOPRF mode."""
        if len(seed) not in SEED_SIZES:
            raise WireError("VOPRF seed must be 32 or 48 bytes")
        if len(info) > MAX_INPUT_SIZE:
            raise WireError("VOPRF key info too long")
        try:
            evaluator = p384.Evaluator.from_seed(seed, info)
        except ValueError:
            # DeriveKeyPairError (256 zero scalars in a row) or a length the
            # package refuses: both mean no key.
            raise CryptoError("VOPRF key derivation failed") from None
        return cls(evaluator)

    @classmethod
    def generate(cls, info: bytes = b"") -> tuple[IssuerKey, bytes]:
        """A fresh key from a random ``Ns``-byte seed: ``(key, seed)``.

        The caller persists ``seed`` (secret) and ``info`` (public) to load the
        same key again with :meth:`derive`.
        """
        seed = secrets.token_bytes(NS)
        return cls.derive(seed, info), seed

    def blind_evaluate(self, blinded_element: bytes) -> bytes:
        """RFC 9497 ``BlindEvaluate``: ``evaluated_element || c || s`` (RFC 9578 layout).

        The evaluated element is ``skS * blindedElement`` (deterministic); the
        proof uses a fresh random nonce, so it differs on every call.
        """
        if len(blinded_element) != NE:
            raise WireError("VOPRF blinded element must be 49 bytes")
        try:
            blinded = p384.BlindedInput.deserialize(blinded_element)
        except ValueError:
            raise WireError("invalid VOPRF blinded element") from None
        try:
            encoded = self._evaluator.evaluate(blinded).serialize()
        except ValueError:
            raise CryptoError("VOPRF evaluation failed") from None
        return _from_package_layout(encoded)

    def evaluate(self, input: bytes) -> bytes:
        """RFC 9497 ``Evaluate``: the unblinded PRF output for ``input``, :data:`NH` bytes.

        The issuer checks a redeemed type-1 token with
        ``authenticator == evaluate(token_input)`` (compare in constant time).
        """
        if len(input) > MAX_INPUT_SIZE:
            raise WireError("VOPRF input too long")
        try:
            return self._evaluator.evaluate_known_input(input)
        except ValueError:
            raise CryptoError("VOPRF evaluation failed") from None


class ClientState:
    """What the client keeps between :func:`blind` and :func:`finalize` (opaque).

    It holds the blind and the input: keep it secret, and use it for one
    token response only.
    """

    __slots__ = ("_client",)

    def __init__(self, client: p384.Client) -> None:
        self._client = client

    def __repr__(self) -> str:
        return "ClientState(<P384-SHA384 VOPRF>)"


def blind(input: bytes) -> tuple[bytes, ClientState]:
    """RFC 9497 ``Blind`` with a fresh random blind: ``(blinded_element, state)``.

    ``input`` must be 1 to 65535 bytes: the package refuses an empty input
    (RFC 9497 would allow it; a type-1 ``token_input`` is never empty).
    """
    if not input:
        raise WireError("VOPRF input must not be empty")
    if len(input) > MAX_INPUT_SIZE:
        raise WireError("VOPRF input too long")
    try:
        client, blinded = p384.Client.blind(input)
    except ValueError:
        raise CryptoError("VOPRF blinding failed") from None
    return blinded.serialize(), ClientState(client)


def finalize(state: ClientState, evaluation_and_proof: bytes, public_key: bytes) -> bytes:
    """RFC 9497 ``Finalize``: verify the proof against ``public_key``, return the output.

    ``evaluation_and_proof`` is the RFC 9578 type-1 ``TokenResponse`` body,
    ``evaluated_element || c || s``. Raises :class:`WireError` if it or
    ``public_key`` is not a valid encoding, :class:`CryptoError` if the proof
    does not verify for this state's blinded element under ``public_key``.
    """
    if len(evaluation_and_proof) != EVALUATION_SIZE:
        raise WireError("VOPRF evaluation must be 145 bytes")
    if len(public_key) != NE:
        raise WireError("VOPRF public key must be 49 bytes")
    try:
        key = p384.PublicKey.deserialize(public_key)
    except ValueError:
        raise WireError("invalid VOPRF public key") from None
    try:
        output = p384.VerifiableOutput.deserialize(_to_package_layout(evaluation_and_proof))
    except ValueError:
        raise WireError("invalid VOPRF evaluation") from None
    try:
        return state._client.finalize(output, key)
    except ValueError:
        raise CryptoError("VOPRF proof verification failed") from None


def validate_public_key(public_key: bytes) -> None:
    """Raise :class:`WireError` unless ``public_key`` is a valid ``SerializeElement(pkS)``."""
    if len(public_key) != NE:
        raise WireError("VOPRF public key must be 49 bytes")
    try:
        p384.PublicKey.deserialize(public_key)
    except ValueError:
        raise WireError("invalid VOPRF public key") from None


def _from_package_layout(encoded: bytes) -> bytes:
    """Package ``c || s || element`` to RFC 9578 ``element || c || s``."""
    if len(encoded) != EVALUATION_SIZE:
        raise CryptoError("VOPRF evaluation failed")
    return encoded[PROOF_SIZE:] + encoded[:PROOF_SIZE]


def _to_package_layout(evaluation_and_proof: bytes) -> bytes:
    """RFC 9578 ``element || c || s`` to the package's ``c || s || element``."""
    return evaluation_and_proof[NE:] + evaluation_and_proof[:NE]
