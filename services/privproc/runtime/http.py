"""aiohttp scaffolding: error mapping, bounded bodies, no access log, and a connection guard.

Every HTTP front privproc serves (relay ingress, gateway, ACS, CDN, ledger
tiles, witness) runs through :class:`HttpServer`, which puts each accepted
connection behind a guard (issue 11, item 8: slowloris):

- at accept, a global connection cap and a per-address cap (an IPv6 /64
  counts as one address); the guard keeps
  counts keyed by an HMAC of the address under a per-process random key,
  in memory, and drops a count when it reaches zero, so it stores no address;
  a refused connection gets a fixed ``503`` and is closed before the HTTP
  server sees it;
- a head deadline: a request head must be complete within
  ``head_timeout_seconds`` of its first byte (however slowly it trickles);
- a body deadline: the body must be complete within ``body_timeout_seconds``
  of the end of its head (a total deadline, so a minimum rate for the
  largest body a service takes);
- an idle deadline: a connection that sends nothing for
  ``idle_timeout_seconds`` after it is accepted or after an answer is closed
  (aiohttp's ``keepalive_timeout`` between requests, the guard's own timer
  before the first byte).

The guard follows the request framing with the sans-I/O
:mod:`privproc.wire.http1`; aiohttp still parses and answers every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import resource
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry.trace import StatusCode

from privproc import events
from privproc.errors import (
    BadRequestError,
    LimitExceededError,
    PrivprocError,
    UnsupportedMediaTypeError,
    exception_token,
)
from privproc.runtime import settings, telemetry
from privproc.runtime.status import http_status
from privproc.wire.http1 import Phase, RequestFraming

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROBLEM_JSON = "application/problem+json"


def problem_response(error: PrivprocError) -> web.Response:
    """An RFC 9457 problem+json answer for ``error``: type and reason, nothing else."""
    body = {"type": error.problem_type or "about:blank", "title": error.reason}
    return web.Response(
        status=http_status(error),
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type=PROBLEM_JSON,
        headers={"Cache-Control": "no-store"},
    )


def error_middleware(service: str) -> Middleware:
    """Map exceptions from handlers to HTTP answers, once for the whole app."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except PrivprocError as err:
            events.emit(events.RequestFailed(service=service, transport="http", reason=err.reason))
            telemetry.record_error(service, "http", err.reason)
            return problem_response(err)
        except web.HTTPRequestEntityTooLarge:
            events.emit(events.RequestFailed(service=service, transport="http", reason="too_large"))
            telemetry.record_error(service, "http", "too_large")
            return web.Response(status=413, headers={"Cache-Control": "no-store"})
        except web.HTTPException:
            raise
        except ConnectionResetError:
            # The client went away (or a read deadline closed it): no answer, no error to log.
            raise
        except Exception as err:
            token = exception_token(err)
            events.emit(events.RequestInternalError(service=service, transport="http", exception=token))
            telemetry.record_error(service, "http", token)
            return web.Response(status=500, headers={"Cache-Control": "no-store"})

    return middleware


#: Methods recorded by name; any other is ``_OTHER`` (OTel's convention: a client picks the method).
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def _route(request: web.Request) -> str | None:
    """The route the request matched, as registered (``/tile/{path}``): a fixed string, never the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


@web.middleware
async def telemetry_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time and trace each request: a root SERVER span and one ``http.server.request.duration``.

    Only the method (or ``_OTHER``), the matched route and the status are recorded; no header
    (``traceparent`` included: a caller's trace is never continued), address, path or body.
    """
    method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
    route = _route(request)
    attributes: dict[str, str | int] = {"http.request.method": method}
    if route is not None:
        attributes["http.route"] = route
    started = time.perf_counter()
    status = 500
    telemetry.ACTIVE_REQUESTS.add(1, {"privproc.transport": "http"})
    with telemetry.server_span(f"{method} {route}" if route is not None else method, attributes) as span:
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as err:
            status = err.status
            raise
        finally:
            attributes["http.response.status_code"] = status
            if status >= 400:
                attributes["error.type"] = str(status)
            if status >= 500:
                span.set_status(StatusCode.ERROR)
            span.set_attributes(attributes)
            telemetry.HTTP_SERVER_DURATION.record(telemetry.elapsed(started), attributes)
            telemetry.ACTIVE_REQUESTS.add(-1, {"privproc.transport": "http"})


#: The service an app belongs to (for the connection guard's events).
SERVICE_KEY = web.AppKey("privproc_service", str)


def make_app(
    service: str, max_body_bytes: int, extra_middlewares: Sequence[Middleware] = ()
) -> web.Application:
    """An app whose errors map once; ``extra_middlewares`` run first, on the raw request.

    Every request is timed and traced around them (:func:`telemetry_middleware`).
    """
    app = web.Application(
        middlewares=[telemetry_middleware, *extra_middlewares, error_middleware(service)],
        client_max_size=max_body_bytes,
    )
    app[SERVICE_KEY] = service
    return app


def require_media_type(request: web.Request, media_type: str) -> None:
    if request.content_type != media_type:
        raise UnsupportedMediaTypeError("unsupported media type")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing one declared or found larger than ``limit``.

    The app's ``client_max_size`` bounds what aiohttp buffers; the declared
    length is checked first so an oversized upload is refused unread.
    """
    if request.content_length is not None and request.content_length > limit:
        raise LimitExceededError("request body too large")
    body = await request.read()
    if len(body) > limit:
        raise LimitExceededError("request body too large")
    return body


class BodyPieces:
    """A request body read piece by piece as it arrives, never whole.

    Iterate it once. It stops with :class:`~privproc.errors.LimitExceededError`
    as soon as more than ``limit`` bytes came (a declared length over the limit
    is refused before anything is read), and with a
    :class:`~privproc.errors.BadRequestError` after ``idle`` seconds without
    a byte. Whoever hands it on (as the body of an upstream request, whose
    client may swallow the error) finds the error again in :attr:`failure`.
    """

    def __init__(self, request: web.Request, limit: int, *, idle: float | None = None) -> None:
        if request.content_length is not None and request.content_length > limit:
            raise LimitExceededError("request body too large")
        self._request = request
        self._limit = limit
        self._idle = idle
        self.received = 0
        self.failure: PrivprocError | None = None
        #: Whether the body was read to its end.
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._request.content
        while True:
            try:
                piece = await asyncio.wait_for(content.readany(), self._idle)
            except TimeoutError:
                self.failure = BadRequestError("request body idle")
                raise self.failure from None
            if not piece:
                self.finished = True
                return
            self.received += len(piece)
            if self.received > self._limit:
                self.failure = LimitExceededError("request body too large")
                raise self.failure
            yield piece


async def stream_answer(
    request: web.Request,
    service: str,
    content_type: str,
    first: bytes,
    rest: AsyncIterator[bytes],
    *,
    idle: float | None = None,
) -> web.StreamResponse:
    """Answer 200 with ``first`` and then each piece of ``rest`` as it comes (``Incremental: ?1``).

    Once the answer has started there is no status left to give: a failure
    of ``rest``, or a reader that takes nothing for ``idle`` seconds, cuts
    the connection without the chunked coding's last chunk, so the reader
    sees the answer truncated (and the chunked OHTTP inside it fails to
    open). The cut is a ``stream.cut`` event.
    """
    answer = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Cache-Control": "no-store",
            "Incremental": "?1",
        }
    )
    await answer.prepare(request)
    try:
        piece: bytes | None = first
        while piece is not None:
            if piece:
                await asyncio.wait_for(answer.write(piece), idle)
            piece = await anext(rest, None)
    except (Exception, asyncio.CancelledError) as err:
        reason = err.reason if isinstance(err, PrivprocError) else exception_token(err)
        events.emit(events.StreamCut(service=service, transport="http", reason=reason))
        if request.transport is not None:
            request.transport.abort()
        if isinstance(err, asyncio.CancelledError):
            raise
        return answer
    await answer.write_eof()
    return answer


@settings.declared(frozen=True)
class HttpLimits:
    """Read deadlines and connection caps of one HTTP front (see the module docstring)."""

    head_timeout_seconds: float = settings.option(
        default=10.0, flag="--http-head-timeout", help="HTTP front: seconds to receive a request head"
    )
    body_timeout_seconds: float = settings.option(
        default=30.0, flag="--http-body-timeout", help="HTTP front: seconds to receive a request body"
    )
    #: Longer than common client keep-alive (aiohttp: 15 s), so clients close idle ones first.
    idle_timeout_seconds: float = settings.option(
        default=30.0, flag="--http-idle-timeout", help="HTTP front: seconds before closing an idle one"
    )
    #: Connections open at once; ``None``: half the process's descriptor limit, at most 4096.
    max_connections: int | None = settings.option(
        default=None, flag="--http-max-connections", help="HTTP front: connections open at once"
    )
    max_connections_per_address: int = settings.option(
        default=32,
        flag="--http-max-connections-per-address",
        help="HTTP front: connections per address (IPv6: /64)",
    )

    def __post_init__(self) -> None:
        timeouts = (self.head_timeout_seconds, self.body_timeout_seconds, self.idle_timeout_seconds)
        if min(timeouts) <= 0 or self.max_connections_per_address < 1:
            raise ValueError("HTTP limits must be positive")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("HTTP limits must be positive")

    def total_connections(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        # Descriptors are also needed for upstream connections, files and gRPC: keep half free.
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 4096
        return max(1, min(4096, soft // 2))


class ConnectionLimiter:
    """Connection counts per address and in total; keyed by HMAC, never by the address.

    Pure bookkeeping (no sockets): :meth:`acquire` at accept, :meth:`release`
    when the connection is gone. A count that drops to zero is deleted, so
    the table holds only addresses with a connection open now, each as a
    keyed hash under a per-process random key.
    """

    def __init__(self, *, max_total: int, max_per_address: int) -> None:
        if max_total < 1 or max_per_address < 1:
            raise ValueError("connection caps must be positive")
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._key = secrets.token_bytes(32)
        self._counts: dict[bytes, int] = {}
        self.total = 0

    def acquire(self, address: str) -> tuple[bytes | None, str]:
        """A slot for one more connection from ``address``: ``(key, "")`` or ``(None, reason)``."""
        if self.total >= self.max_total:
            return None, "global"
        key = hmac.new(self._key, _source(address).encode(), hashlib.sha256).digest()[:16]
        count = self._counts.get(key, 0)
        if count >= self.max_per_address:
            return None, "per_address"
        self._counts[key] = count + 1
        self.total += 1
        return key, ""

    def release(self, key: bytes) -> None:
        count = self._counts.get(key, 0)
        if count <= 0:
            return
        self.total -= 1
        if count == 1:
            del self._counts[key]
        else:
            self._counts[key] = count - 1

    def __len__(self) -> int:
        """Addresses (as keys) with a connection open."""
        return len(self._counts)


def _source(address: str) -> str:
    """What one client is: an IPv4 address, or an IPv6 /64 (one host's usual allocation)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


#: What a connection refused at accept gets: fixed bytes, nothing about the client.
_REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: caps at accept, head/body/first-byte deadlines."""

    def __init__(
        self, inner: asyncio.Protocol, limiter: ConnectionLimiter, limits: HttpLimits, service: str
    ) -> None:
        self._inner = inner
        self._limiter = limiter
        self._limits = limits
        self._service = service
        self._slot: bytes | None = None
        self._transport: asyncio.Transport | None = None
        self._framing = RequestFraming()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._armed_for: dict[str, int] = {}

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self._slot, reason = self._limiter.acquire(address)
        if self._slot is None:
            events.emit(events.HttpConnectionRefused(service=self._service, reason=reason))
            transport.write(_REFUSAL)
            transport.close()
            return
        self._transport = transport
        self._arm("idle", 0, self._limits.idle_timeout_seconds)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        self._cancel("idle")
        self._framing.feed(data)
        self._follow()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._transport is None:
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        for name in list(self._timers):
            self._cancel(name)
        if self._slot is not None:
            self._limiter.release(self._slot)
            self._slot = None
        if self._transport is not None:
            self._transport = None
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()

    # --- deadlines ------------------------------------------------------------------------

    def _follow(self) -> None:
        """Arm or cancel the head and body deadlines for where the framing now is."""
        phase = self._framing.phase
        if phase is Phase.HEAD:
            self._arm("head", self._framing.heads_started, self._limits.head_timeout_seconds)
        else:
            self._cancel("head")
        if phase in (Phase.BODY, Phase.BROKEN):
            # BROKEN framing has no end: the body deadline closes it (fail closed).
            self._arm("body", self._framing.heads_completed, self._limits.body_timeout_seconds)
        else:
            self._cancel("body")

    def _arm(self, name: str, generation: int, seconds: float) -> None:
        if name in self._timers and self._armed_for.get(name) == generation:
            return  # still the same head or body: its deadline stands
        self._cancel(name)
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(seconds, self._expire, name)
        self._armed_for[name] = generation

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._armed_for.pop(name, None)

    def _expire(self, name: str) -> None:
        self._timers.pop(name, None)
        if self._transport is None:
            return
        events.emit(events.HttpConnectionTimeout(service=self._service, phase=name))
        self._transport.abort()


class _GuardedSite(web.BaseSite):
    """A TCP site whose connections go through :class:`_GuardedProtocol`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        super().__init__(runner, backlog=128)
        self._host = host
        self._port = port
        self._factory = factory
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = server = await loop.create_server(
            self._factory, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        self.bound_port = int(server.sockets[0].getsockname()[1])


class HttpServer:
    """An aiohttp app bound to one loopback (or configured) port, behind the connection guard."""

    def __init__(self, app: web.Application, limits: HttpLimits | None = None) -> None:
        self.app = app
        self.limits = limits or HttpLimits()
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.limits.idle_timeout_seconds,
        )
        self.connections = ConnectionLimiter(
            max_total=self.limits.total_connections(),
            max_per_address=self.limits.max_connections_per_address,
        )
        self._site: _GuardedSite | None = None

    async def start(self, host: str, port: int) -> int:
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        service = self.app.get(SERVICE_KEY, "stack")

        def factory() -> asyncio.Protocol:
            return _GuardedProtocol(server(), self.connections, self.limits, service)

        self._site = _GuardedSite(self._runner, host, port, factory)
        await self._site.start()
        return self._site.bound_port

    async def stop(self) -> None:
        await self._runner.cleanup()


def anonymous_client_session(
    timeout: float = 10.0, *, local_address: str | None = None
) -> aiohttp.ClientSession:
    """An HTTP client that sends nothing about its caller: no cookies, no User-Agent, no proxy env.

    ``local_address``: the source address its connections come from (a device with several).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(local_address, 0)) if local_address else None,
        timeout=aiohttp.ClientTimeout(total=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
        trust_env=False,
    )
