"""Real services on loopback, in the test's event loop: CDN, gateway, relay.

(The ``stack`` fixture in ``tests/conftest.py`` starts one per test.)

The gateway gets a recording gRPC interceptor and HTTP middleware, so tests
can assert on exactly what reached it (metadata, headers, peer, body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from grpc import aio

from privproc.cdn.server import CdnConfig, CdnService
from privproc.gateway.server import GatewayConfig, GatewayService
from privproc.relay.server import RelayConfig, RelayService
from privproc.stackfile import StackFile


@dataclass
class Received:
    """One request as the gateway saw it."""

    transport: str
    peer: str
    metadata: list[tuple[str, str]]
    body: bytes


@dataclass
class Recorder:
    seen: list[Received] = field(default_factory=list)

    def grpc_interceptor(self) -> aio.ServerInterceptor:
        recorder = self

        class Interceptor(aio.ServerInterceptor):
            async def intercept_service(
                self,
                continuation: Callable[
                    [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
                ],
                details: grpc.HandlerCallDetails,
            ) -> grpc.RpcMethodHandler[Any, Any] | None:
                handler = await continuation(details)
                if handler is None or handler.unary_unary is None or "Gateway/Handle" not in details.method:
                    return handler
                inner = handler.unary_unary
                metadata = [
                    (k, v if isinstance(v, str) else v.hex()) for k, v in details.invocation_metadata or ()
                ]

                async def wrapped(request: Any, context: Any) -> Any:
                    recorder.seen.append(Received("grpc", context.peer(), metadata, bytes(request.payload)))
                    return await inner(request, context)

                return grpc.unary_unary_rpc_method_handler(
                    wrapped,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )

        return Interceptor()

    def http_middleware(self) -> Any:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method == "POST":
                body = await request.read()
                self.seen.append(Received("http", request.remote or "", list(request.headers.items()), body))
            return await handler(request)

        return record


@dataclass
class Stack:
    cdn: CdnService
    gateway: GatewayService
    relay: RelayService
    file: StackFile
    recorder: Recorder
    credential: str


def _credential(tmp_path: Path) -> Path:
    path = tmp_path / "cdn-publisher"
    path.write_text("test-publisher-credential-0123456789")
    return path


async def start_stack(
    tmp_path: Path,
    *,
    gateway_config: dict[str, Any] | None = None,
    relay_config: dict[str, Any] | None = None,
    relay_via_http: bool = False,
) -> Stack:
    credential = _credential(tmp_path)
    recorder = Recorder()
    cdn = CdnService(CdnConfig(credential_file=credential))
    cdn_ep = await cdn.start()
    gateway = GatewayService(
        GatewayConfig(
            cdn_target=str(cdn_ep["grpc"]), cdn_credential_file=credential, **(gateway_config or {})
        ),
        grpc_interceptors=(recorder.grpc_interceptor(),),
        http_middlewares=(recorder.http_middleware(),),
    )
    gw_ep = await gateway.start()
    target = {"gateway_url": gw_ep["ohttp_url"]} if relay_via_http else {"gateway_target": gw_ep["grpc"]}
    relay = RelayService(RelayConfig(**target, **(relay_config or {})))
    relay_ep = await relay.start()
    file = StackFile.from_json({"cdn": cdn_ep, "gateway": gw_ep, "relay": relay_ep})
    return Stack(cdn, gateway, relay, file, recorder, credential.read_text())


async def stop_stack(stack: Stack) -> None:
    await stack.relay.stop()
    await stack.gateway.stop()
    await stack.cdn.stop()
