"""The gateway's session table and the in-session message framing (padded to size buckets)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import LimitExceededError, NotFoundError, UnavailableError, WireError
from privproc.gateway.sessions import SessionTable
from privproc.v1 import predictor_pb2
from privproc.wire.padding import FRAME_BUCKETS
from privproc.wire.session import (
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    Decoder,
    ProtocolError,
    frame,
    frame_size,
)


class Pool:
    def __init__(self, targets: list[str]) -> None:
        self.targets = targets

    def admitted(self) -> list[str]:
        return self.targets


def test_session_table_expires_and_is_bounded() -> None:
    now = [0.0]
    table = SessionTable(handshake_seconds=5, session_seconds=10, max_per_predictor=2, clock=lambda: now[0])
    a = table.create("p1", b"s1")
    assert len(a) >= 40 and table.lookup(a) == ("p1", b"s1")
    table.create("p1", b"s2")
    with pytest.raises(UnavailableError):
        table.create("p1", b"s3")
    now[0] = 4
    assert table.begin(a) == ("p1", b"s1")  # continued within the handshake deadline
    table.end(a)
    now[0] = 9
    assert table.lookup(a) == ("p1", b"s1") and len(table) == 1  # the other missed its handshake deadline
    now[0] = 10
    with pytest.raises(NotFoundError):
        table.lookup(a)  # absolute: nothing the client sent extended it
    b = table.create("p1", b"s4")
    table.drop(b)
    with pytest.raises(NotFoundError):
        table.lookup(b)
    with pytest.raises(NotFoundError):
        table.lookup("guessed")


def test_pick_fails_closed_without_admitted_predictors() -> None:
    table = SessionTable()
    with pytest.raises(UnavailableError):
        table.pick(Pool([]))
    assert {table.pick(Pool(["a", "b"])) for _ in range(4)} == {"a", "b"}


def test_framing_in_any_split() -> None:
    request = predictor_pb2.ProcessRequest(
        task=predictor_pb2.TASK_SUMMARIZE,
        messages=[predictor_pb2.ChatMessage(sender="ann", time="2026-11-25T10:00:00Z", text="hello")],
    )
    data = frame(request) + frame(request)
    decoder = Decoder(predictor_pb2.ProcessRequest)
    got = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert got == [request, request] and decoder.pending == 0


def test_oversized_or_garbage_is_typed() -> None:
    with pytest.raises(LimitExceededError):
        Decoder(predictor_pb2.ProcessRequest, max_bytes=10).feed(b"\x00\x00\x01\x00")
    with pytest.raises(ProtocolError):
        Decoder(predictor_pb2.ProcessRequest).feed(b"\x00\x00\x00\x02\xff\xff" + bytes(1018))


# --- padding: a frame is a size bucket, its padding is zeros and bounded --------------------------

REQUESTS = st.builds(
    predictor_pb2.ProcessRequest,
    task=st.sampled_from([predictor_pb2.TASK_SUMMARIZE, predictor_pb2.TASK_SUGGEST_REWRITE]),
    draft=st.text(max_size=3000),
    style=st.text(max_size=20),
    max_output_tokens=st.integers(0, 1 << 31),
)


@settings(max_examples=200, deadline=None)
@given(REQUESTS)
def test_every_frame_is_its_smallest_bucket_and_round_trips(request: predictor_pb2.ProcessRequest) -> None:
    data = frame(request)
    body = len(request.SerializeToString())
    assert len(data) in FRAME_BUCKETS
    # The smallest bucket that holds it: padding is less than half the frame, or under the floor.
    assert len(data) == FRAME_BUCKETS[0] or len(data) < 2 * (4 + body)
    assert data[4 + body :] == bytes(len(data) - 4 - body)
    assert Decoder(predictor_pb2.ProcessRequest).feed(data) == [request]


def test_drafts_of_different_lengths_give_frames_of_one_size() -> None:
    sizes = {
        len(frame(predictor_pb2.ProcessRequest(task=predictor_pb2.TASK_SUGGEST_REWRITE, draft="x" * n)))
        for n in (0, 1, 50, 300, 900)
    }
    assert sizes == {1024}
    answers = [
        predictor_pb2.ProcessResponse(text="A short answer.", model_id="m"),
        predictor_pb2.ProcessResponse(refusal_reason="self_harm", model_id="m"),
        predictor_pb2.ProcessResponse(),
    ]
    assert {len(frame(answer)) for answer in answers} == {1024}


def test_the_largest_frame_and_beyond() -> None:
    biggest = predictor_pb2.ProcessRequest(draft="x" * (MAX_MESSAGE_BYTES - 4))
    assert len(biggest.SerializeToString()) == MAX_MESSAGE_BYTES
    assert len(frame(biggest)) == MAX_FRAME_BYTES == FRAME_BUCKETS[-1]
    with pytest.raises(LimitExceededError):
        frame(predictor_pb2.ProcessRequest(draft="x" * (MAX_MESSAGE_BYTES - 3)))
    # A declared length past the largest bucket is refused from its four bytes, before buffering.
    decoder = Decoder(predictor_pb2.ProcessRequest)
    with pytest.raises(LimitExceededError):
        decoder.feed((MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"))
    with pytest.raises(LimitExceededError):
        Decoder(predictor_pb2.ProcessRequest, max_bytes=2048).feed((2045).to_bytes(4, "big"))


def test_padding_is_awaited_then_dropped() -> None:
    request = predictor_pb2.ProcessRequest(draft="hello")
    data = frame(request)
    decoder = Decoder(predictor_pb2.ProcessRequest)
    assert decoder.feed(data[:-1]) == [] and decoder.pending == len(data) - 1
    assert decoder.feed(data[-1:]) == [request] and decoder.pending == 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_non_zero_padding_is_refused(data: st.DataObject) -> None:
    framed = bytearray(frame(predictor_pb2.ProcessRequest(draft=data.draw(st.text(max_size=500)))))
    body_end = 4 + int.from_bytes(framed[:4], "big")
    position = data.draw(st.integers(body_end, len(framed) - 1))
    framed[position] = data.draw(st.integers(1, 255))
    with pytest.raises(ProtocolError):
        Decoder(predictor_pb2.ProcessRequest).feed(bytes(framed))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_any_bytes(data: bytes) -> None:
    with contextlib.suppress(WireError):
        Decoder(predictor_pb2.ProcessRequest).feed(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, MAX_MESSAGE_BYTES), st.binary(max_size=64), st.integers(0, 255))
def test_any_frame_header_gives_messages_or_a_typed_error(length: int, body: bytes, fill: int) -> None:
    """Any declared length with any body and padding bytes: messages, a wait, or a WireError."""
    size = frame_size(length)
    data = length.to_bytes(4, "big") + (body + bytes([fill]) * size)[: size - 4]
    decoder = Decoder(predictor_pb2.ProcessResponse)
    try:
        messages = decoder.feed(data)
    except WireError:
        return
    # Accepted only whole, and only with zero padding.
    assert decoder.pending == 0 and len(messages) == 1
    assert not any(data[4 + length :])
