"""The connection guard's pure parts: request framing (any split of the stream) and the connection caps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.runtime.http import ConnectionLimiter, HttpLimits
from privproc.wire.http1 import MAX_HEAD_BYTES, Phase, RequestFraming

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: v\r\n\r\n"
)


def _fed(*chunks: bytes) -> RequestFraming:
    framing = RequestFraming()
    for chunk in chunks:
        framing.feed(chunk)
    return framing


def test_phases_of_complete_requests() -> None:
    for request in (GET, POST, CHUNKED, b"\r\n" + GET, GET.replace(b"\r\n", b"\n")):
        framing = _fed(request)
        assert (framing.phase, framing.heads_started, framing.heads_completed) == (Phase.IDLE, 1, 1)


def test_phases_of_partial_requests() -> None:
    assert _fed(GET[:-1]).phase is Phase.HEAD
    assert _fed(POST[:-1]).phase is Phase.BODY
    assert _fed(CHUNKED[:-2]).phase is Phase.BODY
    assert _fed(POST + GET[:3]).phase is Phase.HEAD  # pipelined: the next head began
    assert _fed(POST + GET[:3]).heads_started == 2


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",  # no final chunked: no end
        b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
    ],
)
def test_framing_it_cannot_follow_is_broken(head: bytes) -> None:
    framing = _fed(head)
    assert framing.phase is Phase.BROKEN
    framing.feed(GET)  # stays broken: the body deadline closes the connection
    assert framing.phase is Phase.BROKEN


def test_an_endless_head_is_broken_not_buffered() -> None:
    framing = _fed(b"GET / HTTP/1.1\r\nX: ")
    for _ in range(MAX_HEAD_BYTES // 4096 + 2):
        framing.feed(b"a" * 4096)
    assert framing.phase is Phase.BROKEN


_REQUESTS = st.lists(st.sampled_from([GET, POST, CHUNKED]), min_size=1, max_size=4)


@settings(max_examples=200)
@given(_REQUESTS, st.data())
def test_any_split_of_the_stream_gives_the_same_phases(requests: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    framing = _fed(*pieces)
    assert framing.phase is Phase.IDLE
    assert framing.heads_started == framing.heads_completed == len(requests)


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    framing = _fed(*chunks)
    assert framing.phase in set(Phase)
    assert framing.heads_completed <= framing.heads_started


def test_limiter_caps_per_address_and_in_total_and_forgets() -> None:
    limiter = ConnectionLimiter(max_total=3, max_per_address=2)
    a1, _ = limiter.acquire("192.0.2.1")
    a2, _ = limiter.acquire("192.0.2.1")
    assert limiter.acquire("192.0.2.1") == (None, "per_address")
    b1, _ = limiter.acquire("192.0.2.2")
    assert limiter.acquire("192.0.2.3") == (None, "global")
    assert a1 is not None and a2 is not None and b1 is not None
    assert len(limiter) == 2 and limiter.total == 3
    # Keys are keyed hashes: the address itself is nowhere in the table.
    assert b"192.0.2.1" not in a1 and a1 == a2
    for key in (a1, a2, b1):
        limiter.release(key)
    assert len(limiter) == 0 and limiter.total == 0
    limiter.release(a1)  # a stray release never goes negative
    assert limiter.total == 0


def test_an_ipv6_host_counts_as_its_64() -> None:
    limiter = ConnectionLimiter(max_total=10, max_per_address=2)
    assert limiter.acquire("2001:db8:1:2::1")[0] is not None
    assert limiter.acquire("2001:db8:1:2:ffff::9")[0] is not None
    assert limiter.acquire("2001:db8:1:2::3") == (None, "per_address")  # same /64
    assert limiter.acquire("2001:db8:1:3::1")[0] is not None  # another /64
    assert limiter.acquire("::ffff:192.0.2.1")[0] == limiter.acquire("192.0.2.1")[0]  # IPv4-mapped


def test_limits_are_checked() -> None:
    for bad in ({"head_timeout_seconds": 0}, {"max_connections": 0}, {"max_connections_per_address": 0}):
        with pytest.raises(ValueError):
            HttpLimits(**bad)
    assert 1 <= HttpLimits().total_connections() <= 4096
