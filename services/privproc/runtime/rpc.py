"""gRPC server scaffolding: health, reflection, bounded messages, error mapping.

Servicer methods raise :class:`~privproc.errors.PrivprocError`; the
interceptor here turns them into a gRPC status exactly once, and turns any
other exception into ``INTERNAL`` without its text.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import StatusCode

from privproc import events
from privproc.runtime import telemetry
from privproc.runtime.status import ErrorReport, report

#: Largest message a privproc gRPC server accepts or sends (bytes).
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20


class ErrorMappingInterceptor(aio.ServerInterceptor):
    """Maps exceptions raised by unary handlers to gRPC status, once; times and traces each call.

    Streaming (stream-stream and unary-stream) handlers get the same mapping; a failure after
    answers were sent ends the call with the mapped status.

    Each unary call is a root SERVER span named by its full method (``privproc.v1.Gateway/Handle``,
    a method this server registered: an unknown one has no handler and is not recorded) and one
    ``rpc.server.duration`` measurement. Nothing of the call's metadata or peer is recorded, and
    no trace context is read from the metadata.
    """

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is not None and (handler.stream_stream is not None or handler.unary_stream is not None):
            return self._streaming(handler, handler_call_details.method)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method

        async def wrapped(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            async with self._observed(method, context):
                return await inner(request, cast(Any, context))

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _streaming(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The same for a stream-stream or unary-stream handler: one span and one duration for
        the whole call."""
        inner = handler.stream_stream or handler.unary_stream
        assert inner is not None

        async def wrapped(requests: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            async with self._observed(method, context):
                stream: AsyncIterator[Any] = cast(Any, inner)(requests, context)
                async for answer in stream:
                    yield answer

        make = (
            grpc.stream_stream_rpc_method_handler
            if handler.stream_stream is not None
            else grpc.unary_stream_rpc_method_handler
        )
        return make(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @contextlib.asynccontextmanager
    async def _observed(self, method: str, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
        """One call of ``method``: its root span, duration and in-flight count, and its failure
        mapped to a status (the call is aborted with it) and reported once."""
        rpc_service, _, rpc_method = method.lstrip("/").rpartition("/")
        attributes: dict[str, str | int] = {
            "rpc.system": "grpc",
            "rpc.service": rpc_service,
            "rpc.method": rpc_method,
        }
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        telemetry.ACTIVE_REQUESTS.add(1, {"privproc.transport": "grpc"})
        with telemetry.server_span(f"{rpc_service}/{rpc_method}", attributes) as span:
            try:
                yield
            except aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as err:
                failure = self._report(err)
                code = failure.grpc_code
                await context.abort(failure.grpc_code, failure.message)
            finally:
                number = _code_number(code)
                span.set_attribute("rpc.grpc.status_code", number)
                if code != grpc.StatusCode.OK:
                    span.set_status(StatusCode.ERROR)
                telemetry.RPC_SERVER_DURATION.record(
                    telemetry.elapsed(started), {**attributes, "rpc.grpc.status_code": number}
                )
                telemetry.ACTIVE_REQUESTS.add(-1, {"privproc.transport": "grpc"})

    def _report(self, err: Exception) -> ErrorReport:
        """``err``'s status, counted and told as an event: status.report is the one mapping."""
        failure = report(err)
        service = self._service
        if failure.typed:
            events.emit(events.RequestFailed(service=service, transport="grpc", reason=failure.reason))
            telemetry.record_error(service, "grpc", failure.reason)
        else:
            events.emit(
                events.RequestInternalError(service=service, transport="grpc", exception=failure.exception)
            )
            telemetry.record_error(service, "grpc", failure.exception)
        return failure


def _code_number(code: object) -> int:
    """A gRPC status code's number (``context.code()`` may give the enum or its number)."""
    if isinstance(code, grpc.StatusCode):
        number = code.value[0]
        return number if isinstance(number, int) else 2
    return code if isinstance(code, int) else 2


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # No user agent beyond grpc's own: nothing about the caller travels.
        ("grpc.primary_user_agent", "privproc"),
    ]


class GrpcServer:
    """An aio gRPC server with health and reflection, for one privproc service."""

    def __init__(
        self,
        service: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        interceptors: Sequence[aio.ServerInterceptor] = (),
        options: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.service = service
        self.health = HealthServicer()
        self._service_names: list[str] = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        self.server = aio.server(
            interceptors=[*interceptors, ErrorMappingInterceptor(service)],
            options=[*server_options(max_message_bytes), *options],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    def add(self, add_fn: Callable[[Any, aio.Server], None], servicer: Any, full_name: str) -> None:
        """Register a servicer; ``full_name`` is e.g. ``privproc.v1.Gateway``."""
        add_fn(servicer, self.server)
        self._service_names.append(full_name)

    async def start(self, host: str, port: int, credentials: grpc.ServerCredentials | None = None) -> int:
        """Bind (port 0: any free port), start serving, mark healthy; returns the port.

        With ``credentials`` the port speaks TLS (mutual TLS for internal services).
        """
        reflection.enable_server_reflection([*self._service_names, reflection.SERVICE_NAME], self.server)
        address = f"{host}:{port}"
        if credentials is None:
            bound = self.server.add_insecure_port(address)
        else:
            bound = self.server.add_secure_port(address, credentials)
        if bound == 0:
            raise OSError("could not bind gRPC port")
        await self.server.start()
        for name in self._service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        return bound

    async def stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def metadata_value(context: aio.ServicerContext[Any, Any], name: str) -> str | None:
    """The first value of invocation metadata ``name`` (lowercase), if text."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else None
    return None


async def check_health(target: str, service: str = "", deadline_seconds: float = 2.0) -> bool:
    """True if the gRPC server at ``target`` reports SERVING for ``service``."""
    async with aio.insecure_channel(target, options=channel_options()) as channel:
        # The typeshed stub declares no methods on HealthStub.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=deadline_seconds)
        except aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
