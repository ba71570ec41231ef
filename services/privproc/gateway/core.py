"""The gateway's request path, independent of transport.

``handle`` takes the bytes of a ``message/ohttp-req`` body and returns the
bytes of the ``message/ohttp-res`` body. Failures before the request is
decapsulated raise typed errors the adapters map to a status in the clear;
from the moment it is decapsulated, every answer — errors included — goes
back encapsulated, so the relay learns nothing from it — not even its
length: every answer is padded to one of
:data:`~privproc.wire.padding.MESSAGE_BUCKETS` (RFC 9292, Section 3.8), so a
summary, a refusal, an error and a 401 challenge of the same bucket are the
same size on the wire.

``handle_chunked`` does the same for a chunked request
(draft-ietf-ohai-chunked-ohttp): it reads the ``message/ohttp-chunked-req``
body piece by piece, opening each chunk as it arrives and passing its
plaintext to an incremental Binary HTTP decoder, so that it holds at most one
incomplete chunk and the inner request (itself bounded by
:data:`INNER_LIMITS`). Only once the final chunk has authenticated is the
inner request routed; the answer is the ``message/ohttp-chunked-res`` body,
sealed chunk by chunk. A failure to open the request raises a typed error
(the adapters answer it in the clear, as for ``handle``); an inner request
that opened but is not valid Binary HTTP is answered, encapsulated, with 400.

A streamed answer (a route's :class:`~privproc.gateway.routes.StreamingResponse`:
a session's TLS records as the predictor produces them) goes out as it comes:
in ``handle_chunked`` the inner response is indeterminate-length Binary HTTP
(RFC 9292 §3.2) sealed chunk by chunk — one chunk with the response head, then
one chunk per piece of content the moment it arrives, then the final chunk
with the end of the message — and in ``handle`` it is collected whole and
padded like any answer. **What the relay sees of a stream** is the size and
time of each chunk: the head chunk and the final chunk have fixed sizes, and
each content chunk is one batch of the predictor's TLS records, whose sizes
are those of the padded frames they carry (``STREAM_FRAME_BUCKETS`` plus
fixed TLS and chunk overheads). So chunk sizes are a function of the
predictor's frame buckets only, never of the text; their times are the
predictor's cadence (one frame per tick at most, padding frames in
silences). A stream that fails after its head went out (the predictor fails
or goes idle, the deadline passes) is cut: the final chunk is never sent, so
the client's chunked opener refuses the answer as truncated and nothing of it
is taken as an answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterable

from opentelemetry import metrics

from privproc.errors import LimitExceededError, PrivprocError, WireError
from privproc.gateway.keys import KeySchedule
from privproc.gateway.routes import Answer, Router, StreamingResponse, problem, stream_failure
from privproc.runtime import telemetry
from privproc.wire import bhttp, ohttp_chunked, padding

#: Largest encapsulated request the gateway reads (bytes).
DEFAULT_MAX_REQUEST_BYTES = 256 << 10

INNER_LIMITS = bhttp.Limits(
    max_message_bytes=DEFAULT_MAX_REQUEST_BYTES,
    max_fields=64,
    max_field_section_bytes=16 << 10,
    max_content_bytes=DEFAULT_MAX_REQUEST_BYTES,
    max_informational=0,
)

#: Inner requests answered, by their (encapsulated) status: what the ``gateway.inner_request``
#: events count, without the route.
_INNER_REQUESTS = metrics.get_meter("privproc.gateway").create_counter(
    "privproc.gateway.inner_requests", unit="{request}"
)


class GatewayCore:
    """Decapsulate, route, encapsulate."""

    def __init__(
        self,
        schedule: KeySchedule,
        router: Router,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self.schedule = schedule
        self.router = router
        self.max_request_bytes = max_request_bytes

    async def handle(self, encapsulated: bytes) -> bytes:
        if len(encapsulated) > self.max_request_bytes:
            raise LimitExceededError("encapsulated request too large")
        # Steps of this one request, inside the front's server span (fixed names, no attributes).
        with telemetry.span("gateway.decapsulate"):
            inner, context = self.schedule.keyring.decapsulate_request(encapsulated)
        try:
            request = bhttp.decode_request(inner, INNER_LIMITS)
        except WireError:
            response = problem(400, "malformed inner request")
        else:
            with telemetry.span("gateway.route"):
                response = await _whole(await self.router.dispatch(request))
        _INNER_REQUESTS.add(1, {"http.response.status_code": response.status})
        with telemetry.span("gateway.encapsulate"):
            return context.encapsulate_response(padded_response(response))

    async def handle_chunked(self, pieces: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        """Read a ``message/ohttp-chunked-req`` body; the ``message/ohttp-chunked-res`` body's pieces.

        Returns once the request has been read whole and answered; the
        returned iterator seals the answer as it is read. Raises a typed
        error (:class:`~privproc.wire.ohttp_chunked.ChunkedOhttpError`,
        :class:`~privproc.errors.LimitExceededError`) if the request does not open.
        """
        opener = ohttp_chunked.RequestOpener(self.schedule.keyring)
        inner = _InnerRequest()
        received = 0
        with telemetry.span("gateway.decapsulate"):
            async for piece in pieces:
                received += len(piece)
                if received > self.max_request_bytes:
                    raise LimitExceededError("encapsulated request too large")
                opener.receive_data(piece)
                inner.drain(opener)
            opener.receive_eof()
            inner.drain(opener)
        request = inner.request()
        answer: Answer
        if request is None:
            answer = problem(400, "malformed inner request")
        else:
            with telemetry.span("gateway.route"):
                answer = await self.router.dispatch(request)
        _INNER_REQUESTS.add(1, {"http.response.status_code": answer.status})
        if isinstance(answer, StreamingResponse):
            return _streamed(opener.response_sealer(), answer)
        return _sealed(opener.response_sealer(), padded_response(answer, indeterminate=True))


class _InnerRequest:
    """The inner request of a chunked one, decoded as its chunks authenticate."""

    def __init__(self) -> None:
        self._decoder = bhttp.MessageDecoder(response=False, limits=INNER_LIMITS)
        self._head: bhttp.RequestHead | None = None
        self._content = bytearray()
        self._trailers: bhttp.Fields = ()
        self._complete = False
        self._malformed = False

    def drain(self, opener: ohttp_chunked.RequestOpener) -> None:
        """Take every chunk ``opener`` has opened (raising what it raises) into the decoder."""
        while isinstance(chunk := opener.next_event(), ohttp_chunked.Chunk):
            if self._malformed:
                continue  # still authenticated to the end, then answered with 400
            try:
                self._decoder.receive_data(chunk.data)
                if chunk.final:
                    self._decoder.receive_eof()
                self._read_events()
            except WireError:
                self._malformed = True

    def _read_events(self) -> None:
        for event in self._decoder.events():
            if isinstance(event, bhttp.RequestHead):
                self._head = event
            elif isinstance(event, bhttp.ContentChunk):
                self._content += event.data  # bounded by INNER_LIMITS
            elif isinstance(event, bhttp.EndOfMessage):
                self._trailers = event.trailers
                self._complete = True

    def request(self) -> bhttp.Request | None:
        """The whole inner request, or None if it was not valid Binary HTTP."""
        if self._malformed or not self._complete or self._head is None:
            return None
        head = self._head
        return bhttp.Request(
            head.method,
            head.scheme,
            head.authority,
            head.path,
            head.headers,
            bytes(self._content),
            self._trailers,
        )


async def _sealed(sealer: ohttp_chunked.ResponseSealer, answer: bytes) -> AsyncGenerator[bytes, None]:
    """``answer`` sealed in chunks of the draft's size, the last one final.

    The answer is padded to its bucket already, so chunk sizes follow from
    the bucket alone.
    """
    step = ohttp_chunked.DEFAULT_MAX_CHUNK
    pieces = [answer[i : i + step] for i in range(0, len(answer), step)] or [b""]
    for piece in pieces[:-1]:
        yield sealer.seal(piece)
    yield sealer.finish(pieces[-1])


async def _streamed(
    sealer: ohttp_chunked.ResponseSealer, answer: StreamingResponse
) -> AsyncGenerator[bytes, None]:
    """``answer`` as indeterminate-length Binary HTTP, one sealed chunk per piece as it comes.

    The head, each content piece and the end each get a chunk of their own
    (see the module docstring: sizes follow from the pieces' sizes alone). A
    failure of the pieces propagates before the final chunk: the answer ends
    truncated.
    """
    async with contextlib.aclosing(answer.pieces) as pieces:
        yield sealer.seal(bhttp.encode_response_head(bhttp.Response(answer.status, answer.headers)))
        async for piece in pieces:
            yield sealer.seal(bhttp.encode_content_chunk(piece))
    yield sealer.finish(bhttp.encode_end())


async def _whole(answer: Answer) -> bhttp.Response:
    """``answer`` with its content read whole (for RFC 9458, which has no streams).

    A stream that fails midway becomes the status it would have had before it
    started (504 for a passed deadline, else 503): nothing of it is sent.
    """
    if not isinstance(answer, StreamingResponse):
        return answer
    content = bytearray()
    try:
        async with contextlib.aclosing(answer.pieces) as pieces:
            async for piece in pieces:
                content += piece
    except PrivprocError as err:
        return stream_failure(err)
    return bhttp.Response(answer.status, answer.headers, bytes(content))


def padded_response(response: bhttp.Response, *, indeterminate: bool = False) -> bytes:
    """``response`` as Binary HTTP, zero-padded to its size bucket.

    An answer too large for every bucket (the routes never make one) becomes
    a padded 500: nothing leaves at its own length. ``indeterminate``: in
    the indeterminate-length form (RFC 9292 §3.2), as chunked OHTTP carries it.
    """
    try:
        encoded = bhttp.encode_response(response, indeterminate=indeterminate)
        return padding.pad_with_zeros(encoded, padding.MESSAGE_BUCKETS)
    except LimitExceededError:
        fallback = bhttp.encode_response(problem(500, "answer too large"), indeterminate=indeterminate)
        return padding.pad_with_zeros(fallback, padding.MESSAGE_BUCKETS)
