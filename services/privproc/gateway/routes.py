"""What the gateway answers inside the encapsulation: the inner HTTP resources.

The gateway is the target for its own origin (default ``privproc.local``).
Requests for any other authority are refused with 421: the gateway is not an
open proxy. Later issues add ``/v1/sessions`` here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from privproc import __version__, events
from privproc.errors import NotFoundError, TokenRefusedError, UnavailableError
from privproc.gateway.redemption import Redeemer
from privproc.gateway.sessions import PredictorPool, SessionTable
from privproc.wire.bhttp import Request, Response

InnerHandler = Callable[[Request], Awaitable[Response]]

DEFAULT_ORIGIN = "privproc.local"


def json_response(status: int, body: dict[str, object]) -> Response:
    return Response(
        status=status,
        headers=(("content-type", "application/json"), ("cache-control", "no-store")),
        content=json.dumps(body, separators=(",", ":"), sort_keys=True).encode(),
    )


def problem(status: int, title: str) -> Response:
    return Response(
        status=status,
        headers=(("content-type", "application/problem+json"), ("cache-control", "no-store")),
        content=json.dumps({"type": "about:blank", "title": title}, separators=(",", ":")).encode(),
    )


@dataclass
class Router:
    """Routes inner requests by (method, path) for the gateway's own origin."""

    origin: str = DEFAULT_ORIGIN
    _routes: dict[str, dict[str, InnerHandler]] = field(default_factory=dict)

    _prefixes: dict[str, dict[str, InnerHandler]] = field(default_factory=dict)

    def add(self, method: str, path: str, handler: InnerHandler) -> None:
        self._routes.setdefault(path, {})[method] = handler

    def add_prefix(self, method: str, prefix: str, handler: InnerHandler) -> None:
        """Route every path below ``prefix`` (which ends in ``/``) to ``handler``."""
        self._prefixes.setdefault(prefix, {})[method] = handler

    async def dispatch(self, request: Request) -> Response:
        if request.scheme != "https" or request.authority.lower() != self.origin:
            events.emit("gateway.inner_request", route="misdirected", status=421)
            return problem(421, "misdirected request")
        # The query string is not part of routing; nothing here takes one.
        path = request.path.split("?", 1)[0]
        methods = self._routes.get(path)
        if methods is None:
            methods = next(
                (m for p, m in self._prefixes.items() if path.startswith(p) and len(path) > len(p)), None
            )
        if methods is None:
            events.emit("gateway.inner_request", route="not_found", status=404)
            return problem(404, "not found")
        handler = methods.get(request.method)
        if handler is None:
            events.emit("gateway.inner_request", route="method_not_allowed", status=405)
            allowed = ", ".join(sorted(methods))
            return Response(status=405, headers=(("allow", allowed), ("cache-control", "no-store")))
        return await handler(request)


SESSION_HEADER = "privproc-session"
SESSIONS_PREFIX = "/v1/sessions/"


def _records(status: int, records: bytes, *extra: tuple[str, str]) -> Response:
    headers = (("content-type", "application/octet-stream"), ("cache-control", "no-store"), *extra)
    return Response(status=status, headers=headers, content=records)


def sessions_route(
    redeemer: Redeemer, pool: PredictorPool | None = None, table: SessionTable | None = None
) -> InnerHandler:
    """``POST /v1/sessions``: a token, then the ClientHello relayed to an admitted predictor."""

    async def sessions(request: Request) -> Response:
        if not redeemer.has_keys:
            events.emit("gateway.inner_request", route="unavailable", status=503)
            return problem(503, "token issuer unavailable")
        try:
            await redeemer.redeem(request.header("authorization"))
        except TokenRefusedError:
            events.emit("gateway.inner_request", route="token_required", status=401)
            return Response(
                status=401,
                headers=(
                    ("www-authenticate", redeemer.www_authenticate()),
                    ("content-type", "application/problem+json"),
                    ("cache-control", "no-store"),
                ),
                content=b'{"title":"token required","type":"about:blank"}',
            )
        except UnavailableError:
            events.emit("gateway.inner_request", route="unavailable", status=503)
            return problem(503, "token redemption unavailable")
        if pool is None or table is None or not request.content:
            events.emit("gateway.inner_request", route="no_predictor", status=503)
            return problem(503, "no predictor available")
        try:
            target = table.pick(pool)
            session_id, records, closed = await pool.open(target, request.content)
        except UnavailableError:
            events.emit("gateway.inner_request", route="no_predictor", status=503)
            return problem(503, "no predictor available")
        handle = "" if closed else table.create(target, session_id)
        events.emit("gateway.inner_request", route="session_opened", status=201)
        return _records(201, records, (SESSION_HEADER, handle))

    return sessions


def session_continue_route(pool: PredictorPool, table: SessionTable) -> InnerHandler:
    """``POST /v1/sessions/{handle}``: the client's next TLS records, relayed unread."""

    async def resume(request: Request) -> Response:
        handle = request.path.split("?", 1)[0][len(SESSIONS_PREFIX) :]
        try:
            target, session_id = table.lookup(handle)
        except NotFoundError:
            events.emit("gateway.inner_request", route="not_found", status=404)
            return problem(404, "no such session")
        try:
            records, closed = await pool.resume(target, session_id, request.content)
        except (UnavailableError, NotFoundError):
            table.drop(handle)
            events.emit("gateway.inner_request", route="unavailable", status=503)
            return problem(503, "session lost")
        if closed:
            table.drop(handle)
        events.emit("gateway.inner_request", route="session_continued", status=200)
        return _records(200, records)

    return resume


def health_route(service_name: str) -> InnerHandler:
    async def health(_: Request) -> Response:
        events.emit("gateway.inner_request", route="health", status=200)
        return json_response(200, {"status": "serving", "service": service_name, "version": __version__})

    return health
