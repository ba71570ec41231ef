"""The gateway's session table and the in-session message framing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import LimitExceededError, NotFoundError, UnavailableError, WireError
from privproc.gateway.sessions import SessionTable
from privproc.predictor.protocol import Decoder, frame
from privproc.v1 import predictor_pb2


class Pool:
    def __init__(self, targets: list[str]) -> None:
        self.targets = targets

    def admitted(self) -> list[str]:
        return self.targets


def test_session_table_expires_and_is_bounded() -> None:
    now = [0.0]
    table = SessionTable(ttl_seconds=10, max_sessions=2, clock=lambda: now[0])
    a = table.create("p1", b"s1")
    assert len(a) >= 40 and table.lookup(a) == ("p1", b"s1")
    table.create("p2", b"s2")
    with pytest.raises(UnavailableError):
        table.create("p3", b"s3")
    now[0] = 9
    assert table.lookup(a) == ("p1", b"s1")  # a lookup extends its life
    now[0] = 15
    assert table.lookup(a) == ("p1", b"s1") and len(table) == 1
    table.drop(a)
    with pytest.raises(NotFoundError):
        table.lookup(a)
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
    with pytest.raises(WireError):
        Decoder(predictor_pb2.ProcessRequest).feed(b"\x00\x00\x00\x02\xff\xff")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_any_bytes(data: bytes) -> None:
    with contextlib.suppress(WireError):
        Decoder(predictor_pb2.ProcessRequest).feed(data)
