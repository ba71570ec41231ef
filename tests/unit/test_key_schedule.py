"""Gateway key rotation with grace, on an injected clock; replicas sharing a seed agree."""

from __future__ import annotations

import base64
import contextlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import ConfigError
from privproc.gateway.keys import Advertisement, KeySchedule, epoch_key, new_seed, parse_seed
from privproc.wire import ohttp


def _encapsulate_to(config: ohttp.KeyConfig) -> bytes:
    return ohttp.encapsulate_request(config, b"x")[0]


def test_rotation_advertises_new_key_and_accepts_old_during_grace() -> None:
    schedule = KeySchedule(rotation=100, grace=30, now=0)
    first = schedule.current.key.config
    old_request = _encapsulate_to(first)
    assert schedule.tick(99) == ([], [])
    added, retired = schedule.tick(100)
    assert added == [schedule.current.key.config.key_id] and retired == []
    second = schedule.current.key.config
    assert second.key_id != first.key_id
    assert schedule.advertised_configs() == [second]
    # Old key still opens during grace ...
    schedule.keyring.decapsulate_request(old_request)
    # ... and is gone after it.
    assert schedule.tick(131) == ([], [first.key_id])
    with pytest.raises(ohttp.KeyConfigRejectedError):
        schedule.keyring.decapsulate_request(old_request)
    schedule.keyring.decapsulate_request(_encapsulate_to(second))


def test_advertisement_window_and_body() -> None:
    schedule = KeySchedule(rotation=100, grace=30, now=1000)
    ad = schedule.advertisement()
    assert ohttp.decode_key_config_list(ad.body) == [schedule.current.key.config]
    assert (ad.not_before, ad.not_after) == (1000, 1130)
    assert schedule.seconds_until_rotation(1040) == 60


def test_key_ids_wrap_and_never_collide_with_accepted_keys() -> None:
    schedule = KeySchedule(rotation=1, grace=5, now=0)
    for t in range(1, 600):
        schedule.tick(t)
        ids = schedule.keyring.key_ids()
        assert len(ids) == len(set(ids)) <= 7


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        KeySchedule(rotation=0, grace=1, now=0)


# --- seeded: replicas share one schedule ------------------------------------------------------

SEED = bytes(range(32))


def _state(schedule: KeySchedule) -> tuple[Advertisement, list[tuple[int, bytes]]]:
    """What a replica advertises and which keys (id, public key) it accepts."""
    ring = [(k.key.config.key_id, k.key.config.public_key) for k in schedule.accepted]
    assert sorted(i for i, _ in ring) == schedule.keyring.key_ids()
    return schedule.advertisement(), ring


def test_seeded_replicas_started_apart_agree_at_every_tick() -> None:
    first = KeySchedule(rotation=100, grace=30, now=1005, seed=SEED)
    ticks = [float(t) for t in range(1005, 1500, 5)]
    second: KeySchedule | None = None
    for t in ticks:
        first.tick(t)
        if second is None and t >= 1077:
            second = KeySchedule(rotation=100, grace=30, now=t, seed=SEED)  # started 72 s later
        if second is not None:
            second.tick(t)
            assert _state(first) == _state(second)
    assert second is not None


def test_seeded_windows_are_epoch_aligned_and_key_ids_are_epochs() -> None:
    schedule = KeySchedule(rotation=100, grace=30, now=1020, seed=SEED)
    # Started inside epoch 10's first 30 s: epoch 9's key is still in its grace.
    assert schedule.keyring.key_ids() == [9, 10]
    ad = schedule.advertisement()
    assert (ad.key_id, ad.not_before, ad.not_after) == (10, 1000, 1130)
    assert schedule.seconds_until_rotation(1020) == 80
    assert schedule.tick(1029.9) == ([], [])
    assert schedule.tick(1030) == ([], [9])
    assert schedule.tick(1099.9) == ([], [])
    assert schedule.tick(1100) == ([11], [])
    assert schedule.advertisement().not_before == 1100
    assert schedule.tick(1130) == ([], [10])
    late = KeySchedule(rotation=1, grace=0.5, now=300.2, seed=SEED)
    assert late.keyring.key_ids() == [299 % 256, 300 % 256]  # ids wrap with the epoch


def test_seeded_key_opens_what_the_other_replica_advertised_and_its_grace_key() -> None:
    one = KeySchedule(rotation=100, grace=30, now=1050, seed=SEED)
    other = KeySchedule(rotation=100, grace=30, now=1099, seed=SEED)
    request = _encapsulate_to(ohttp.decode_key_config_list(one.advertisement().body)[0])
    other.keyring.decapsulate_request(request)
    other.tick(1110)  # rotated: the old key is in its grace
    other.keyring.decapsulate_request(request)
    other.tick(1130)
    with pytest.raises(ohttp.KeyConfigRejectedError):
        other.keyring.decapsulate_request(request)


def test_different_seeds_rotations_and_epochs_give_different_keys() -> None:
    ad = KeySchedule(rotation=100, grace=30, now=1050, seed=SEED).advertisement()
    other_seed = KeySchedule(rotation=100, grace=30, now=1050, seed=bytes(32)).advertisement()
    assert ad.key_id == other_seed.key_id and ad.body != other_seed.body
    assert epoch_key(SEED, 100.0, 10).config != epoch_key(SEED, 50.0, 10).config
    assert epoch_key(SEED, 100.0, 10).config.public_key != epoch_key(SEED, 100.0, 266).config.public_key


def _labeled_extract(suite_id: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac.digest(b"\0" * 32, b"HPKE-v1" + suite_id + label + ikm, "sha256")


def test_epoch_key_is_hkdf_then_rfc9180_derive_key_pair() -> None:
    """Recomputed here from the RFC's definitions: a change of derivation splits a rolling update."""
    info = b"privproc ohttp-gateway-key v1" + struct.pack(">HdQ", 0x0020, 3600.0, 493_000)
    prk = hmac.digest(b"\0" * 32, SEED, "sha256")  # HKDF-Extract, no salt
    ikm = hmac.digest(prk, info + b"\x01", "sha256")  # HKDF-Expand, one block
    suite_id = b"KEM\x00\x20"
    dkp_prk = _labeled_extract(suite_id, b"dkp_prk", ikm)
    sk = hmac.digest(dkp_prk, b"\x00\x20" + b"HPKE-v1" + suite_id + b"sk" + b"\x01", "sha256")
    key = epoch_key(SEED, 3600.0, 493_000)
    assert key.secret == sk and key.config.key_id == 493_000 % 256
    assert key.config.public_key.hex() == "129c5c4d2b55048a4808ce23841b5cf73fee33d9f57a1e144151404399d42b18"


@settings(max_examples=150, deadline=None)
@given(
    start=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    offset=st.floats(min_value=0, max_value=5000, allow_nan=False),
    rotation=st.sampled_from([1.0, 7.5, 100.0, 3600.0]),
    grace_ratio=st.sampled_from([0.0, 0.3, 1.0, 2.5]),
)
def test_seeded_schedules_agree_whatever_their_start(
    start: float, offset: float, rotation: float, grace_ratio: float
) -> None:
    grace = rotation * grace_ratio
    early = KeySchedule(rotation=rotation, grace=grace, now=start, seed=SEED)
    late = KeySchedule(rotation=rotation, grace=grace, now=start + offset, seed=SEED)
    early.tick(start + offset)
    assert _state(early) == _state(late)
    for step in range(1, 6):
        t = start + offset + step * rotation * 0.45
        early.tick(t)
        late.tick(t)
        assert _state(early) == _state(late)
        ad = late.advertisement()
        assert ad.not_before <= t < ad.not_before + rotation
        assert ad.not_after == ad.not_before + rotation + grace
        # Every accepted key is current now or still in its grace.
        assert all(t < k.accepted_until(grace) for k in late.accepted)


def test_without_a_seed_keys_are_random_and_timed_from_the_start() -> None:
    one = KeySchedule(rotation=100, grace=30, now=1050)
    other = KeySchedule(rotation=100, grace=30, now=1050)
    assert not one.seeded and KeySchedule(rotation=100, grace=30, now=1050, seed=SEED).seeded
    assert one.advertisement().body != other.advertisement().body
    assert one.advertisement().not_before == 1050 and one.keyring.key_ids() == [1]


def test_seeded_parameters_refused() -> None:
    with pytest.raises(ValueError):
        KeySchedule(rotation=100, grace=30, now=0, seed=bytes(31))
    with pytest.raises(ValueError):
        KeySchedule(rotation=1, grace=254, now=0, seed=SEED)
    with pytest.raises(ValueError):
        KeySchedule(rotation=float("nan"), grace=1, now=0, seed=SEED)


# --- the seed file ----------------------------------------------------------------------------


def test_new_seed_parses_to_32_fresh_bytes() -> None:
    text = new_seed()
    assert len(parse_seed(text + "\n")) == 32 and parse_seed(text) != parse_seed(new_seed())


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=200), st.sampled_from(["", "\n", "  \n"]))
def test_seed_round_trips_through_base64(seed: bytes, tail: str) -> None:
    assert parse_seed(base64.b64encode(seed).decode() + tail) == seed


@pytest.mark.parametrize(
    "text",
    [
        "",
        base64.b64encode(bytes(31)).decode(),  # too short
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(),  # base64url
        base64.b64encode(bytes(32)).decode().rstrip("="),  # padding missing
        "A" * 2000,
    ],
)
def test_bad_seeds_refused(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_seed(text)
    assert text[:8] not in str(err.value) or not text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_seed_text_parses_or_is_refused_cleanly(text: str) -> None:
    with contextlib.suppress(ConfigError):
        assert len(parse_seed(text)) >= 32
