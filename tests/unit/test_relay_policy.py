"""The relay's per-client rate limit: bucket arithmetic, isolation, bounded memory, no stored address."""

from __future__ import annotations

import pytest

from privproc.relay.policy import RateLimiter, peer_host


def test_burst_then_refill() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.allow("10.0.0.1", 0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("10.0.0.1", 0.4) is False  # 0.8 token
    assert limiter.allow("10.0.0.1", 0.5) is True  # 1 token after 0.5 s
    assert limiter.allow("10.0.0.1", 100) is True


def test_clients_are_isolated() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.allow("a", 0) and not limiter.allow("a", 0)
    assert limiter.allow("b", 0)


def test_table_is_bounded_and_holds_no_address() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_clients=100)
    for i in range(1000):
        limiter.allow(f"192.0.2.{i % 256}-{i}", 0)
    assert len(limiter) == 100
    assert not any(b"192.0.2" in key for key in limiter._buckets)


def test_peer_host() -> None:
    assert peer_host("ipv4:127.0.0.2:5555") == "127.0.0.2"
    assert peer_host("ipv6:[::1]:5555") == "::1"
    assert peer_host("unix:/tmp/x") == "unix:/tmp/x"


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)
