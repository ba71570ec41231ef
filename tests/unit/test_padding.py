"""Size buckets (privproc.wire.padding): the sets, the choice of bucket, zero padding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import LimitExceededError
from privproc.gateway.core import padded_response
from privproc.gateway.routes import problem
from privproc.wire.bhttp import Response, decode_response
from privproc.wire.padding import (
    FRAME_BUCKETS,
    MESSAGE_BUCKETS,
    MESSAGE_HEADROOM,
    bucket_for,
    pad_with_zeros,
)

KIB = 1024


def test_the_documented_sets() -> None:
    # docs/private-processing.md, "What the relay and the gateway see".
    assert FRAME_BUCKETS == (1 * KIB, 2 * KIB, 4 * KIB, 8 * KIB, 16 * KIB, 32 * KIB, 64 * KIB, 128 * KIB)
    assert MESSAGE_BUCKETS == (2 * KIB, 3 * KIB, 5 * KIB, 9 * KIB, 17 * KIB, 33 * KIB, 65 * KIB, 129 * KIB)
    assert all(m == f + MESSAGE_HEADROOM for f, m in zip(FRAME_BUCKETS, MESSAGE_BUCKETS, strict=True))


@pytest.mark.parametrize("buckets", [FRAME_BUCKETS, MESSAGE_BUCKETS])
@settings(max_examples=300, deadline=None)
@given(length=st.integers(0, 200 * KIB))
def test_bucket_is_the_smallest_that_holds_it_or_a_typed_error(buckets: tuple[int, ...], length: int) -> None:
    try:
        size = bucket_for(length, buckets)
    except LimitExceededError:
        assert length > buckets[-1]
        return
    assert size in buckets and length <= size
    assert all(smaller < length for smaller in buckets if smaller < size)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=20 * KIB))
def test_pad_with_zeros_appends_only_zeros_up_to_the_bucket(data: bytes) -> None:
    padded = pad_with_zeros(data, MESSAGE_BUCKETS)
    assert len(padded) in MESSAGE_BUCKETS and padded[: len(data)] == data
    assert not any(padded[len(data) :])
    # Bounded: no more padding than the floor, or than the message itself.
    assert len(padded) - len(data) <= max(MESSAGE_BUCKETS[0], len(data))


def test_edges() -> None:
    assert bucket_for(0, FRAME_BUCKETS) == bucket_for(KIB, FRAME_BUCKETS) == KIB
    assert bucket_for(KIB + 1, FRAME_BUCKETS) == 2 * KIB
    assert bucket_for(128 * KIB, FRAME_BUCKETS) == 128 * KIB
    with pytest.raises(LimitExceededError):
        bucket_for(128 * KIB + 1, FRAME_BUCKETS)
    with pytest.raises(LimitExceededError):
        pad_with_zeros(bytes(129 * KIB + 1), MESSAGE_BUCKETS)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError):
            bucket_for(bad, FRAME_BUCKETS)  # type: ignore[arg-type]


def test_the_gateway_pads_every_kind_of_answer_to_one_bucket() -> None:
    """A summary's records, a refusal's, an error, a 401 challenge: one size inside OHTTP."""
    records = Response(200, (("content-type", "application/octet-stream"),), bytes(1024 + 22 + 24))
    challenge = Response(
        401,
        (("www-authenticate", "PrivateToken challenge=" + "A" * 600 + ", token-key=" + "B" * 400),),
        b'{"title":"token required","type":"about:blank"}',
    )
    answers = [records, problem(503, "session lost"), problem(404, "no such session"), challenge]
    sizes = {len(padded_response(answer)) for answer in answers}
    assert sizes == {MESSAGE_BUCKETS[0]}
    assert [decode_response(padded_response(answer)) for answer in answers] == answers
    # Nothing leaves at its own length: an answer too large for every bucket becomes a padded 500.
    huge = padded_response(Response(200, content=bytes(MESSAGE_BUCKETS[-1])))
    assert len(huge) == MESSAGE_BUCKETS[0] and decode_response(huge).status == 500
