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
from privproc.errors import TokenRefusedError, UnavailableError
from privproc.gateway.redemption import Redeemer
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

    def add(self, method: str, path: str, handler: InnerHandler) -> None:
        self._routes.setdefault(path, {})[method] = handler

    async def dispatch(self, request: Request) -> Response:
        if request.scheme != "https" or request.authority.lower() != self.origin:
            events.emit("gateway.inner_request", route="misdirected", status=421)
            return problem(421, "misdirected request")
        # The query string is not part of routing; nothing here takes one.
        path = request.path.split("?", 1)[0]
        methods = self._routes.get(path)
        if methods is None:
            events.emit("gateway.inner_request", route="not_found", status=404)
            return problem(404, "not found")
        handler = methods.get(request.method)
        if handler is None:
            events.emit("gateway.inner_request", route="method_not_allowed", status=405)
            allowed = ", ".join(sorted(methods))
            return Response(status=405, headers=(("allow", allowed), ("cache-control", "no-store")))
        return await handler(request)


def sessions_route(redeemer: Redeemer) -> InnerHandler:
    """``POST /v1/sessions``: a token first; sessions themselves arrive with the predictor."""

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
        events.emit("gateway.inner_request", route="no_predictor", status=503)
        return problem(503, "no predictor available")

    return sessions


def health_route(service_name: str) -> InnerHandler:
    async def health(_: Request) -> Response:
        events.emit("gateway.inner_request", route="health", status=200)
        return json_response(200, {"status": "serving", "service": service_name, "version": __version__})

    return health
