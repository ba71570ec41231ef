"""Real services on loopback, in the test's event loop: CDN, ACS, gateway, relay.

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

from privproc.acs.server import AcsConfig, AcsService
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
    acs: AcsService | None
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
    acs_config: dict[str, Any] | None = None,
    relay_via_http: bool = False,
    with_acs: bool = True,
) -> Stack:
    credential = _credential(tmp_path)
    recorder = Recorder()
    cdn = CdnService(CdnConfig(credential_file=credential))
    cdn_ep = await cdn.start()
    acs: AcsService | None = None
    acs_ep: dict[str, Any] = {}
    if with_acs:
        acs = AcsService(
            AcsConfig(
                state_dir=tmp_path / "acs",
                cdn_target=str(cdn_ep["grpc"]),
                cdn_credential_file=credential,
                demo_account="demo",
                **(acs_config or {}),
            )
        )
        acs_ep = await acs.start()
    gateway = GatewayService(
        GatewayConfig(
            cdn_target=str(cdn_ep["grpc"]),
            cdn_credential_file=credential,
            acs_target=str(acs_ep["grpc"]) if acs is not None else None,
            **(gateway_config or {}),
        ),
        grpc_interceptors=(recorder.grpc_interceptor(),),
        http_middlewares=(recorder.http_middleware(),),
    )
    gw_ep = await gateway.start()
    target = {"gateway_url": gw_ep["ohttp_url"]} if relay_via_http else {"gateway_target": gw_ep["grpc"]}
    relay = RelayService(RelayConfig(**target, **(relay_config or {})))
    relay_ep = await relay.start()
    document: dict[str, Any] = {"cdn": cdn_ep, "gateway": gw_ep, "relay": relay_ep}
    if acs_ep:
        document["demo_account"] = acs_ep.pop("demo_account")
        document["acs"] = acs_ep
    return Stack(cdn, acs, gateway, relay, StackFile.from_json(document), recorder, credential.read_text())


async def stop_stack(stack: Stack) -> None:
    await stack.relay.stop()
    await stack.gateway.stop()
    if stack.acs is not None:
        await stack.acs.stop()
    await stack.cdn.stop()
