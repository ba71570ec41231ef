"""Sending one encapsulated request and getting its answer: gRPC or HTTP.

Used by the relay (to reach the gateway) and by the client (to reach the
relay): both send the encapsulated bytes and nothing else — no address, no
client headers, no cookies, no user agent — and both turn the far side's
refusals back into the same typed errors, so a relay answers its client
exactly as the gateway would have.
"""

from __future__ import annotations

import json
from typing import Literal, Protocol

import aiohttp
import grpc
from grpc import aio

from privproc.errors import (
    BadRequestError,
    LimitExceededError,
    RateLimitedError,
    UnsupportedMediaTypeError,
    UpstreamError,
)
from privproc.runtime.http import anonymous_client_session
from privproc.runtime.rpc import channel_options
from privproc.runtime.status import error_from_rpc
from privproc.v1 import common_pb2, gateway_pb2_grpc, relay_pb2_grpc
from privproc.wire.ohttp import (
    KEY_PROBLEM_TYPE,
    MEDIA_TYPE_REQUEST,
    MEDIA_TYPE_RESPONSE,
    KeyConfigRejectedError,
)

#: gRPC codes whose message is a privproc ``reason: text`` worth passing on.
_PASS_THROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
}


class Transport(Protocol):
    """Sends a ``message/ohttp-req`` body, returns the ``message/ohttp-res`` body."""

    async def send(self, payload: bytes) -> bytes: ...

    async def close(self) -> None: ...


class GrpcTransport:
    """Over ``privproc.v1.Gateway/Handle`` or ``privproc.v1.Relay/Forward``, one channel."""

    def __init__(
        self,
        target: str,
        service: Literal["gateway", "relay"],
        *,
        timeout: float = 30.0,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        self._channel = aio.insecure_channel(target, options=channel_options(max_message_bytes))
        if service == "gateway":
            self._call = gateway_pb2_grpc.GatewayStub(self._channel).Handle
        else:
            self._call = relay_pb2_grpc.RelayStub(self._channel).Forward
        self._timeout = timeout

    async def send(self, payload: bytes) -> bytes:
        try:
            # No metadata: nothing about the sender crosses this call.
            reply = await self._call(common_pb2.EncapsulatedRequest(payload=payload), timeout=self._timeout)
        except aio.AioRpcError as err:
            if err.code() in _PASS_THROUGH:
                raise error_from_rpc(err) from None
            raise UpstreamError("upstream unavailable") from None
        return bytes(reply.payload)

    async def close(self) -> None:
        await self._channel.close(None)


class HttpTransport:
    """The standard RFC 9458 HTTP binding: ``POST`` to a relay or gateway URL."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        max_response_bytes: int = 1 << 20,
        local_address: str | None = None,
    ) -> None:
        """``local_address``: the source address of its connections (default: the system's choice)."""
        self._url = url
        self._max = max_response_bytes
        self._session = anonymous_client_session(timeout, local_address=local_address)

    async def send(self, payload: bytes) -> bytes:
        try:
            async with self._session.post(
                self._url, data=payload, headers={"Content-Type": MEDIA_TYPE_REQUEST}, allow_redirects=False
            ) as resp:
                body = await resp.content.read(self._max + 1)
                status, content_type = resp.status, resp.content_type
        except (aiohttp.ClientError, TimeoutError):
            raise UpstreamError("upstream unavailable") from None
        if len(body) > self._max:
            raise UpstreamError("upstream answer too large")
        if status == 200 and content_type == MEDIA_TYPE_RESPONSE:
            return body
        if status == 400 and _problem_type(body) == KEY_PROBLEM_TYPE:
            raise KeyConfigRejectedError("key configuration not acceptable")
        if status == 413:
            raise LimitExceededError("encapsulated request too large")
        if status == 415:
            raise UnsupportedMediaTypeError("unsupported media type")
        if status == 429:
            raise RateLimitedError("too many requests")
        if 400 <= status < 500:
            raise BadRequestError("upstream refused the request")
        raise UpstreamError("upstream failed")

    async def close(self) -> None:
        await self._session.close()


def _problem_type(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = parsed.get("type") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None
