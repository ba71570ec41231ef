"""The relay process: HTTP ingress (``POST`` ``message/ohttp-req``) and gRPC ``Forward``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from grpc import aio
from opentelemetry import metrics

from privproc import events
from privproc.errors import ConfigError, RateLimitedError
from privproc.relay.policy import RateLimiter, peer_host
from privproc.runtime import settings, telemetry
from privproc.runtime.http import HttpLimits, HttpServer, make_app, read_body, require_media_type
from privproc.runtime.lifecycle import start_fronts
from privproc.runtime.ohttp_transport import GrpcTransport, HttpTransport, Transport
from privproc.runtime.rpc import GrpcServer
from privproc.runtime.telemetry import TelemetryOptions
from privproc.v1 import common_pb2, relay_pb2_grpc
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
        self, forwarder: Transport, limiter: RateLimiter, clock: Callable[[], float] = time.monotonic
    ):
        self.forwarder = forwarder
        self.limiter = limiter
        self._clock = clock

    async def relay(self, client: str, payload: bytes, transport: str) -> bytes:
        if not self.limiter.allow(client, self._clock()):
            events.emit(events.RelayRateLimited(transport=transport))
            _RATE_LIMITED.add(1, {"privproc.transport": transport})
            raise RateLimitedError("too many requests")
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


def build_http_app(core: RelayCore, max_request_bytes: int) -> web.Application:
    app = make_app("relay", max_request_bytes)

    async def ingress(request: web.Request) -> web.Response:
        require_media_type(request, MEDIA_TYPE_REQUEST)
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
                max_message_bytes=config.max_request_bytes + 4096,
            )
        else:
            assert config.gateway_url is not None
            forwarder = HttpTransport(config.gateway_url, timeout=config.timeout_seconds)
        limiter = RateLimiter(rate=config.rate_per_second, burst=config.burst)
        self.core = RelayCore(forwarder, limiter)
        self.grpc = GrpcServer("relay", max_message_bytes=config.max_request_bytes + 4096)
        self.grpc.add(
            relay_pb2_grpc.add_RelayServicer_to_server, RelayServicer(self.core), "privproc.v1.Relay"
        )
        self.http = HttpServer(build_http_app(self.core, config.max_request_bytes), config.http_limits)

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
