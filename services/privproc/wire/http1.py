"""Where an HTTP/1.1 connection's request side is: between requests, in a head, in a body — sans-I/O.

The HTTP servers put read deadlines on the request head and on the request
body (issue 11, item 8: slowloris). The server library parses requests
itself; this module only follows the framing of the bytes a client sends
(RFC 9112 §2.2, §6.3 and §7.1), so that the connection guard can tell
when a head starts and ends and when a body ends, for any split of the
stream into reads. It never raises: framing it cannot follow (an unknown
transfer coding, a bad ``Content-Length``, an oversized line) puts it in
:attr:`Phase.BROKEN`, which the guard treats as a body that never ends, so
the deadline still closes the connection (fail closed). The server answers
such requests with 400 on its own.

Work is linear in the bytes fed: body bytes of known length are skipped by
arithmetic, and every buffer is bounded.
"""

from __future__ import annotations

import re
from enum import Enum

#: Largest request head followed (the server refuses far smaller ones first).
MAX_HEAD_BYTES = 128 << 10
#: Largest chunk-size or trailer line followed.
MAX_CHUNK_LINE_BYTES = 4096
_DIGITS = re.compile(rb"^[0-9]{1,18}$")
_HEX = re.compile(rb"^[0-9a-fA-F]{1,15}$")


class Phase(Enum):
    """Where the request side of a connection is."""

    IDLE = "idle"  # between requests: nothing of the next one received yet
    HEAD = "head"  # some of a request head received, not all
    BODY = "body"  # the head is complete, its body is not
    BROKEN = "broken"  # framing that cannot be followed: no end can be known


class _Body(Enum):
    LENGTH = 1
    CHUNK_SIZE = 2
    CHUNK_DATA = 3
    CHUNK_END = 4
    TRAILER = 5


def _framing(head: bytes) -> tuple[Phase, _Body | None, int]:
    """The body framing a complete head announces (RFC 9112 §6.3, for requests)."""
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.rstrip(b"\r").partition(b":")
        if not sep:
            continue
        key = name.strip().lower()
        if key == b"content-length":
            lengths.extend(v.strip() for v in value.split(b","))
        elif key == b"transfer-encoding":
            codings.extend(v.strip().lower() for v in value.split(b",") if v.strip())
    if codings:
        # Only a final "chunked" gives a request body an end (RFC 9112 §6.3 rule 4).
        if codings[-1] != b"chunked":
            return Phase.BROKEN, None, 0
        return Phase.BODY, _Body.CHUNK_SIZE, 0
    if lengths:
        if len(set(lengths)) != 1 or not _DIGITS.match(lengths[0]):
            return Phase.BROKEN, None, 0
        size = int(lengths[0])
        return (Phase.BODY, _Body.LENGTH, size) if size else (Phase.IDLE, None, 0)
    return Phase.IDLE, None, 0  # a request without either has no body (rule 7)


class RequestFraming:
    """Follows the request framing of one connection; see the module docstring."""

    def __init__(self) -> None:
        self.phase = Phase.IDLE
        #: Heads begun and heads completed so far (a new number: a new deadline).
        self.heads_started = 0
        self.heads_completed = 0
        self._buffer = bytearray()
        self._body: _Body | None = None
        self._remaining = 0

    def feed(self, data: bytes) -> None:
        """Take the next bytes the client sent."""
        pos = 0
        while pos < len(data) and self.phase is not Phase.BROKEN:
            if self.phase is Phase.IDLE:
                self.phase = Phase.HEAD
                self.heads_started += 1
                self._buffer.clear()
            pos = self._feed_head(data, pos) if self.phase is Phase.HEAD else self._feed_body(data, pos)

    def _feed_head(self, data: bytes, pos: int) -> int:
        if not self._buffer:
            # Empty lines before a request line are ignored (RFC 9112 §2.2).
            while pos < len(data) and data[pos] in b"\r\n":
                pos += 1
            if pos == len(data):
                return pos
        before = len(self._buffer)
        self._buffer += data[pos : pos + MAX_HEAD_BYTES + 4 - before]
        start = max(0, before - 2)
        ends = [i for i in (self._buffer.find(b"\n\r\n", start), self._buffer.find(b"\n\n", start)) if i >= 0]
        if not ends:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self.phase = Phase.BROKEN
            return len(data)
        end = min(ends)
        stop = end + (3 if self._buffer[end + 1 : end + 2] == b"\r" else 2)
        head = bytes(self._buffer[:end])
        self._buffer.clear()
        self.heads_completed += 1
        self.phase, self._body, self._remaining = _framing(head)
        return pos + stop - before

    def _feed_body(self, data: bytes, pos: int) -> int:
        if self._body is _Body.LENGTH or self._body is _Body.CHUNK_DATA:
            take = min(self._remaining, len(data) - pos)
            self._remaining -= take
            if self._remaining == 0:
                if self._body is _Body.LENGTH:
                    self.phase = Phase.IDLE
                else:
                    self._body = _Body.CHUNK_END
            return pos + take
        # A line: chunk size, the CRLF after chunk data, or a trailer field.
        newline = data.find(b"\n", pos, pos + MAX_CHUNK_LINE_BYTES + 1)
        if newline < 0:
            self._buffer += data[pos : pos + MAX_CHUNK_LINE_BYTES + 1]
            if len(self._buffer) > MAX_CHUNK_LINE_BYTES:
                self.phase = Phase.BROKEN
            return len(data)
        self._buffer += data[pos:newline]
        line = bytes(self._buffer).rstrip(b"\r")
        self._buffer.clear()
        if len(line) > MAX_CHUNK_LINE_BYTES:
            self.phase = Phase.BROKEN
        elif self._body is _Body.CHUNK_SIZE:
            size = line.split(b";", 1)[0].strip()
            if not _HEX.match(size):
                self.phase = Phase.BROKEN
            elif int(size, 16) == 0:
                self._body = _Body.TRAILER
            else:
                self._body, self._remaining = _Body.CHUNK_DATA, int(size, 16)
        elif self._body is _Body.CHUNK_END:
            if line:
                self.phase = Phase.BROKEN
            else:
                self._body = _Body.CHUNK_SIZE
        elif not line:  # the empty line that ends the trailer section
            self.phase, self._body = Phase.IDLE, None
        return newline + 1
