"""Binary HTTP messages (RFC 9292), sans I/O.

A message is a framing indicator, control data (method and target, or a
status code), a header section, content, a trailer section and optional
zero padding. The encoders write the known-length form (Section 3.1) or,
with ``indeterminate=True``, the indeterminate-length form (Section 3.2);
the decoders read both, including truncated messages and padding
(Section 3.8).

For messages that are written or read while their content is still being
produced (a streamed answer inside chunked OHTTP), the indeterminate-length
form is also written piece by piece (:func:`encode_request_head`,
:func:`encode_response_head`, :func:`encode_content_chunk`,
:func:`encode_end`), and :class:`MessageDecoder` reads either form
incrementally: bytes in whatever pieces they arrive, events out (the head,
each piece of content as soon as it is in, the end with the trailers), in
the h11 style. It applies the same rules and limits as the whole-message
decoders, and buffers no more than one incomplete part (control data or a
field section, each bounded by :class:`Limits`); content is passed on as it
arrives, never held.

Parsing is strict: anything RFC 9292 or the HTTP/2 field rules it refers to
call invalid is rejected, and a few things they allow are rejected too
because nothing here needs them and they widen the attack surface (see
:func:`decode_request`). Every length prefix is checked against the
:class:`Limits` and against the input still unread before anything is
sliced, so a short message cannot make the parser allocate on the say-so
of a length.

Errors never carry message bytes: field values and targets may be user
data, and exception text ends up in logs.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass

from privproc.errors import LimitExceededError, TruncatedError, WireError
from privproc.wire import varint
from privproc.wire.varint import BytesLike

__all__ = [
    "DEFAULT_LIMITS",
    "MEDIA_TYPE",
    "NEED_DATA",
    "BhttpError",
    "BhttpLimitError",
    "BhttpTruncatedError",
    "ContentChunk",
    "EndOfMessage",
    "Event",
    "Fields",
    "InformationalResponse",
    "Limits",
    "MessageDecoder",
    "NeedData",
    "Request",
    "RequestHead",
    "Response",
    "ResponseHead",
    "decode_request",
    "decode_response",
    "encode_content_chunk",
    "encode_end",
    "encode_request",
    "encode_request_head",
    "encode_response",
    "encode_response_head",
]

MEDIA_TYPE = "message/bhttp"

#: (name, value) pairs in order; names are lowercase.
Fields = tuple[tuple[str, str], ...]


class BhttpError(WireError):
    """Bytes that are not a valid RFC 9292 message."""


class BhttpTruncatedError(BhttpError, TruncatedError):
    """The message ended inside a part that cannot be truncated."""


class BhttpLimitError(BhttpError, LimitExceededError):
    """The message is larger than a :class:`Limits` bound allows."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decoder enforces; all are byte or item counts."""

    max_message_bytes: int = 1 << 20
    max_fields: int = 128  # per field section
    max_field_section_bytes: int = 64 << 10
    max_content_bytes: int = 1 << 20
    max_informational: int = 8

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("limits must be non-negative integers")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request: control data, header fields, content, trailer fields."""

    method: str
    scheme: str
    authority: str
    path: str
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()

    def header(self, name: str) -> str | None:
        """The first value of header field ``name`` (any case), or None."""
        return _first(self.headers, name)


@dataclass(frozen=True, slots=True)
class InformationalResponse:
    """An interim (1xx) response that precedes the final one."""

    status: int  # 100..199
    headers: Fields = ()


@dataclass(frozen=True, slots=True)
class Response:
    """A final HTTP response, with the informational responses before it."""

    status: int  # 200..599
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()
    informational: tuple[InformationalResponse, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header field ``name`` (any case), or None."""
        return _first(self.headers, name)


# --- framing (Section 3.3) and status ranges (Section 3.5) ------------------

_KNOWN_REQUEST = 0
_KNOWN_RESPONSE = 1
_INDETERMINATE_REQUEST = 2
_INDETERMINATE_RESPONSE = 3

_INFORMATIONAL = range(100, 200)
_FINAL = range(200, 600)


# --- character classes --------------------------------------------------------
# Each is the set of bytes allowed; a string is valid when deleting those
# bytes leaves nothing (bytes.translate runs in C, in linear time).

_DIGIT = string.digits.encode()
_LOWER = string.ascii_lowercase.encode()
_ALPHA = string.ascii_letters.encode()
# RFC 9110, Section 5.6.2.
_TCHAR = b"!#$%&'*+-.^_`|~" + _DIGIT + _ALPHA
# Field names are tokens; HTTP/2 (RFC 9113, Section 8.2.1) also bans uppercase.
_NAME_CHARS = b"!#$%&'*+-.^_`|~" + _DIGIT + _LOWER
# Visible ASCII, SP and HTAB. Stricter than RFC 9113 (which allows obs-text
# and most controls): values must decode as ASCII with nothing a
# downstream HTTP/1.1 parser or a log line could misread.
_VALUE_CHARS = bytes(range(0x20, 0x7F)) + b"\t"
# RFC 3986, Section 3.1.
_SCHEME_CHARS = _ALPHA + _DIGIT + b"+-."
# RFC 3986 host and port characters: unreserved, pct-encoded, sub-delims,
# ":" and the IP-literal brackets. No "@": RFC 9113 forbids userinfo.
_AUTHORITY_CHARS = _ALPHA + _DIGIT + b"-._~%!$&'()*+,;=:[]"
# Visible ASCII: no space, control character or DEL.
_PATH_CHARS = bytes(range(0x21, 0x7F))

_WHITESPACE = (0x20, 0x09)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _only(data: bytes, allowed: bytes) -> bool:
    return not data.translate(None, allowed)


def _is_token(data: bytes) -> bool:
    return bool(data) and _only(data, _TCHAR)


def _is_field_name(data: bytes) -> bool:
    return bool(data) and _only(data, _NAME_CHARS)


def _is_field_value(data: bytes) -> bool:
    if not data:
        return True
    return data[0] not in _WHITESPACE and data[-1] not in _WHITESPACE and _only(data, _VALUE_CHARS)


def _is_scheme(data: bytes) -> bool:
    return data[:1].isalpha() and _only(data, _SCHEME_CHARS)


def _is_authority(data: bytes) -> bool:
    # May be empty: RFC 9292 encodes an absent :authority as zero length.
    return _only(data, _AUTHORITY_CHARS)


def _is_path(data: bytes) -> bool:
    # An origin-form path or "*". Anything else could turn into another
    # authority when scheme, authority and path are joined into a URI.
    return (data == b"*" or data[:1] == b"/") and _only(data, _PATH_CHARS)


def _first(fields: Fields, name: str) -> str | None:
    # ASCII-only case folding: str.lower() maps e.g. KELVIN SIGN to "k".
    key = name.translate(_ASCII_LOWER)
    for field_name, value in fields:
        if field_name.translate(_ASCII_LOWER) == key:
            return value
    return None


# --- encoding -----------------------------------------------------------------


def encode_request(
    request: Request,
    *,
    truncate: bool = True,
    padding: int = 0,
    indeterminate: bool = False,
    chunk_size: int | None = None,
) -> bytes:
    """Encode ``request`` as a known-length message (framing indicator 0).

    Trailing empty sections are left out (RFC 9292, Section 3.8) unless
    ``truncate`` is false; ``padding`` zero bytes are appended. With
    ``indeterminate``, the indeterminate-length form (framing indicator 2,
    Section 3.2) is written instead, its content in chunks of at most
    ``chunk_size`` bytes (one chunk if ``None``). Raises
    :class:`ValueError` if a field of ``request`` is not valid.
    """
    control = _request_control(request)
    if indeterminate:
        body = _indeterminate_body(request.headers, request.content, request.trailers, truncate, chunk_size)
        return varint.encode(_INDETERMINATE_REQUEST) + control + body + _padding(padding)
    body = _known_length_body(request.headers, request.content, request.trailers, truncate)
    return varint.encode(_KNOWN_REQUEST) + control + body + _padding(padding)


def encode_response(
    response: Response,
    *,
    truncate: bool = True,
    padding: int = 0,
    indeterminate: bool = False,
    chunk_size: int | None = None,
) -> bytes:
    """Encode ``response`` as a known-length message (framing indicator 1).

    Informational responses come first, in order. Trailing empty sections
    are left out unless ``truncate`` is false; ``padding`` zero bytes are
    appended. ``indeterminate`` and ``chunk_size`` are as for
    :func:`encode_request` (framing indicator 3). Raises
    :class:`ValueError` if a field of ``response`` is not valid.
    """
    if indeterminate:
        head = _response_control(response.status, response.informational)
        body = _indeterminate_body(
            response.headers, response.content, response.trailers, truncate, chunk_size
        )
        return head + body + _padding(padding)
    parts = [varint.encode(_KNOWN_RESPONSE)]
    for interim in response.informational:
        parts.append(_status(interim.status, _INFORMATIONAL))
        parts.append(_known_length_fields(interim.headers))
    parts.append(_status(response.status, _FINAL))
    parts.append(_known_length_body(response.headers, response.content, response.trailers, truncate))
    parts.append(_padding(padding))
    return b"".join(parts)


# --- indeterminate length, piece by piece (Section 3.2) ---------------------------
#
# A streamed message is encode_*_head(), then encode_content_chunk() for each
# piece of content as it is produced, then encode_end(): the concatenation
# is one indeterminate-length message.


def encode_request_head(request: Request) -> bytes:
    """Framing indicator 2, control data and the header section of ``request``.

    Content and trailers follow through :func:`encode_content_chunk` and
    :func:`encode_end`, so ``request`` must have none of its own (a
    :class:`ValueError` otherwise, rather than silently dropping them).
    """
    _no_body(request.content, request.trailers)
    return (
        varint.encode(_INDETERMINATE_REQUEST)
        + _request_control(request)
        + _indeterminate_fields(request.headers)
    )


def encode_response_head(response: Response) -> bytes:
    """Framing indicator 3, the informational responses, the status and header section.

    As for :func:`encode_request_head`, ``response`` carries no content or trailers.
    """
    _no_body(response.content, response.trailers)
    return _response_control(response.status, response.informational) + _indeterminate_fields(
        response.headers
    )


def encode_content_chunk(data: bytes) -> bytes:
    """One content chunk of an indeterminate-length message.

    Empty ``data`` gives no bytes at all: a zero length would end the content.
    """
    data = _bytes(data)
    return _length_prefixed(data) if data else b""


def encode_end(trailers: Fields = (), *, padding: int = 0) -> bytes:
    """The end of an indeterminate-length message: content terminator, trailer section, padding."""
    return b"\x00" + _indeterminate_fields(trailers) + _padding(padding)


def _no_body(content: bytes, trailers: Fields) -> None:
    if content or trailers:
        raise ValueError("a message head carries no content or trailers; send them as chunks")


def _request_control(request: Request) -> bytes:
    return b"".join(
        _length_prefixed(_ascii(value, valid, message))
        for value, valid, message in (
            (request.method, _is_token, "invalid method"),
            (request.scheme, _is_scheme, "invalid scheme"),
            (request.authority, _is_authority, "invalid authority"),
            (request.path, _is_path, "invalid path"),
        )
    )


def _response_control(status: int, informational: tuple[InformationalResponse, ...]) -> bytes:
    # Framing indicator 3, the informational responses, the final status.
    parts = [varint.encode(_INDETERMINATE_RESPONSE)]
    for interim in informational:
        parts.append(_status(interim.status, _INFORMATIONAL))
        parts.append(_indeterminate_fields(interim.headers))
    parts.append(_status(status, _FINAL))
    return b"".join(parts)


def _indeterminate_body(
    headers: Fields, content: bytes, trailers: Fields, truncate: bool, chunk_size: int | None
) -> bytes:
    content = _bytes(content)
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError("chunk_size must be a positive integer")
    step = chunk_size or max(len(content), 1)
    chunks = b"".join(encode_content_chunk(content[i : i + step]) for i in range(0, len(content), step))
    parts = [_indeterminate_fields(headers), chunks + b"\x00", _indeterminate_fields(trailers)]
    keep = len(parts)
    if truncate:
        # Section 3.8 applies to both forms: empty trailing parts may go.
        empty = (not headers, not content, not trailers)
        while keep and empty[keep - 1]:
            keep -= 1
    return b"".join(parts[:keep])


def _indeterminate_fields(fields: Iterable[tuple[str, str]]) -> bytes:
    return _field_lines(fields) + b"\x00"


def _known_length_body(headers: Fields, content: bytes, trailers: Fields, truncate: bool) -> bytes:
    content = _bytes(content)
    parts = [
        _known_length_fields(headers),
        _length_prefixed(content),
        _known_length_fields(trailers),
    ]
    keep = len(parts)
    if truncate:
        # Section 3.8: empty trailing parts may go; a non-empty one keeps
        # every part before it, empty or not.
        empty = (not headers, not content, not trailers)
        while keep and empty[keep - 1]:
            keep -= 1
    return b"".join(parts[:keep])


def _known_length_fields(fields: Iterable[tuple[str, str]]) -> bytes:
    return _length_prefixed(_field_lines(fields))


def _field_lines(fields: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(
        _length_prefixed(_ascii(name, _is_field_name, "invalid field name"))
        + _length_prefixed(_ascii(value, _is_field_value, "invalid field value"))
        for name, value in fields
    )


def _length_prefixed(data: bytes) -> bytes:
    return varint.encode(len(data)) + data


def _status(status: int, allowed: range) -> bytes:
    if not isinstance(status, int) or isinstance(status, bool) or status not in allowed:
        raise ValueError("invalid status code")
    return varint.encode(status)


def _ascii(value: str, valid: Callable[[bytes], bool], message: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(message)
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(message) from None
    if not valid(raw):
        raise ValueError(message)
    return raw


def _bytes(content: bytes) -> bytes:
    if not isinstance(content, bytes | bytearray | memoryview):
        raise TypeError("content must be bytes")
    return bytes(content)


def _padding(length: int) -> bytes:
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError("invalid padding length")
    return bytes(length)


# --- decoding -----------------------------------------------------------------


class _Reader:
    """A cursor over a message, or over one known-length field section.

    Running out of bytes means truncation at the top level, but a field line
    that runs past the end of its section is malformed: more input would
    not fix it.
    """

    __slots__ = ("_buf", "_in_section", "pos")

    def __init__(self, buf: memoryview, *, in_section: bool = False) -> None:
        self._buf = buf
        self._in_section = in_section
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos == len(self._buf)

    def varint(self) -> int:
        try:
            value, self.pos = varint.decode(self._buf, self.pos)
        except TruncatedError:
            raise self._short() from None
        return value

    def take(self, length: int) -> bytes:
        self._need(length)
        start, self.pos = self.pos, self.pos + length
        return self._buf[start : self.pos].tobytes()

    def section(self, length: int) -> _Reader:
        self._need(length)
        start, self.pos = self.pos, self.pos + length
        return _Reader(self._buf[start : self.pos], in_section=True)

    def expect_padding(self) -> None:
        rest = self._buf[self.pos :].tobytes()
        if rest.count(0) != len(rest):
            raise BhttpError("non-zero padding")
        self.pos = len(self._buf)

    def _need(self, length: int) -> None:
        if length > len(self._buf) - self.pos:
            raise self._short()

    def _short(self) -> BhttpError:
        if self._in_section:
            return BhttpError("field line overruns field section")
        return BhttpTruncatedError("message truncated")


def decode_request(data: BytesLike, limits: Limits = DEFAULT_LIMITS) -> Request:
    """Decode a known- or indeterminate-length request (framing 0 or 2).

    Accepts truncation and zero padding as RFC 9292, Section 3.8 allows.
    Raises a :class:`~privproc.errors.WireError` subclass for any input that
    is not a valid request within ``limits``. Beyond RFC 9292, it also
    rejects: pseudo-fields and field values outside visible ASCII, SP and
    HTAB; a path that is neither "*" nor starts with "/"; userinfo in the
    authority.
    """
    reader = _open(data, limits)
    framing = reader.varint()
    if framing not in (_KNOWN_REQUEST, _INDETERMINATE_REQUEST):
        raise BhttpError(_framing_error(framing, "not a request"))
    known = framing == _KNOWN_REQUEST
    method = _control(reader, _is_token, "invalid method")
    scheme = _control(reader, _is_scheme, "invalid scheme")
    authority = _control(reader, _is_authority, "invalid authority")
    path = _control(reader, _is_path, "invalid path")
    headers, content, trailers = _body(reader, known, limits)
    return Request(method, scheme, authority, path, headers, content, trailers)


def decode_response(data: BytesLike, limits: Limits = DEFAULT_LIMITS) -> Response:
    """Decode a known- or indeterminate-length response (framing 1 or 3).

    Informational (1xx) responses before the final status are returned in
    :attr:`Response.informational`. Raises a
    :class:`~privproc.errors.WireError` subclass for any input that is not
    a valid response within ``limits``.
    """
    reader = _open(data, limits)
    framing = reader.varint()
    if framing not in (_KNOWN_RESPONSE, _INDETERMINATE_RESPONSE):
        raise BhttpError(_framing_error(framing, "not a response"))
    known = framing == _KNOWN_RESPONSE
    informational: list[InformationalResponse] = []
    while True:
        status = reader.varint()
        if status in _FINAL:
            break
        if status not in _INFORMATIONAL:
            raise BhttpError("invalid status code")
        if len(informational) >= limits.max_informational:
            raise BhttpLimitError("too many informational responses")
        # An informational header section is never truncated: the final
        # control data still has to follow it.
        informational.append(InformationalResponse(status, _field_section(reader, known, limits)))
    headers, content, trailers = _body(reader, known, limits)
    return Response(status, headers, content, trailers, tuple(informational))


def _framing_error(framing: int, wrong_kind: str) -> str:
    # Section 3.3: 0..3 are the only indicators; any other is invalid outright.
    return wrong_kind if framing <= _INDETERMINATE_RESPONSE else "invalid framing indicator"


def _open(data: BytesLike, limits: Limits) -> _Reader:
    view = memoryview(data)
    if view.nbytes > limits.max_message_bytes:
        raise BhttpLimitError("message exceeds limit")
    # Copy anything mutable so the caller cannot change it under the parser.
    return _Reader(memoryview(data if isinstance(data, bytes) else view.tobytes()))


def _control(reader: _Reader, valid: Callable[[bytes], bool], message: str) -> str:
    raw = reader.take(reader.varint())
    if not valid(raw):
        raise BhttpError(message)
    return raw.decode("ascii")


def _body(reader: _Reader, known: bool, limits: Limits) -> tuple[Fields, bytes, Fields]:
    # Section 3.8: the message may end before any of these parts, which are
    # then empty; whatever follows the trailers must be zero padding.
    headers: Fields = ()
    content = b""
    trailers: Fields = ()
    if not reader.at_end():
        headers = _field_section(reader, known, limits)
    if not reader.at_end():
        content = _content(reader, known, limits)
    if not reader.at_end():
        trailers = _field_section(reader, known, limits)
    reader.expect_padding()
    return headers, content, trailers


def _field_section(reader: _Reader, known: bool, limits: Limits) -> Fields:
    fields: list[tuple[str, str]] = []
    if known:
        length = reader.varint()
        if length > limits.max_field_section_bytes:
            raise BhttpLimitError("field section exceeds limit")
        return _known_field_lines(reader.section(length), limits)
    # Indeterminate length: field lines up to a zero name length.
    start = reader.pos
    budget_end = start + limits.max_field_section_bytes
    while (name_length := reader.varint()) != 0:
        _count(fields, limits)
        fields.append(_field_line(reader, name_length, budget=budget_end - reader.pos))
        if reader.pos > budget_end:
            raise BhttpLimitError("field section exceeds limit")
    return tuple(fields)


def _known_field_lines(section: _Reader, limits: Limits) -> Fields:
    # The section is bounded by the limit already: its end is the budget.
    fields: list[tuple[str, str]] = []
    while not section.at_end():
        name_length = section.varint()
        if name_length == 0:
            raise BhttpError("empty field name")
        _count(fields, limits)
        fields.append(_field_line(section, name_length, budget=None))
    return tuple(fields)


def _count(fields: list[tuple[str, str]], limits: Limits) -> None:
    if len(fields) >= limits.max_fields:
        raise BhttpLimitError("too many fields")


def _field_line(reader: _Reader, name_length: int, *, budget: int | None) -> tuple[str, str]:
    # budget: bytes the section may still hold after the name length, when
    # the reader's own end does not already bound it.
    if budget is not None and name_length > budget:
        raise BhttpLimitError("field section exceeds limit")
    name = reader.take(name_length)
    if not _is_field_name(name):
        raise BhttpError("invalid field name")
    value_length = reader.varint()
    if budget is not None and value_length > budget - name_length:
        raise BhttpLimitError("field section exceeds limit")
    value = reader.take(value_length)
    if not _is_field_value(value):
        raise BhttpError("invalid field value")
    return name.decode("ascii"), value.decode("ascii")


def _content(reader: _Reader, known: bool, limits: Limits) -> bytes:
    if known:
        length = reader.varint()
        if length > limits.max_content_bytes:
            raise BhttpLimitError("content exceeds limit")
        return reader.take(length)
    # Indeterminate length: non-empty chunks up to a zero length.
    chunks: list[bytes] = []
    total = 0
    while (length := reader.varint()) != 0:
        total += length
        if total > limits.max_content_bytes:
            raise BhttpLimitError("content exceeds limit")
        chunks.append(reader.take(length))
    return b"".join(chunks)


# --- incremental decoding -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request's control data and header section: what comes before its content."""

    method: str
    scheme: str
    authority: str
    path: str
    headers: Fields = ()


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A final response's status and header section (informational ones come before it)."""

    status: int
    headers: Fields = ()


@dataclass(frozen=True, slots=True)
class ContentChunk:
    """Some bytes of content, as they arrived; never empty, boundaries carry no meaning."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The message is complete and valid (padding included); ``trailers`` are its trailer fields."""

    trailers: Fields = ()


class NeedData:
    """No event until more input (or the end of input) arrives."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: The one :class:`NeedData` value.
NEED_DATA = NeedData()

#: What :meth:`MessageDecoder.next_event` returns.
Event = RequestHead | ResponseHead | InformationalResponse | ContentChunk | EndOfMessage | NeedData

_Parse = Generator[Event, None, None]


class MessageDecoder:
    """Reads one request or response incrementally (h11 style), either framing.

    Hand it bytes with :meth:`receive_data` in any pieces, say
    :meth:`receive_eof` when the input ends, and call :meth:`next_event`
    until it returns :data:`NEED_DATA` (or the :class:`EndOfMessage`, which
    comes only at the end of input, once the padding is checked). A request
    gives a :class:`RequestHead`, :class:`ContentChunk` events, then the
    :class:`EndOfMessage`; a response gives :class:`InformationalResponse`
    events first and a :class:`ResponseHead` in place of the request head.

    An invalid message raises a :class:`BhttpError` subclass at the first
    event that reveals it (truncation only at the end of input), and every
    later call raises it again: RFC 9292 (Section 4) says an invalid
    message must not be processed further, and content already handed out
    before the error was found must be treated as such by the caller.
    """

    def __init__(self, *, response: bool, limits: Limits = DEFAULT_LIMITS) -> None:
        self._response = response
        self._limits = limits
        self._buf = bytearray()
        self._eof = False
        self._received = 0
        self._error: BhttpError | None = None
        self._end: EndOfMessage | None = None
        self._parser = self._parse_response() if response else self._parse_request()

    def receive_data(self, data: BytesLike) -> None:
        """Queue the next bytes of the message."""
        self._check()
        if self._eof:
            raise ValueError("data after the end of input")
        size = memoryview(data).nbytes
        self._received += size
        if self._received > self._limits.max_message_bytes:
            self._error = BhttpLimitError("message exceeds limit")
            raise self._error
        self._buf += data

    def receive_eof(self) -> None:
        """The input has ended: a message cut short now raises at :meth:`next_event`."""
        self._eof = True

    def next_event(self) -> Event:
        """The next event, or :data:`NEED_DATA`; raises a :class:`BhttpError` for invalid input."""
        self._check()
        if self._end is not None:
            return self._end
        try:
            event = next(self._parser)
        except BhttpError as err:
            self._error = err
            raise
        except StopIteration:  # pragma: no cover - the parsers end by yielding EndOfMessage forever
            raise AssertionError("parser stopped") from None
        if isinstance(event, EndOfMessage):
            self._end = event
        return event

    def events(self) -> list[Event]:
        """Every event available now, without the trailing :data:`NEED_DATA`."""
        out: list[Event] = []
        while not isinstance(event := self.next_event(), NeedData):
            out.append(event)
            if isinstance(event, EndOfMessage):
                break
        return out

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    # -- reading primitives: each yields NEED_DATA until its bytes are in --

    def _wait(self, size: int) -> Generator[Event, None, None]:
        while len(self._buf) < size:
            if self._eof:
                raise BhttpTruncatedError("message truncated")
            yield NEED_DATA

    def _take(self, size: int) -> Generator[Event, None, bytes]:
        yield from self._wait(size)
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def _varint(self) -> Generator[Event, None, tuple[int, int]]:
        """``(value, encoded size)``."""
        yield from self._wait(1)
        size = 1 << (self._buf[0] >> 6)
        value, _ = varint.decode((yield from self._take(size)))
        return value, size

    def _at_end(self) -> Generator[Event, None, bool]:
        """Whether the input ended here (a truncation point of Section 3.8)."""
        while not self._buf:
            if self._eof:
                return True
            yield NEED_DATA
        return False

    # -- message structure --

    def _parse_request(self) -> _Parse:
        framing, _ = yield from self._varint()
        if framing not in (_KNOWN_REQUEST, _INDETERMINATE_REQUEST):
            raise BhttpError(_framing_error(framing, "not a request"))
        known = framing == _KNOWN_REQUEST
        method = yield from self._control(_is_token, "invalid method")
        scheme = yield from self._control(_is_scheme, "invalid scheme")
        authority = yield from self._control(_is_authority, "invalid authority")
        path = yield from self._control(_is_path, "invalid path")
        headers = () if (yield from self._at_end()) else (yield from self._fields(known))
        yield RequestHead(method, scheme, authority, path, headers)
        yield from self._rest(known)

    def _parse_response(self) -> _Parse:
        framing, _ = yield from self._varint()
        if framing not in (_KNOWN_RESPONSE, _INDETERMINATE_RESPONSE):
            raise BhttpError(_framing_error(framing, "not a response"))
        known = framing == _KNOWN_RESPONSE
        informational = 0
        while True:
            status, _ = yield from self._varint()
            if status in _FINAL:
                break
            if status not in _INFORMATIONAL:
                raise BhttpError("invalid status code")
            if informational >= self._limits.max_informational:
                raise BhttpLimitError("too many informational responses")
            informational += 1
            yield InformationalResponse(status, (yield from self._fields(known)))
        headers = () if (yield from self._at_end()) else (yield from self._fields(known))
        yield ResponseHead(status, headers)
        yield from self._rest(known)

    def _control(self, valid: Callable[[bytes], bool], message: str) -> Generator[Event, None, str]:
        length, _ = yield from self._varint()
        # Control data has no limit of its own; the message limit bounds it.
        if length > self._limits.max_message_bytes:
            raise BhttpLimitError("message exceeds limit")
        raw = yield from self._take(length)
        if not valid(raw):
            raise BhttpError(message)
        return raw.decode("ascii")

    def _rest(self, known: bool) -> _Parse:
        trailers: Fields = ()
        if not (yield from self._at_end()):
            yield from self._content(known)
            if not (yield from self._at_end()):
                trailers = yield from self._fields(known)
        # Padding: zeros up to the end of input, checked as they arrive.
        while not (yield from self._at_end()):
            if self._buf.count(0) != len(self._buf):
                raise BhttpError("non-zero padding")
            self._buf.clear()
        end = EndOfMessage(trailers)
        while True:
            yield end

    def _content(self, known: bool) -> _Parse:
        limit = self._limits.max_content_bytes
        if known:
            length, _ = yield from self._varint()
            if length > limit:
                raise BhttpLimitError("content exceeds limit")
            yield from self._pass_on(length)
            return
        total = 0
        while (length := (yield from self._varint())[0]) != 0:
            total += length
            if total > limit:
                raise BhttpLimitError("content exceeds limit")
            yield from self._pass_on(length)

    def _pass_on(self, length: int) -> _Parse:
        # Content goes out as it arrives: nothing of it is held back.
        while length:
            yield from self._wait(1)
            data = bytes(self._buf[:length])
            del self._buf[: len(data)]
            length -= len(data)
            yield ContentChunk(data)

    def _fields(self, known: bool) -> Generator[Event, None, Fields]:
        limits = self._limits
        if known:
            length, _ = yield from self._varint()
            if length > limits.max_field_section_bytes:
                raise BhttpLimitError("field section exceeds limit")
            section = yield from self._take(length)
            return _known_field_lines(_Reader(memoryview(section), in_section=True), limits)
        # Indeterminate length: the same budget as _field_section, counted as lines arrive.
        fields: list[tuple[str, str]] = []
        used = 0
        budget_total = limits.max_field_section_bytes
        while True:
            name_length, size = yield from self._varint()
            if name_length == 0:
                return tuple(fields)
            used += size
            _count(fields, limits)
            budget = budget_total - used
            if name_length > budget:
                raise BhttpLimitError("field section exceeds limit")
            name = yield from self._take(name_length)
            if not _is_field_name(name):
                raise BhttpError("invalid field name")
            value_length, size = yield from self._varint()
            if value_length > budget - name_length:
                raise BhttpLimitError("field section exceeds limit")
            value = yield from self._take(value_length)
            if not _is_field_value(value):
                raise BhttpError("invalid field value")
            used += name_length + size + value_length
            if used > budget_total:
                raise BhttpLimitError("field section exceeds limit")
            fields.append((name.decode("ascii"), value.decode("ascii")))
