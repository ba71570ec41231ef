"""The relay process: HTTP ingress (``POST`` ``message/ohttp-req``) and gRPC ``Forward``.

A chunked request (``message/ohttp-chunked-req``, or any request with
``Incremental: ?1`` when the gateway is reached over HTTP) is forwarded as it
arrives and its answer as it comes back, chunk by chunk, never held whole:
the request's size limit is counted as bytes pass (a stream over it is cut),
and each way has an idle deadline (no byte for ``idle_seconds``) instead of a
total one. As for whole messages, nothing but the body and its media type
goes on to the gateway.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import web
from grpc import aio
from opentelemetry import metrics

from privproc import events
from privproc.errors import (
    BadRequestError,
    ConfigError,
    PrivprocError,
    RateLimitedError,
    UnsupportedMediaTypeError,
)
from privproc.relay.policy import RateLimiter, peer_host
from privproc.runtime import settings, telemetry
from privproc.runtime.http import BodyPieces, HttpLimits, HttpServer, make_app, read_body, stream_answer
from privproc.runtime.lifecycle import start_fronts
from privproc.runtime.ohttp_transport import (
    DEFAULT_IDLE_SECONDS,
    GrpcTransport,
    HttpTransport,
    Transport,
    UpstreamIdleError,
)
from privproc.runtime.rpc import GrpcServer
from privproc.runtime.telemetry import TelemetryOptions
from privproc.v1 import common_pb2, relay_pb2_grpc
from privproc.wire import ohttp_chunked
from privproc.wire.ohttp import MEDIA_TYPE_REQUEST, MEDIA_TYPE_RESPONSE

RELAY_PATH = "/ohttp-relay"
DEFAULT_MAX_REQUEST_BYTES = 256 << 10


@settings.declared("relay")
class RelayConfig:
    """``privproc serve relay``: the OHTTP relay (give exactly one of its two gateways)."""

    #: gRPC address of the gateway (preferred) ...
    gateway_target: str | None = settings.option(
        default=None, flag="--gateway", help="gRPC address of the gateway"
    )
    #: ... or its RFC 9540 gateway URL, to relay for any standard gateway.
    gateway_url: str | None = settings.option(
        default=None, help="HTTP URL of a standard OHTTP gateway (instead of --gateway)"
    )
    host: str = settings.host_option()
    grpc_port: int = settings.grpc_port_option()
    http_port: int = settings.http_port_option()
    max_request_bytes: int = settings.option(
        default=DEFAULT_MAX_REQUEST_BYTES, help="largest encapsulated request relayed"
    )
    rate_per_second: float = settings.option(default=20.0, flag="--rate", help="requests/s per client")
    burst: int = settings.option(default=40, help="burst per client")
    timeout_seconds: float = settings.option(default=30.0, help="seconds to wait for the gateway")
    #: A streamed (chunked) exchange has no total deadline; a silence this long either way ends it.
    idle_seconds: float = settings.option(
        default=DEFAULT_IDLE_SECONDS, help="seconds a streamed exchange may go without a byte"
    )
    #: Read deadlines and connection caps of the HTTP ingress (slowloris): the relay is the
    #: public front, so one address gets few connections.
    http_limits: HttpLimits = settings.group(
        help="the HTTP ingress's limits",
        default_factory=lambda: HttpLimits(max_connections_per_address=16),
    )
    telemetry: TelemetryOptions = settings.group(
        help="where its metrics and traces go", default_factory=TelemetryOptions
    )


_METER = metrics.get_meter("privproc.relay")
#: Requests refused by the per-client limit (counted; the client is not).
_RATE_LIMITED = _METER.create_counter("privproc.relay.rate_limited", unit="{request}")
#: Time the gateway took to answer a forwarded request.
_FORWARD_DURATION = _METER.create_histogram(
    "privproc.relay.forward.duration",
    unit="s",
    explicit_bucket_boundaries_advisory=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class RelayCore:
    """Rate limit, then forward: the same for both ingress transports."""

    def __init__(
        self,
        forwarder: Transport,
        limiter: RateLimiter,
        clock: Callable[[], float] = time.monotonic,
        *,
        streams_whole_messages: bool = False,
    ):
        """``streams_whole_messages``: whether the forwarder can stream an RFC 9458 message too
        (HTTP can; the gateway's gRPC service streams chunked messages only)."""
        self.forwarder = forwarder
        self.limiter = limiter
        self._clock = clock
        self.streams_whole_messages = streams_whole_messages

    def _admit(self, client: str, transport: str) -> None:
        if not self.limiter.allow(client, self._clock()):
            events.emit(events.RelayRateLimited(transport=transport))
            _RATE_LIMITED.add(1, {"privproc.transport": transport})
            raise RateLimitedError("too many requests")

    def streams(self, media_type: str, incremental: str | None) -> bool:
        """Whether a request of ``media_type`` with this ``Incremental`` field is streamed."""
        if media_type == ohttp_chunked.MEDIA_TYPE_REQUEST:
            return True
        return self.streams_whole_messages and ohttp_chunked.incremental_requested(incremental)

    async def relay_stream(
        self, client: str, body: BodyPieces, media_type: str, transport: str
    ) -> AsyncGenerator[bytes, None]:
        """Forward ``body`` as it arrives; the answer's bytes as they come back.

        Refusals (rate limit, the gateway's) raise at the first step; a body
        that broke its limit or went idle raises its own error, not the
        upstream failure it caused.
        """
        self._admit(client, transport)
        started = self._clock()
        try:
            async for piece in self.forwarder.stream(body, media_type=media_type):
                yield piece
        except PrivprocError as err:
            if body.failure is not None:
                raise body.failure from None
            if isinstance(err, UpstreamIdleError) and not body.finished:
                # The gateway may wait for the whole request: the silence was the client's.
                raise BadRequestError("request body idle") from None
            raise
        if body.failure is not None:  # pragma: no cover - the upstream ends early on a cut body
            raise body.failure
        seconds = self._clock() - started
        events.emit(events.RelayForwarded(transport=transport, millis=int(seconds * 1000)))
        _FORWARD_DURATION.record(seconds, {"privproc.transport": transport})

    async def relay(self, client: str, payload: bytes, transport: str) -> bytes:
        self._admit(client, transport)
        started = self._clock()
        # A step of the relay's own trace; nothing of it travels with the request.
        with telemetry.span("relay.forward"):
            answer = await self.forwarder.send(payload)
        seconds = self._clock() - started
        events.emit(events.RelayForwarded(transport=transport, millis=int(seconds * 1000)))
        _FORWARD_DURATION.record(seconds, {"privproc.transport": transport})
        return answer


class RelayServicer(relay_pb2_grpc.RelayServicer):
    def __init__(self, core: RelayCore) -> None:
        self._core = core

    async def Forward(
        self, request: common_pb2.EncapsulatedRequest, context: aio.ServicerContext[Any, Any]
    ) -> common_pb2.EncapsulatedResponse:
        answer = await self._core.relay(peer_host(context.peer()), request.payload, "grpc")
        return common_pb2.EncapsulatedResponse(payload=answer)


_ANSWER_TYPE = {
    MEDIA_TYPE_REQUEST: MEDIA_TYPE_RESPONSE,
    ohttp_chunked.MEDIA_TYPE_REQUEST: ohttp_chunked.MEDIA_TYPE_RESPONSE,
}


def build_http_app(
    core: RelayCore, max_request_bytes: int, idle_seconds: float = DEFAULT_IDLE_SECONDS
) -> web.Application:
    app = make_app("relay", max_request_bytes)

    async def streamed(request: web.Request, media_type: str) -> web.StreamResponse:
        body = BodyPieces(request, max_request_bytes, idle=idle_seconds)
        answer = core.relay_stream(request.remote or "unknown", body, media_type, "http")
        async with contextlib.aclosing(answer):
            # Refusals before the answer starts are answered with their status (error middleware).
            first = await anext(answer, b"")
            return await stream_answer(
                request, "relay", _ANSWER_TYPE[media_type], first, answer, idle=idle_seconds
            )

    async def ingress(request: web.Request) -> web.StreamResponse:
        media_type = request.content_type
        if media_type not in _ANSWER_TYPE:
            raise UnsupportedMediaTypeError("unsupported media type")
        if core.streams(media_type, request.headers.get(ohttp_chunked.INCREMENTAL_FIELD)):
            return await streamed(request, media_type)
        if media_type != MEDIA_TYPE_REQUEST:  # pragma: no cover - chunked requests always stream
            raise UnsupportedMediaTypeError("unsupported media type")
        body = await read_body(request, max_request_bytes)
        # The address is used for the rate limit and dropped here; no header,
        # cookie or address of the client goes any further.
        answer = await core.relay(request.remote or "unknown", body, "http")
        return web.Response(
            body=answer, content_type=MEDIA_TYPE_RESPONSE, headers={"Cache-Control": "no-store"}
        )

    app.router.add_post(RELAY_PATH, ingress)
    return app


class RelayService:
    name = "relay"

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        forwarder: Transport
        if (config.gateway_target is None) == (config.gateway_url is None):
            raise ConfigError(
                "the relay needs exactly one of a gateway target (--gateway) or URL (--gateway-url)"
            )
        if config.gateway_target is not None:
            forwarder = GrpcTransport(
                config.gateway_target,
                "gateway",
                timeout=config.timeout_seconds,
                idle=config.idle_seconds,
                max_message_bytes=config.max_request_bytes + 4096,
            )
        else:
            assert config.gateway_url is not None
            forwarder = HttpTransport(
                config.gateway_url, timeout=config.timeout_seconds, idle=config.idle_seconds
            )
        limiter = RateLimiter(rate=config.rate_per_second, burst=config.burst)
        self.core = RelayCore(forwarder, limiter, streams_whole_messages=config.gateway_url is not None)
        self.grpc = GrpcServer("relay", max_message_bytes=config.max_request_bytes + 4096)
        self.grpc.add(
            relay_pb2_grpc.add_RelayServicer_to_server, RelayServicer(self.core), "privproc.v1.Relay"
        )
        self.http = HttpServer(
            build_http_app(self.core, config.max_request_bytes, config.idle_seconds), config.http_limits
        )

    async def start(self) -> dict[str, object]:
        grpc_port, http_port = await start_fronts("relay", self.config, self.grpc, self.http)
        return {
            "grpc": f"{self.config.host}:{grpc_port}",
            "ohttp_url": f"http://{self.config.host}:{http_port}{RELAY_PATH}",
        }

    async def stop(self) -> None:
        await self.grpc.stop(grace=5.0)
        await self.http.stop()
        await self.core.forwarder.close()


def build(config: RelayConfig) -> RelayService:
    """The service ``privproc serve relay`` runs."""
    return RelayService(config)
