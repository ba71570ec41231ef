"""VOPRF(P-384, SHA-384): RFC 9497 vectors, RFC 9578 / pat-go type-1 vectors, round trips, typed errors.

The ``voprf`` package draws every blind and every proof nonce at random and
cannot import a raw secret scalar, so no vector can be replayed byte for byte
through it. What closes the gap is an independent RFC 9497 DLEQ transcript
(``_Rfc9497`` below): hashing (expand_message_xmd, HashToScalar, composites,
challenge, Finalize) is written here from the RFC text, and every group
operation is a scalar multiplication done by OpenSSL through ``cryptography``
(``k*G`` exactly; ``k*P`` for another point only as its x-coordinate, so a
point is known up to the sign of y and both encodings are tried). The helper
is first checked against the RFC 9497 vectors (it must recover each vector's
proof nonce ``r`` and Output), then used to check the package's proofs, the
RFC 9578 token responses, and to build a proof our ``finalize`` must accept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privproc.crypto import voprf
from privproc.errors import CryptoError, PrivprocError, WireError
from tests.support import load_vector

V = load_vector("rfc9497-p384-sha384-voprf.json")
RFC9578 = load_vector("rfc9578-type1.json")["type1_voprf_p384"]
PAT_GO = load_vector("pat-go-type1-issuance.json")["vectors"]
TYPE1 = [pytest.param(t, id=f"rfc9578-{i}") for i, t in enumerate(RFC9578)] + [
    pytest.param(t, id=f"pat-go-{i}") for i, t in enumerate(PAT_GO)
]
h = bytes.fromhex

SINGLE = [v for v in V["vectors"] if v["Batch"] == 1]
BATCH = [v for v in V["vectors"] if v["Batch"] != 1]

# RFC 9578 §5.1/§5.2/§5.3 sizes for token type 0x0001.
TOKEN_REQUEST_SIZE = 2 + 1 + voprf.NE  # token_type, truncated_token_key_id, blinded_msg
TOKEN_INPUT_SIZE = 2 + 32 + 32 + 32  # token_type, nonce, challenge_digest, token_key_id
TOKEN_SIZE = TOKEN_INPUT_SIZE + voprf.NH  # ... || authenticator


class _Rfc9497:
    """RFC 9497 for P384-SHA384 in VOPRF mode: hashing here, group operations by OpenSSL."""

    N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
    CONTEXT = b"OPRFV1-\x01-P384-SHA384"
    CURVE = ec.SECP384R1()

    @staticmethod
    def lp(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    @classmethod
    def expand_message_xmd(cls, msg: bytes, dst: bytes, length: int) -> bytes:
        """RFC 9380 §5.3.1 with SHA-384 (b_in_bytes 48, s_in_bytes 128)."""
        dst_prime = dst + bytes([len(dst)])
        b0 = hashlib.sha384(bytes(128) + msg + length.to_bytes(2, "big") + b"\x00" + dst_prime).digest()
        blocks = [hashlib.sha384(b0 + b"\x01" + dst_prime).digest()]
        for i in range(2, -(-length // 48) + 1):
            mixed = bytes(a ^ b for a, b in zip(b0, blocks[-1], strict=True))
            blocks.append(hashlib.sha384(mixed + bytes([i]) + dst_prime).digest())
        return b"".join(blocks)[:length]

    @classmethod
    def hash_to_scalar(cls, msg: bytes) -> int:
        uniform = cls.expand_message_xmd(msg, b"HashToScalar-" + cls.CONTEXT, 72)
        return int.from_bytes(uniform, "big") % cls.N

    @classmethod
    def mul_g(cls, k: int) -> bytes:
        """SerializeElement(k * G), exactly."""
        public = ec.derive_private_key(k % cls.N, cls.CURVE).public_key()
        return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)

    @classmethod
    def mul(cls, k: int, point: bytes) -> tuple[bytes, bytes]:
        """Both candidate encodings of k * point (ECDH gives x only)."""
        peer = ec.EllipticCurvePublicKey.from_encoded_point(cls.CURVE, point)
        x = ec.derive_private_key(k % cls.N, cls.CURVE).exchange(ec.ECDH(), peer)
        return b"\x02" + x, b"\x03" + x

    @classmethod
    def composite_scalar(cls, pk: bytes, blinded: bytes, evaluated: bytes) -> int:
        """d0 of ComputeComposites for one element (RFC 9497 §2.2.1)."""
        seed = hashlib.sha384(cls.lp(pk) + cls.lp(b"Seed-" + cls.CONTEXT)).digest()
        return cls.hash_to_scalar(
            cls.lp(seed) + (0).to_bytes(2, "big") + cls.lp(blinded) + cls.lp(evaluated) + b"Composite"
        )

    @classmethod
    def challenge(cls, pk: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes) -> int:
        return cls.hash_to_scalar(cls.lp(pk) + cls.lp(m) + cls.lp(z) + cls.lp(t2) + cls.lp(t3) + b"Challenge")

    @classmethod
    def split_proof(cls, proof: bytes) -> tuple[int, int]:
        assert len(proof) == 2 * voprf.NS
        return int.from_bytes(proof[: voprf.NS], "big"), int.from_bytes(proof[voprf.NS :], "big")

    @classmethod
    def proof_nonce(cls, sk: int, pk: bytes, blinded: bytes, evaluated: bytes, proof: bytes) -> int | None:
        """Prover-side check of a one-element proof ``c || s`` made with key ``sk``.

        With ``r = s + c*sk`` the prover's t2 = r*G, M = d0*C, Z = sk*M and
        t3 = r*M are recomputed; the proof is RFC 9497 GenerateProof output
        iff ``c`` is the challenge over them. Returns ``r`` then, else None.
        """
        c, s = cls.split_proof(proof)
        r = (s + c * sk) % cls.N
        d0 = cls.composite_scalar(pk, blinded, evaluated)
        t2 = cls.mul_g(r)
        for m in cls.mul(d0, blinded):
            for z in cls.mul(d0 * sk, blinded):
                for t3 in cls.mul(r * d0, blinded):
                    if cls.challenge(pk, m, z, t2, t3) == c:
                        return r
        return None

    @classmethod
    def finalize_candidates(cls, input: bytes, blind: int, evaluated: bytes) -> set[bytes]:
        """RFC 9497 Finalize for both signs of blind^-1 * evaluated."""
        return {
            hashlib.sha384(cls.lp(input) + cls.lp(unblinded) + b"Finalize").digest()
            for unblinded in cls.mul(pow(blind, -1, cls.N), evaluated)
        }

    @classmethod
    def forge_proofs(cls, sk: int, pk: bytes, blinded: bytes, evaluated: bytes, r: int) -> list[bytes]:
        """GenerateProof for every sign guess of M, Z, t3: exactly one is the real proof."""
        d0 = cls.composite_scalar(pk, blinded, evaluated)
        t2 = cls.mul_g(r)
        proofs = []
        for m in cls.mul(d0, blinded):
            for z in cls.mul(d0 * sk, blinded):
                for t3 in cls.mul(r * d0, blinded):
                    c = cls.challenge(pk, m, z, t2, t3)
                    s = (r - c * sk) % cls.N
                    proofs.append(c.to_bytes(voprf.NS, "big") + s.to_bytes(voprf.NS, "big"))
        return proofs


R = _Rfc9497
SK_VECTOR = int(V["skSm"], 16)


@pytest.fixture(scope="module")
def vector_key() -> voprf.IssuerKey:
    return voprf.IssuerKey.derive(h(V["seed"]), h(V["keyInfo"]))


# --- RFC 9497 Appendix A.4.2 ------------------------------------------------


def test_vector_set_is_p384_sha384_voprf() -> None:
    assert (V["identifier"], V["mode"], V["hash"]) == ("P384-SHA384", 1, "SHA384")
    assert h(V["groupDST"]) == b"HashToGroup-" + R.CONTEXT
    assert len(SINGLE) == 2 and len(BATCH) == 1


def test_derive_key_pair_gives_vector_public_key(vector_key: voprf.IssuerKey) -> None:
    """pkSm is reproduced; skSm is not exported by the package, but skSm*G == pkSm pins it."""
    assert vector_key.public_key == h(V["pkSm"])
    assert R.mul_g(SK_VECTOR) == h(V["pkSm"])
    assert voprf.IssuerKey.derive(h(V["seed"]), b"other info").public_key != h(V["pkSm"])


def test_helper_reproduces_vector_proofs_and_outputs() -> None:
    """The independent transcript recovers each vector's nonce r and Output (so it can be trusted below)."""
    for v in SINGLE:
        blinded, evaluated, proof = h(v["BlindedElement"]), h(v["EvaluationElement"]), h(v["Proof"]["proof"])
        assert R.proof_nonce(SK_VECTOR, h(V["pkSm"]), blinded, evaluated, proof) == int(v["Proof"]["r"], 16)
        swapped = proof[voprf.NS :] + proof[: voprf.NS]
        assert R.proof_nonce(SK_VECTOR, h(V["pkSm"]), blinded, evaluated, swapped) is None
        assert h(v["Output"]) in R.finalize_candidates(h(v["Input"]), int(v["Blind"], 16), evaluated)
    # The batch proof needs a sum of points (not available here): only its layout s = r - c*sk is checked.
    for v in BATCH:
        c, s = R.split_proof(h(v["Proof"]["proof"]))
        assert (s + c * SK_VECTOR) % R.N == int(v["Proof"]["r"], 16)


@pytest.mark.parametrize("v", V["vectors"], ids=lambda v: f"batch{v['Batch']}-{v['Input'][:8]}")
def test_evaluate_matches_vector_output(vector_key: voprf.IssuerKey, v: dict[str, Any]) -> None:
    """Evaluate(Input) == Output for every input, batch vector included (one by one)."""
    inputs, outputs = v["Input"].split(","), v["Output"].split(",")
    assert len(inputs) == len(outputs) == v["Batch"]
    for input_hex, output_hex in zip(inputs, outputs, strict=True):
        assert vector_key.evaluate(h(input_hex)) == h(output_hex)


@pytest.mark.parametrize("v", V["vectors"], ids=lambda v: f"batch{v['Batch']}-{v['Input'][:8]}")
def test_blind_evaluate_matches_vector_evaluation_element(
    vector_key: voprf.IssuerKey, v: dict[str, Any]
) -> None:
    """The evaluated element is the vector's; the proof (random r) is a valid RFC 9497 proof ``c || s``.

    The batch vector's elements are evaluated one by one: the wrapper has no
    batch API (type-1 issuance is one token per request), and a batch proof
    with the vector's r cannot be reproduced (the package draws r itself).
    """
    pk = h(V["pkSm"])
    for blinded_hex, evaluated_hex in zip(
        v["BlindedElement"].split(","), v["EvaluationElement"].split(","), strict=True
    ):
        blinded = h(blinded_hex)
        response = vector_key.blind_evaluate(blinded)
        assert len(response) == voprf.EVALUATION_SIZE
        assert response[: voprf.NE] == h(evaluated_hex)
        assert R.proof_nonce(SK_VECTOR, pk, blinded, response[: voprf.NE], response[voprf.NE :]) is not None
        assert vector_key.blind_evaluate(blinded)[voprf.NE :] != response[voprf.NE :]  # fresh r each time


def test_blind_evaluate_on_known_discrete_log_is_exact(vector_key: voprf.IssuerKey) -> None:
    """For C = b*G the evaluated element must be exactly (skSm*b)*G, sign of y included."""
    for b in (1, 2, 0xC0FFEE, R.N - 1):
        response = vector_key.blind_evaluate(R.mul_g(b))
        assert response[: voprf.NE] == R.mul_g(SK_VECTOR * b)


# --- RFC 9578 Appendix A.1 and pat-go type-1 issuance vectors ----------------


@pytest.mark.parametrize("t", TYPE1)
def test_type1_vector_layout_and_proof(t: dict[str, str]) -> None:
    """What a type-1 vector proves about the layout this module speaks.

    Checked: sizes; pkS is a valid key for :func:`voprf.validate_public_key`
    and equals skS*G; the first Ne bytes of token_response are skS times the
    blinded element of token_request (so the element comes first); the
    remaining 2*Ns bytes are an RFC 9497 proof ``c || s`` for (pkS, blinded,
    evaluated) — checked on the prover side with skS; the token's
    authenticator is Finalize(token_input, blind^-1 * evaluated), i.e.
    Evaluate(skS, token_input), the relation :meth:`IssuerKey.evaluate` serves.

    Not checkable with the package: running our :func:`voprf.finalize` on the
    vector's exchange (a client state cannot be built from the vector's
    blind), and ``IssuerKey.evaluate`` under skS (a raw scalar cannot be
    loaded; keys exist only as DeriveKeyPair seeds, and the vectors give none).
    """
    sk, pk = int(t["skS"], 16), h(t["pkS"])
    request, response, token = h(t["token_request"]), h(t["token_response"]), h(t["token"])
    assert (len(request), len(response), len(token)) == (
        TOKEN_REQUEST_SIZE,
        voprf.EVALUATION_SIZE,
        TOKEN_SIZE,
    )
    voprf.validate_public_key(pk)
    assert R.mul_g(sk) == pk
    blinded, evaluated, proof = request[3:], response[: voprf.NE], response[voprf.NE :]
    assert evaluated in R.mul(sk, blinded)
    assert R.proof_nonce(sk, pk, blinded, evaluated, proof) is not None
    token_input, authenticator = token[:TOKEN_INPUT_SIZE], token[TOKEN_INPUT_SIZE:]
    assert authenticator in R.finalize_candidates(token_input, int(t["blind"], 16), evaluated)


@pytest.mark.parametrize("t", TYPE1)
def test_type1_vector_bytes_go_through_the_wrapper(vector_key: voprf.IssuerKey, t: dict[str, str]) -> None:
    """A standard client's blinded element is accepted; a standard token response parses.

    The response is for another client's blinded element, so our state must
    reject it as a proof failure (CryptoError), not as malformed bytes.
    """
    request, response = h(t["token_request"]), h(t["token_response"])
    assert len(vector_key.blind_evaluate(request[3:])) == voprf.EVALUATION_SIZE
    _, state = voprf.blind(b"\x00\x01" + bytes(TOKEN_INPUT_SIZE - 2))
    with pytest.raises(CryptoError):
        voprf.finalize(state, response, h(t["pkS"]))


# --- round trips, interop with an independent prover, typed failures --------


@pytest.mark.parametrize("make_key", ["derive", "generate"])
def test_round_trip_equals_evaluate(make_key: str) -> None:
    if make_key == "derive":
        key = voprf.IssuerKey.derive(bytes(range(32)), b"privproc test")
    else:
        key, seed = voprf.IssuerKey.generate(info=b"privproc test")
        assert len(seed) == voprf.NS
        assert voprf.IssuerKey.derive(seed, b"privproc test").public_key == key.public_key
    for message in (b"\x00", b"token input", bytes(TOKEN_INPUT_SIZE), b"x" * voprf.MAX_INPUT_SIZE):
        blinded, state = voprf.blind(message)
        assert len(blinded) == voprf.NE
        output = voprf.finalize(state, key.blind_evaluate(blinded), key.public_key)
        assert len(output) == voprf.NH
        assert output == key.evaluate(message)


def test_generate_gives_fresh_keys() -> None:
    (a, seed_a), (b, seed_b) = voprf.IssuerKey.generate(), voprf.IssuerKey.generate()
    assert seed_a != seed_b and a.public_key != b.public_key


def test_finalize_accepts_a_proof_built_outside_the_package(vector_key: voprf.IssuerKey) -> None:
    """Client interop: an RFC-layout response whose proof was made by the independent transcript.

    The 8 candidates differ only in the sign guesses for M, Z, t3: exactly
    one is RFC 9497 GenerateProof output, and only that one may verify.
    """
    message = b"interop input"
    blinded, state = voprf.blind(message)
    evaluated = vector_key.blind_evaluate(blinded)[: voprf.NE]
    proofs = R.forge_proofs(SK_VECTOR, vector_key.public_key, blinded, evaluated, r=0x1234567890ABCDEF)
    outputs, failures = [], 0
    for proof in proofs:
        try:
            outputs.append(voprf.finalize(state, evaluated + proof, vector_key.public_key))
        except CryptoError:
            failures += 1
    assert outputs == [vector_key.evaluate(message)] and failures == len(proofs) - 1


def test_wrong_public_key_is_a_crypto_error() -> None:
    key, _ = voprf.IssuerKey.generate()
    other, _ = voprf.IssuerKey.generate()
    blinded, state = voprf.blind(b"input")
    with pytest.raises(CryptoError, match=r"^VOPRF proof verification failed$"):
        voprf.finalize(state, key.blind_evaluate(blinded), other.public_key)


def test_response_for_another_blinded_element_is_a_crypto_error(vector_key: voprf.IssuerKey) -> None:
    blinded, state = voprf.blind(b"input")
    other_blinded, _ = voprf.blind(b"input")
    with pytest.raises(CryptoError):
        voprf.finalize(state, vector_key.blind_evaluate(other_blinded), vector_key.public_key)
    voprf.finalize(state, vector_key.blind_evaluate(blinded), vector_key.public_key)


def test_every_tampered_byte_is_rejected(vector_key: voprf.IssuerKey) -> None:
    """A flipped bit in the proof fails verification; in the element, verification or decoding."""
    blinded, state = voprf.blind(b"input")
    response = vector_key.blind_evaluate(blinded)
    for i in range(len(response)):
        tampered = bytearray(response)
        tampered[i] ^= 0x01
        expected = CryptoError if i >= voprf.NE else (CryptoError, WireError)
        with pytest.raises(expected):
            voprf.finalize(state, bytes(tampered), vector_key.public_key)


def test_swapped_proof_halves_and_package_layout_are_rejected(vector_key: voprf.IssuerKey) -> None:
    blinded, state = voprf.blind(b"input")
    response = vector_key.blind_evaluate(blinded)
    element, c, s = response[: voprf.NE], response[voprf.NE : voprf.NE + voprf.NS], response[-voprf.NS :]
    with pytest.raises(CryptoError):
        voprf.finalize(state, element + s + c, vector_key.public_key)
    with pytest.raises((CryptoError, WireError)):  # the package's own c || s || element order
        voprf.finalize(state, c + s + element, vector_key.public_key)
    assert voprf.finalize(state, element + c + s, vector_key.public_key) == vector_key.evaluate(b"input")


def test_length_and_encoding_errors(vector_key: voprf.IssuerKey) -> None:
    blinded, state = voprf.blind(b"input")
    response = vector_key.blind_evaluate(blinded)
    pk = vector_key.public_key
    element, c, s = response[: voprf.NE], response[voprf.NE : voprf.NE + voprf.NS], response[-voprf.NS :]
    not_a_point = b"\x02" + b"\xff" * 48
    scalar_n, zero = R.N.to_bytes(voprf.NS, "big"), bytes(voprf.NS)

    def fin(data: bytes, public_key: bytes = pk) -> object:
        return voprf.finalize(state, data, public_key)

    bad_size, bad_key_size = "VOPRF evaluation must be 145 bytes", "VOPRF public key must be 49 bytes"
    bad_blinded, bad_evaluation = "invalid VOPRF blinded element", "invalid VOPRF evaluation"
    bad_seed = "VOPRF seed must be 32 or 48 bytes"
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: vector_key.blind_evaluate(blinded + b"\x00"), "VOPRF blinded element must be 49 bytes"),
        (lambda: vector_key.blind_evaluate(blinded[:-1]), "VOPRF blinded element must be 49 bytes"),
        (lambda: vector_key.blind_evaluate(not_a_point), bad_blinded),
        (lambda: vector_key.blind_evaluate(bytes(voprf.NE)), bad_blinded),
        (lambda: vector_key.evaluate(b"x" * 0x10000), "VOPRF input too long"),
        (lambda: voprf.blind(b""), "VOPRF input must not be empty"),
        (lambda: voprf.blind(b"x" * 0x10000), "VOPRF input too long"),
        (lambda: fin(response[:-1]), bad_size),
        (lambda: fin(response + b"\x00"), bad_size),
        (lambda: fin(response, pk[:-1]), bad_key_size),
        (lambda: fin(response, not_a_point), "invalid VOPRF public key"),
        (lambda: fin(not_a_point + c + s), bad_evaluation),
        (lambda: fin(element + scalar_n + s), bad_evaluation),
        (lambda: fin(element + c + zero), bad_evaluation),
        (lambda: voprf.validate_public_key(not_a_point), "invalid VOPRF public key"),
        (lambda: voprf.validate_public_key(b""), bad_key_size),
        (lambda: voprf.IssuerKey.derive(bytes(31), b""), bad_seed),
        (lambda: voprf.IssuerKey.derive(bytes(33), b""), bad_seed),
        (lambda: voprf.IssuerKey.derive(bytes(32), b"x" * 0x10000), "VOPRF key info too long"),
    ]
    for call, message in cases:
        with pytest.raises(WireError) as info:
            call()
        assert type(info.value) is WireError and str(info.value) == message
    assert fin(element + c + s) == vector_key.evaluate(b"input")


def test_largest_key_info_is_accepted() -> None:
    assert len(voprf.IssuerKey.derive(bytes(voprf.NS), b"x" * voprf.MAX_INPUT_SIZE).public_key) == voprf.NE


def test_reprs_carry_no_key_material(vector_key: voprf.IssuerKey) -> None:
    _, state = voprf.blind(b"secret input")
    assert V["pkSm"] not in repr(vector_key) and "secret" not in repr(state)
    assert (
        repr(vector_key) == "IssuerKey(<P384-SHA384 VOPRF>)"
        and repr(state) == "ClientState(<P384-SHA384 VOPRF>)"
    )


# --- arbitrary bytes: a value or a typed error, nothing else -----------------

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_FIXED_KEY = voprf.IssuerKey.derive(bytes(32), b"hypothesis")
_FIXED_BLINDED, _FIXED_STATE = voprf.blind(b"hypothesis input")
_FIXED_RESPONSE = _FIXED_KEY.blind_evaluate(_FIXED_BLINDED)

# 49-byte strings with a compressed-point prefix hit valid points about half the time.
points = st.tuples(st.sampled_from([0x02, 0x03]), st.binary(min_size=48, max_size=48)).map(
    lambda p: bytes([p[0]]) + p[1]
)
element_like = st.one_of(st.binary(max_size=100), points)
response_like = st.one_of(
    st.binary(max_size=200),
    st.tuples(points, st.binary(min_size=96, max_size=96)).map(lambda p: p[0] + p[1]),
    # the real response with one byte replaced
    st.tuples(st.integers(0, voprf.EVALUATION_SIZE - 1), st.integers(0, 255)).map(
        lambda p: _FIXED_RESPONSE[: p[0]] + bytes([p[1]]) + _FIXED_RESPONSE[p[0] + 1 :]
    ),
)


def _value_or_typed_error(call: Callable[[], object]) -> object:
    try:
        return call()
    except (CryptoError, WireError) as error:
        assert type(error) in (CryptoError, WireError)
        assert isinstance(error, PrivprocError)
        return error


@FAST
@given(element_like)
def test_blind_evaluate_on_arbitrary_bytes(data: bytes) -> None:
    result = _value_or_typed_error(lambda: _FIXED_KEY.blind_evaluate(data))
    if isinstance(result, bytes):
        assert len(result) == voprf.EVALUATION_SIZE and len(data) == voprf.NE


@FAST
@given(response_like, st.one_of(st.just(_FIXED_KEY.public_key), element_like))
def test_finalize_on_arbitrary_bytes(response: bytes, public_key: bytes) -> None:
    result = _value_or_typed_error(lambda: voprf.finalize(_FIXED_STATE, response, public_key))
    if isinstance(result, bytes):
        assert (response, public_key) == (_FIXED_RESPONSE, _FIXED_KEY.public_key)
        assert result == _FIXED_KEY.evaluate(b"hypothesis input")
    elif response == _FIXED_RESPONSE and public_key == _FIXED_KEY.public_key:
        pytest.fail("the genuine response was rejected")


@FAST
@given(st.binary(max_size=300))
def test_blind_evaluate_and_finalize_on_arbitrary_inputs(message: bytes) -> None:
    result = _value_or_typed_error(lambda: voprf.blind(message))
    if isinstance(result, tuple):
        blinded, state = result
        output = voprf.finalize(state, _FIXED_KEY.blind_evaluate(blinded), _FIXED_KEY.public_key)
        assert output == _FIXED_KEY.evaluate(message)
    else:
        assert message == b""


@FAST
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_derive_on_arbitrary_bytes(seed: bytes, info: bytes) -> None:
    result = _value_or_typed_error(lambda: voprf.IssuerKey.derive(seed, info))
    if isinstance(result, voprf.IssuerKey):
        assert len(seed) in voprf.SEED_SIZES
        voprf.validate_public_key(result.public_key)
    else:
        assert len(seed) not in voprf.SEED_SIZES


@FAST
@given(element_like)
def test_validate_public_key_on_arbitrary_bytes(data: bytes) -> None:
    _value_or_typed_error(lambda: voprf.validate_public_key(data))
