"""Sending one encapsulated request and getting its answer: gRPC or HTTP.

Used by the relay (to reach the gateway) and by the client (to reach the
relay): both send the encapsulated bytes and nothing else — no address, no
client headers, no cookies, no user agent — and both turn the far side's
refusals back into the same typed errors, so a relay answers its client
exactly as the gateway would have.

:meth:`Transport.send` carries a whole RFC 9458 message each way;
:meth:`Transport.stream` carries a chunked one (draft-ietf-ohai-chunked-ohttp)
as it is produced, with ``Incremental: ?1``, and gives the answer's bytes out
as they arrive. A stream has idle deadlines (no byte for ``idle`` seconds),
never a total one, and a refusal before the answer starts is the same typed
error ``send`` raises; a stream cut after it started raises
:class:`~privproc.errors.UpstreamError` (the chunked framing makes the cut
visible to whoever opens the answer, too).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from typing import Literal, Protocol, cast

import aiohttp
import grpc
from grpc import aio

from privproc.errors import (
    BadRequestError,
    ConfigError,
    LimitExceededError,
    RateLimitedError,
    UnsupportedMediaTypeError,
    UpstreamError,
)
from privproc.runtime.http import anonymous_client_session
from privproc.runtime.rpc import channel_options
from privproc.runtime.status import error_from_rpc
from privproc.v1 import common_pb2, gateway_pb2_grpc, relay_pb2_grpc
from privproc.wire import ohttp_chunked
from privproc.wire.ohttp import (
    KEY_PROBLEM_TYPE,
    MEDIA_TYPE_REQUEST,
    MEDIA_TYPE_RESPONSE,
    KeyConfigRejectedError,
)

#: Seconds without a byte after which a stream is given up (each way).
DEFAULT_IDLE_SECONDS = 30.0
#: Largest refusal body read from the far side of a stream.
_MAX_REFUSAL_BYTES = 64 << 10
#: The media type of the answer to each request media type.
_ANSWER_TYPE = {
    MEDIA_TYPE_REQUEST: MEDIA_TYPE_RESPONSE,
    ohttp_chunked.MEDIA_TYPE_REQUEST: ohttp_chunked.MEDIA_TYPE_RESPONSE,
}

#: gRPC codes whose message is a privproc ``reason: text`` worth passing on.
_PASS_THROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
}


class UpstreamIdleError(UpstreamError):
    """A stream's far side sent nothing for the idle deadline (it may be waiting for the rest of
    the request: whoever forwards the request decides whose silence it was)."""


class Transport(Protocol):
    """Sends a ``message/ohttp-req`` body, returns the ``message/ohttp-res`` body."""

    async def send(self, payload: bytes, *, timeout_seconds: float | None = None) -> bytes:
        """``timeout_seconds``: this exchange's total deadline, instead of the transport's own."""
        ...

    def stream(
        self, body: AsyncIterable[bytes], *, media_type: str = ohttp_chunked.MEDIA_TYPE_REQUEST
    ) -> AsyncGenerator[bytes, None]:
        """Send ``body`` as it is produced; the answer's bytes as they arrive (an async generator:
        close it, e.g. with :func:`contextlib.aclosing`, if it is not read to the end)."""
        ...

    async def close(self) -> None: ...


class GrpcTransport:
    """Over ``privproc.v1.Gateway/Handle`` or ``privproc.v1.Relay/Forward``, one channel."""

    def __init__(
        self,
        target: str,
        service: Literal["gateway", "relay"],
        *,
        timeout: float = 30.0,
        idle: float = DEFAULT_IDLE_SECONDS,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        """``timeout``: total deadline of a whole-message call; ``idle``: of a stream's silences."""
        self._channel = aio.insecure_channel(target, options=channel_options(max_message_bytes))
        self._stream_call = None
        if service == "gateway":
            stub = gateway_pb2_grpc.GatewayStub(self._channel)
            self._call = stub.Handle
            self._stream_call = stub.HandleChunked
        else:
            self._call = relay_pb2_grpc.RelayStub(self._channel).Forward
        self._timeout = timeout
        self._idle = idle

    async def send(self, payload: bytes, *, timeout_seconds: float | None = None) -> bytes:
        try:
            # No metadata: nothing about the sender crosses this call.
            reply = await self._call(
                common_pb2.EncapsulatedRequest(payload=payload),
                timeout=self._timeout if timeout_seconds is None else timeout_seconds,
            )
        except aio.AioRpcError as err:
            if err.code() in _PASS_THROUGH:
                raise error_from_rpc(err) from None
            raise UpstreamError("upstream unavailable") from None
        return bytes(reply.payload)

    async def stream(
        self, body: AsyncIterable[bytes], *, media_type: str = ohttp_chunked.MEDIA_TYPE_REQUEST
    ) -> AsyncGenerator[bytes, None]:
        """Over ``privproc.v1.Gateway/HandleChunked``: the body's pieces out, the answer's in."""
        if self._stream_call is None or media_type != ohttp_chunked.MEDIA_TYPE_REQUEST:
            raise ConfigError("only a chunked request to the gateway streams over gRPC")

        async def pieces() -> AsyncIterator[common_pb2.EncapsulatedRequest]:
            async for piece in body:
                yield common_pb2.EncapsulatedRequest(payload=piece)

        # No total deadline: the stream lives while bytes flow; silences are bounded below.
        call = self._stream_call(pieces())
        try:
            while True:
                try:
                    reply = await asyncio.wait_for(call.read(), self._idle)
                except TimeoutError:
                    raise UpstreamIdleError("upstream idle") from None
                except asyncio.CancelledError:
                    # gRPC cancels the call itself when the request body fails (too large, idle):
                    # that is this call's failure, not a cancellation of the task reading it.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    raise UpstreamError("upstream call cancelled") from None
                if reply is aio.EOF:
                    return
                yield bytes(cast(common_pb2.EncapsulatedResponse, reply).payload)
        except aio.AioRpcError as err:
            if err.code() in _PASS_THROUGH:
                raise error_from_rpc(err) from None
            raise UpstreamError("upstream unavailable") from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close(None)


class HttpTransport:
    """The standard RFC 9458 HTTP binding: ``POST`` to a relay or gateway URL."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        idle: float = DEFAULT_IDLE_SECONDS,
        max_response_bytes: int = 1 << 20,
        local_address: str | None = None,
    ) -> None:
        """``timeout``: total deadline of a whole-message exchange; ``idle``: of a stream's
        silences. ``local_address``: the source address of its connections (default: the
        system's choice)."""
        self._url = url
        self._max = max_response_bytes
        self._session = anonymous_client_session(timeout, local_address=local_address)
        # A stream has no total deadline: it may run while bytes flow, but never sit silent.
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=idle)

    async def send(self, payload: bytes, *, timeout_seconds: float | None = None) -> bytes:
        # The session's total deadline unless this exchange has its own.
        total = (
            self._session.timeout if timeout_seconds is None else aiohttp.ClientTimeout(total=timeout_seconds)
        )
        try:
            async with self._session.post(
                self._url,
                data=payload,
                headers={"Content-Type": MEDIA_TYPE_REQUEST},
                allow_redirects=False,
                timeout=total,
            ) as resp:
                body = await resp.content.read(self._max + 1)
                status, content_type = resp.status, resp.content_type
        except (aiohttp.ClientError, TimeoutError):
            raise UpstreamError("upstream unavailable") from None
        if len(body) > self._max:
            raise UpstreamError("upstream answer too large")
        if status == 200 and content_type == MEDIA_TYPE_RESPONSE:
            return body
        raise _refusal(status, body)

    async def stream(
        self, body: AsyncIterable[bytes], *, media_type: str = ohttp_chunked.MEDIA_TYPE_REQUEST
    ) -> AsyncGenerator[bytes, None]:
        """``POST`` with ``Incremental: ?1``: the body goes out piece by piece (chunked transfer
        coding), the answer's bytes come back as they arrive."""
        answer_type = _ANSWER_TYPE.get(media_type)
        if answer_type is None:
            raise ConfigError("not an OHTTP request media type")
        headers = {
            "Content-Type": media_type,
            ohttp_chunked.INCREMENTAL_FIELD: ohttp_chunked.INCREMENTAL_TRUE,
        }
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, allow_redirects=False, timeout=self._stream_timeout
            ) as resp:
                if resp.status != 200 or resp.content_type != answer_type:
                    refusal = await resp.content.read(_MAX_REFUSAL_BYTES)
                    raise _refusal(resp.status, refusal)
                while piece := await resp.content.readany():
                    yield piece
        except aiohttp.ServerTimeoutError:
            raise UpstreamIdleError("upstream idle") from None
        except (aiohttp.ClientError, TimeoutError):
            # Refused, cut short (no terminating chunk) or silent for too long: the same answer.
            raise UpstreamError("upstream unavailable") from None

    async def close(self) -> None:
        await self._session.close()


def _refusal(status: int, body: bytes) -> Exception:
    """The typed error for a refusal from the far side of an HTTP exchange."""
    if status == 400 and _problem_type(body) == KEY_PROBLEM_TYPE:
        return KeyConfigRejectedError("key configuration not acceptable")
    if status == 413:
        return LimitExceededError("encapsulated request too large")
    if status == 415:
        return UnsupportedMediaTypeError("unsupported media type")
    if status == 429:
        return RateLimitedError("too many requests")
    if 400 <= status < 500:
        return BadRequestError("upstream refused the request")
    return UpstreamError("upstream failed")


def _problem_type(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = parsed.get("type") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None
