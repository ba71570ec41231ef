"""The private session's wire vocabulary: its HTTP names, and the padded frames inside RA-TLS — sans-I/O.

The gateway opens a session at ``POST /v1/sessions`` and names it in the
:data:`SESSION_HEADER` of its answer; the client sends the next records to
``POST /v1/sessions/{handle}`` (:data:`SESSIONS_PREFIX`). Both ends take
these names from here.

Inside the session, the application protocol is padded, length-prefixed
protobuf messages.

A frame is::

    length (4 bytes, big-endian) || message (length bytes) || padding (zero bytes)

where ``message`` is a serialized ``ProcessRequest`` (device → CVM) or
``ProcessResponse`` (CVM → device) and the padding brings the whole frame
to the smallest of :data:`~privproc.wire.padding.FRAME_BUCKETS` that holds
it. The padding length is implied by ``length``, so a frame has exactly
one encoding; a decoder refuses non-zero padding, as RFC 9292 (Section
3.8) does for Binary HTTP.

Why here and not in TLS: TLS 1.3 record padding (RFC 8446, Section 5.4)
would do the same job one layer down, and OpenSSL has it
(``SSL_CTX_set_block_padding``), but Python's :mod:`ssl` does not expose
it; so the application data itself is padded, and the plaintext TLS
carries for one message is exactly one bucket.

The decoder is incremental (TLS delivers bytes in any split) and bounded:
a declared length whose frame would exceed the limit is refused before
anything is buffered.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from privproc.errors import LimitExceededError, WireError
from privproc.wire.padding import FRAME_BUCKETS, bucket_for

#: The gateway's answer to ``POST /v1/sessions`` names the new session in this header.
SESSION_HEADER = "privproc-session"
#: A session's later records go to this prefix followed by its handle.
SESSIONS_PREFIX = "/v1/sessions/"

#: Largest frame, padding included (bytes): the largest frame bucket.
MAX_FRAME_BYTES = FRAME_BUCKETS[-1]
_LENGTH = struct.Struct(">I")
#: Largest message a frame carries (bytes).
MAX_MESSAGE_BYTES = MAX_FRAME_BYTES - _LENGTH.size

M = TypeVar("M", bound=Message)


class ProtocolError(WireError):
    """Bytes inside the session that are not a well-formed message."""

    reason = "session_protocol"


def frame_size(message_length: int, buckets: Sequence[int] = FRAME_BUCKETS) -> int:
    """The size of the frame that carries a message of ``message_length`` bytes (a bucket)."""
    return bucket_for(_LENGTH.size + message_length, buckets)


def frame(message: Message, *, buckets: Sequence[int] = FRAME_BUCKETS) -> bytes:
    """``message`` framed and padded to its bucket (typed error if no bucket holds it).

    ``buckets``: :data:`~privproc.wire.padding.FRAME_BUCKETS` for a request or a
    whole answer, :data:`~privproc.wire.padding.STREAM_FRAME_BUCKETS` for the
    ``ProcessChunk`` frames of a streamed one. Both ends use the same set.
    """
    body = message.SerializeToString()
    if len(body) > MAX_MESSAGE_BYTES:
        raise LimitExceededError("message too large")
    return _LENGTH.pack(len(body)) + body + bytes(frame_size(len(body), buckets) - _LENGTH.size - len(body))


class Decoder(Generic[M]):
    """Collects bytes; yields each complete message of type ``kind``, its padding checked and dropped."""

    def __init__(
        self, kind: type[M], *, max_bytes: int = MAX_FRAME_BYTES, buckets: Sequence[int] = FRAME_BUCKETS
    ) -> None:
        self._kind = kind
        self._max = max_bytes
        self._buckets = tuple(buckets)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[M]:
        self._buffer += data
        messages: list[M] = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_MESSAGE_BYTES:
                raise LimitExceededError("message too large")
            size = frame_size(length, self._buckets)
            if size > self._max:
                raise LimitExceededError("message too large")
            if len(self._buffer) < size:
                break
            end = _LENGTH.size + length
            body = bytes(self._buffer[_LENGTH.size : end])
            padding = bytes(self._buffer[end:size])
            del self._buffer[:size]
            if padding.count(0) != len(padding):
                raise ProtocolError("non-zero padding")
            message = self._kind()
            try:
                message.ParseFromString(body)
            except DecodeError:
                raise ProtocolError("message does not parse") from None
            messages.append(message)
        return messages

    @property
    def pending(self) -> int:
        return len(self._buffer)


#: The request's remaining time budget, on every inner request of a private request
#: (``POST /v1/sessions`` and ``/v1/sessions/{handle}``): milliseconds, relative like gRPC's
#: ``grpc-timeout`` because the device's clock and the gateway's differ. Inside the
#: encapsulation: the relay never sees it.
TIMEOUT_HEADER = "privproc-timeout-ms"
#: At most nine digits (about 11.6 days), as gRPC's ``grpc-timeout`` allows eight.
_TIMEOUT_DIGITS = 9


class TimeoutFieldError(WireError):
    """A ``privproc-timeout-ms`` value that is not 1 to 9 ASCII digits of a positive number."""


def format_timeout(seconds: float) -> str:
    """The :data:`TIMEOUT_HEADER` value for ``seconds`` left (at least 1 ms, at most the field's bound)."""
    millis = min(max(1, round(seconds * 1000)), 10**_TIMEOUT_DIGITS - 1)
    return str(millis)


def parse_timeout(value: str) -> float:
    """Seconds left, from a :data:`TIMEOUT_HEADER` value; :class:`TimeoutFieldError` unless it is
    1 to 9 ASCII digits of a positive integer (no sign, space, unit or fraction)."""
    if not (0 < len(value) <= _TIMEOUT_DIGITS) or not all("0" <= c <= "9" for c in value):
        raise TimeoutFieldError("malformed timeout")
    millis = int(value)
    if millis == 0:
        raise TimeoutFieldError("malformed timeout")
    return millis / 1000
