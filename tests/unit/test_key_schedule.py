"""Gateway key rotation with grace, on an injected clock."""

from __future__ import annotations

import pytest

from privproc.gateway.keys import KeySchedule
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
