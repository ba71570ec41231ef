"""The application protocol inside RA-TLS: length-prefixed protobuf messages — sans-I/O.

Each message is a 4-byte big-endian length followed by a serialized
``ProcessRequest`` (device → CVM) or ``ProcessResponse`` (CVM → device).
The decoder is incremental (TLS delivers bytes in any split) and bounded: a
declared length above the limit is refused before anything is buffered.
"""

from __future__ import annotations

import struct
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from privproc.errors import LimitExceededError, WireError

MAX_MESSAGE_BYTES = 256 << 10
_LENGTH = struct.Struct(">I")

M = TypeVar("M", bound=Message)


class ProtocolError(WireError):
    """Bytes inside the session that are not a well-formed message."""

    reason = "session_protocol"


def frame(message: Message) -> bytes:
    body = message.SerializeToString()
    if len(body) > MAX_MESSAGE_BYTES:
        raise LimitExceededError("message too large")
    return _LENGTH.pack(len(body)) + body


class Decoder(Generic[M]):
    """Collects bytes; yields each complete message of type ``kind``."""

    def __init__(self, kind: type[M], *, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._kind = kind
        self._max = max_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[M]:
        self._buffer += data
        messages: list[M] = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > self._max:
                raise LimitExceededError("message too large")
            if len(self._buffer) < _LENGTH.size + length:
                break
            body = bytes(self._buffer[_LENGTH.size : _LENGTH.size + length])
            del self._buffer[: _LENGTH.size + length]
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
