"""RFC 9458: Appendix A byte for byte in both directions, key configs, typed errors, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import CryptoError, PrivprocError, TruncatedError, WireError
from privproc.wire import bhttp, ohttp
from tests.support import load_vector

A = load_vector("rfc9458-appendixA.json")
h = bytes.fromhex
NONCE_LEN = 16


@pytest.fixture
def vector_key() -> ohttp.GatewayKey:
    config = ohttp.KeyConfig.decode(h(A["key_config"]))
    return ohttp.GatewayKey(config=config, secret=h(A["server_x25519_sk"]))


def test_key_config_round_trip(vector_key: ohttp.GatewayKey) -> None:
    config = vector_key.config
    assert config.key_id == 1 and config.kem_id == 0x0020
    assert config.suites == (ohttp.SymmetricSuite(1, 1), ohttp.SymmetricSuite(1, 3))
    assert config.encode() == h(A["key_config"])
    # The public key in the config is the one of the vector's secret.
    assert ohttp.GatewayKey.from_secret(1, h(A["server_x25519_sk"])).config.public_key == config.public_key


def test_client_reproduces_encapsulated_request(vector_key: ohttp.GatewayKey) -> None:
    encapsulated, _ = ohttp.encapsulate_request(
        vector_key.config, h(A["bhttp_request"]), ephemeral_secret=h(A["client_ephemeral_sk"])
    )
    assert encapsulated == h(A["encapsulated_request"])


def test_gateway_decapsulates_and_reproduces_encapsulated_response(vector_key: ohttp.GatewayKey) -> None:
    request, context = ohttp.Keyring([vector_key]).decapsulate_request(h(A["encapsulated_request"]))
    assert request == h(A["bhttp_request"])
    nonce = h(A["encapsulated_response"])[:NONCE_LEN]
    response = context.encapsulate_response(h(A["bhttp_response"]), response_nonce=nonce)
    assert response == h(A["encapsulated_response"])


def test_client_opens_vector_response(vector_key: ohttp.GatewayKey) -> None:
    _, context = ohttp.encapsulate_request(
        vector_key.config, h(A["bhttp_request"]), ephemeral_secret=h(A["client_ephemeral_sk"])
    )
    assert context.decapsulate_response(h(A["encapsulated_response"])) == h(A["bhttp_response"])


def test_vector_inner_messages_are_binary_http() -> None:
    assert bhttp.decode_request(h(A["bhttp_request"])) == bhttp.Request("GET", "https", "example.com", "/")
    assert bhttp.decode_response(h(A["bhttp_response"])) == bhttp.Response(200)


def test_key_config_list_round_trip_and_skips_unknown_kem() -> None:
    a = ohttp.GatewayKey.generate(1).config
    b = ohttp.GatewayKey.generate(2).config
    body = ohttp.encode_key_config_list([a, b])
    assert ohttp.decode_key_config_list(body) == [a, b]
    unknown = b"\x07\x00\x99" + bytes(5)  # key id 7, KEM 0x0099 we cannot parse
    mixed = len(unknown).to_bytes(2, "big") + unknown + body
    assert ohttp.decode_key_config_list(mixed) == [a, b]


def test_select_skips_configs_without_our_suite() -> None:
    chacha_only = ohttp.KeyConfig(9, 0x0020, bytes(32), (ohttp.SymmetricSuite(1, 3),))
    ours = ohttp.GatewayKey.generate(3).config
    assert ohttp.select_key_config([chacha_only, ours])[0] == ours
    with pytest.raises(ohttp.KeyConfigRejectedError):
        ohttp.select_key_config([chacha_only])


def _pair(key_id: int = 1) -> tuple[ohttp.GatewayKey, ohttp.Keyring]:
    key = ohttp.GatewayKey.generate(key_id)
    return key, ohttp.Keyring([key])


def test_round_trip_and_several_keys_at_once() -> None:
    old, new = ohttp.GatewayKey.generate(1), ohttp.GatewayKey.generate(2)
    ring = ohttp.Keyring([old, new])
    for key in (old, new):
        payload, client = ohttp.encapsulate_request(key.config, b"inner request")
        inner, server = ring.decapsulate_request(payload)
        assert inner == b"inner request"
        assert client.decapsulate_response(server.encapsulate_response(b"answer")) == b"answer"


def test_unknown_key_id_and_bad_ciphertext_get_one_indistinguishable_error() -> None:
    key, ring = _pair(1)
    payload, _ = ohttp.encapsulate_request(key.config, b"x")
    wrong_id = bytes([2]) + payload[1:]
    tampered = payload[:-1] + bytes([payload[-1] ^ 1])
    messages = set()
    for bad in (wrong_id, tampered):
        with pytest.raises(ohttp.KeyConfigRejectedError) as info:
            ring.decapsulate_request(bad)
        messages.add(str(info.value))
    assert len(messages) == 1


def test_wrong_suite_in_header_is_a_key_problem() -> None:
    key, ring = _pair(1)
    payload, _ = ohttp.encapsulate_request(key.config, b"x")
    chacha = payload[:5] + (3).to_bytes(2, "big") + payload[7:]
    with pytest.raises(ohttp.KeyConfigRejectedError):
        ring.decapsulate_request(chacha)


def test_truncated_request_is_typed() -> None:
    key, ring = _pair(1)
    payload, _ = ohttp.encapsulate_request(key.config, b"x")
    with pytest.raises(TruncatedError):
        ring.decapsulate_request(payload[:20])


def test_response_tampering_and_other_requests_response_refused() -> None:
    key, ring = _pair(1)
    p1, c1 = ohttp.encapsulate_request(key.config, b"one")
    p2, _ = ohttp.encapsulate_request(key.config, b"two")
    _, s1 = ring.decapsulate_request(p1)
    _, s2 = ring.decapsulate_request(p2)
    good = s1.encapsulate_response(b"for one")
    flipped = good[:-1] + bytes([good[-1] ^ 0x80])
    with pytest.raises(ohttp.ResponseDecryptError):
        c1.decapsulate_response(flipped)
    # Another client's response never opens under this client's context.
    with pytest.raises(ohttp.ResponseDecryptError):
        c1.decapsulate_response(s2.encapsulate_response(b"for two"))


def test_replayed_request_gets_fresh_answer_only_the_original_client_opens() -> None:
    key, ring = _pair(1)
    payload, client = ohttp.encapsulate_request(key.config, b"req")
    answers = [ring.decapsulate_request(payload)[1].encapsulate_response(b"resp") for _ in range(2)]
    assert answers[0][:NONCE_LEN] != answers[1][:NONCE_LEN]  # fresh response nonce each time
    assert all(client.decapsulate_response(a) == b"resp" for a in answers)


def test_errors_never_include_input_bytes() -> None:
    _, ring = _pair(1)
    marker = b"SECRET-MARKER-0123456789-SECRET-MARKER-0123456789"
    for data in (marker, b"\x01\x00\x20\x00\x01\x00\x01" + marker):
        with pytest.raises(PrivprocError) as info:
            ring.decapsulate_request(data)
        assert "SECRET" not in str(info.value) and marker.hex() not in str(info.value)


# --- properties: any bytes give a value or a typed error ------------------------------------

_KEY, _RING = _pair(1)
_PAYLOAD, _CLIENT = ohttp.encapsulate_request(_KEY.config, b"payload")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_key_config_list_any_bytes(data: bytes) -> None:
    try:
        configs = ohttp.decode_key_config_list(data)
    except WireError:
        return
    # What parsed re-encodes to a list that parses to the same configs.
    assert ohttp.decode_key_config_list(ohttp.encode_key_config_list(configs)) == configs


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_key_config_decode_any_bytes(data: bytes) -> None:
    try:
        config = ohttp.KeyConfig.decode(data)
    except WireError:
        return
    assert config.encode() == data


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200)
    | st.builds(lambda i, b: _PAYLOAD[:i] + b, st.integers(0, len(_PAYLOAD)), st.binary())
)
def test_gateway_decapsulate_any_bytes(data: bytes) -> None:
    try:
        inner, _ = _RING.decapsulate_request(data)
    except (WireError, CryptoError):
        return
    assert data == _PAYLOAD and inner == b"payload"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_client_decapsulate_any_bytes(data: bytes) -> None:
    with pytest.raises((WireError, CryptoError)):
        _CLIENT.decapsulate_response(data)
