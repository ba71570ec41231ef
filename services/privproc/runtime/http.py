"""aiohttp scaffolding: error mapping to HTTP status, bounded bodies, no access log."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from privproc import events
from privproc.errors import LimitExceededError, PrivprocError, UnsupportedMediaTypeError, http_status

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
            events.emit("request.failed", service=service, transport="http", reason=err.reason)
            return problem_response(err)
        except web.HTTPRequestEntityTooLarge:
            events.emit("request.failed", service=service, transport="http", reason="too_large")
            return web.Response(status=413, headers={"Cache-Control": "no-store"})
        except web.HTTPException:
            raise
        except Exception as err:
            events.emit(
                "request.internal_error",
                service=service,
                transport="http",
                exception=type(err).__name__.lower()[:64],
            )
            return web.Response(status=500, headers={"Cache-Control": "no-store"})

    return middleware


def make_app(
    service: str, max_body_bytes: int, extra_middlewares: Sequence[Middleware] = ()
) -> web.Application:
    """An app whose errors map once; ``extra_middlewares`` run first, on the raw request."""
    return web.Application(
        middlewares=[*extra_middlewares, error_middleware(service)], client_max_size=max_body_bytes
    )


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


class HttpServer:
    """An aiohttp app bound to one loopback (or configured) port."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self, host: str, port: int) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self._runner.cleanup()


def anonymous_client_session(timeout: float = 10.0) -> aiohttp.ClientSession:
    """An HTTP client that sends nothing about its caller: no cookies, no User-Agent, no proxy env."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
        trust_env=False,
    )
