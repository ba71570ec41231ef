"""Log records on the local socket between a process and its log sidecar — sans-I/O.

A record is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON, ``{"event": NAME, "fields": {FIELD: VALUE, ...}}``, at most
:data:`MAX_RECORD_BYTES`. :func:`encode` writes one; :class:`Decoder` splits
a byte stream into record bodies without ever holding more than one record:
a length over the bound is skipped (its bytes discarded as they arrive,
never buffered) and reported as :class:`Skipped`, and a length over
:data:`MAX_SKIP_BYTES` ends the stream (the peer is not speaking this
format). :func:`parse` reads a body strictly: no NaN or Infinity, no
duplicate keys, exactly the two keys, field values only strings, integers
and booleans.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from privproc.errors import WireError

#: The largest record body: events are a name and a few small fields.
MAX_RECORD_BYTES = 4096
#: The largest length a reader skips over; beyond, it stops reading the stream.
MAX_SKIP_BYTES = 1 << 20
_HEADER_BYTES = 4

#: A field value a record may carry.
Scalar = str | int | bool


class LogRecordError(WireError):
    """Bytes that are not a well-formed log record."""


def encode(name: str, fields: Mapping[str, object]) -> bytes:
    """The framed record for event ``name`` with ``fields`` (raises if over the bound)."""
    body = json.dumps(
        {"event": name, "fields": dict(fields)}, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8", errors="strict")
    if len(body) > MAX_RECORD_BYTES:
        raise LogRecordError("record over the size bound")
    return len(body).to_bytes(_HEADER_BYTES, "big") + body


@dataclass(frozen=True)
class Skipped:
    """A record whose length was over :data:`MAX_RECORD_BYTES`: its bytes are discarded."""

    length: int


class Decoder:
    """Splits a stream into record bodies; each byte is looked at once, at most one record held.

    :meth:`feed` returns, in order, each complete body (``bytes``) and each over-long record
    (:class:`Skipped`, reported as soon as its length is read). After a length over
    :data:`MAX_SKIP_BYTES` (also reported as :class:`Skipped`) :attr:`broken` is set and the
    rest of the stream is ignored.
    """

    def __init__(
        self, max_record_bytes: int = MAX_RECORD_BYTES, max_skip_bytes: int = MAX_SKIP_BYTES
    ) -> None:
        self.max_record_bytes = max_record_bytes
        self.max_skip_bytes = max_skip_bytes
        self.broken = False
        self._pending = bytearray()
        #: Length of the body being read; None while reading a header.
        self._body_length: int | None = None
        self._skip = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete header or body (at most a header plus one record)."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[bytes | Skipped]:
        out: list[bytes | Skipped] = []
        view = memoryview(data)
        at, end = 0, len(view)
        while at < end and not self.broken:
            if self._skip:
                step = min(self._skip, end - at)
                self._skip -= step
                at += step
            elif self._body_length is None:
                step = min(_HEADER_BYTES - len(self._pending), end - at)
                self._pending += view[at : at + step]
                at += step
                if len(self._pending) < _HEADER_BYTES:
                    break
                length = int.from_bytes(self._pending, "big")
                self._pending.clear()
                if length > self.max_skip_bytes:
                    self.broken = True
                    out.append(Skipped(length))
                elif length > self.max_record_bytes:
                    self._skip = length
                    out.append(Skipped(length))
                elif length == 0:
                    out.append(b"")
                else:
                    self._body_length = length
            else:
                step = min(self._body_length - len(self._pending), end - at)
                self._pending += view[at : at + step]
                at += step
                if len(self._pending) == self._body_length:
                    out.append(bytes(self._pending))
                    self._pending.clear()
                    self._body_length = None
        return out


def _refuse_constant(name: str) -> object:
    raise LogRecordError("NaN and Infinity are not JSON")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise LogRecordError("duplicate key")
    return result


def parse(body: bytes) -> tuple[str, dict[str, Scalar]]:
    """The event name and fields of one record body; :class:`LogRecordError` if it is not one."""
    if len(body) > MAX_RECORD_BYTES:
        raise LogRecordError("record over the size bound")
    try:
        text = body.decode("utf-8", errors="strict")
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LogRecordError("not UTF-8 JSON") from None
    if not isinstance(document, dict) or document.keys() != {"event", "fields"}:
        raise LogRecordError("not a record object")
    name, fields = document["event"], document["fields"]
    if not isinstance(name, str) or not isinstance(fields, dict):
        raise LogRecordError("not a record object")
    for value in fields.values():
        if not isinstance(value, str | int | bool):
            raise LogRecordError("a field value is not a string, integer or boolean")
    return name, fields
