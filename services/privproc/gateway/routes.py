"""What the gateway answers inside the encapsulation: the inner HTTP resources.

The gateway is the target for its own origin (default ``privproc.local``).
Requests for any other authority are refused with 421: the gateway is not an
open proxy. Every answer from here on travels encapsulated, typed errors
included: the relay must not learn from a status what happened inside.

The resources: ``GET /v1/health``; ``POST /v1/sessions`` (a Privacy Pass
token and the client's TLS ClientHello: 401 with a challenge without an
acceptable token, else the ClientHello relayed to an admitted predictor and
its TLS flight answered with a session handle); ``POST /v1/sessions/{handle}``
(the client's next TLS records, relayed unread, and the predictor's answer).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from privproc import __version__, events
from privproc.errors import NotFoundError, PrivprocError, TokenRefusedError, UnavailableError
from privproc.gateway.redemption import CheckedToken, Redeemer
from privproc.gateway.sessions import PredictorPool, SessionTable
from privproc.runtime.status import http_status
from privproc.wire.bhttp import Request, Response
from privproc.wire.session import SESSION_HEADER, SESSIONS_PREFIX

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
            events.emit(events.GatewayInnerRequest(route="misdirected", status=421))
            return problem(421, "misdirected request")
        # The query string is not part of routing; nothing here takes one.
        path = request.path.split("?", 1)[0]
        methods = self._routes.get(path)
        if methods is None:
            methods = next(
                (m for p, m in self._prefixes.items() if path.startswith(p) and len(path) > len(p)), None
            )
        if methods is None:
            events.emit(events.GatewayInnerRequest(route="not_found", status=404))
            return problem(404, "not found")
        handler = methods.get(request.method)
        if handler is None:
            events.emit(events.GatewayInnerRequest(route="method_not_allowed", status=405))
            allowed = ", ".join(sorted(methods))
            return Response(status=405, headers=(("allow", allowed), ("cache-control", "no-store")))
        try:
            return await handler(request)
        except PrivprocError as err:
            # Decapsulated already: whatever went wrong is answered inside the encapsulation.
            events.emit(events.GatewayInnerRequest(route="failed", status=http_status(err)))
            return problem(http_status(err), "request failed")
        except Exception:
            # A bug, not a refusal: still encapsulated, and still counted.
            events.emit(events.GatewayInnerRequest(route="failed", status=500))
            return problem(500, "internal error")


def _records(status: int, records: bytes, *extra: tuple[str, str]) -> Response:
    headers = (("content-type", "application/octet-stream"), ("cache-control", "no-store"), *extra)
    return Response(status=status, headers=headers, content=records)


def _token_required(redeemer: Redeemer) -> Response:
    events.emit(events.GatewayInnerRequest(route="token_required", status=401))
    return Response(
        status=401,
        headers=(
            ("www-authenticate", redeemer.www_authenticate()),
            ("content-type", "application/problem+json"),
            ("cache-control", "no-store"),
        ),
        content=b'{"title":"token required","type":"about:blank"}',
    )


def _no_predictor() -> Response:
    events.emit(events.GatewayInnerRequest(route="no_predictor", status=503))
    return problem(503, "no predictor available")


def sessions_route(
    redeemer: Redeemer, pool: PredictorPool | None = None, table: SessionTable | None = None
) -> InnerHandler:
    """``POST /v1/sessions``: a token, then the ClientHello relayed to an admitted predictor.

    Order: check the token (genuine, unspent) → reserve a slot (a full table is
    known here) → a predictor opens the session → spend the token → the
    handle. Every refusal before the spend leaves the token valid; after it,
    nothing can fail. If the spend loses a race, the opened predictor session
    is abandoned (its handshake deadline drops it) and the client gets the
    401 challenge. While one request holds a checked token, the same token is
    refused (``in_flight``): a burst of one token opens one predictor session,
    not one per copy.
    """

    async def sessions(request: Request) -> Response:
        if not redeemer.has_keys:
            events.emit(events.GatewayInnerRequest(route="unavailable", status=503))
            return problem(503, "token issuer unavailable")
        try:
            checked = await redeemer.check(request.header("authorization"))
        except TokenRefusedError:
            return _token_required(redeemer)
        except UnavailableError:
            events.emit(events.GatewayInnerRequest(route="unavailable", status=503))
            return problem(503, "token redemption unavailable")
        try:
            return await _open_and_spend(request, checked, redeemer, pool, table)
        finally:
            redeemer.release(checked)  # unspent: usable again (a no-op once spent)

    return sessions


async def _open_and_spend(
    request: Request,
    checked: CheckedToken,
    redeemer: Redeemer,
    pool: PredictorPool | None,
    table: SessionTable | None,
) -> Response:
    """The rest of ``POST /v1/sessions`` once the token checked out: reserve, open, spend, handle."""
    if pool is None or table is None:
        return _no_predictor()
    if not request.content:
        events.emit(events.GatewayInnerRequest(route="bad_request", status=400))
        return problem(400, "no handshake records")
    tried: list[str] = []
    while True:
        try:
            reservation = table.reserve(pool, exclude=tried)
        except UnavailableError:
            return _no_predictor()
        try:
            session_id, records, closed = await pool.open(reservation.target, request.content)
        except UnavailableError:
            table.release(reservation)
            tried.append(reservation.target)  # busy or down: the next least-loaded one
            continue
        except BaseException:
            table.release(reservation)
            raise
        break
    try:
        await redeemer.spend(checked)
    except TokenRefusedError:
        table.release(reservation)
        return _token_required(redeemer)
    except UnavailableError:
        table.release(reservation)
        events.emit(events.GatewayInnerRequest(route="unavailable", status=503))
        return problem(503, "token redemption unavailable")
    except BaseException:
        table.release(reservation)
        raise
    if closed:
        table.release(reservation)
        handle = ""
    else:
        handle = table.commit(reservation, session_id)
    events.emit(events.GatewayInnerRequest(route="session_opened", status=201))
    return _records(201, records, (SESSION_HEADER, handle))


def session_continue_route(pool: PredictorPool, table: SessionTable) -> InnerHandler:
    """``POST /v1/sessions/{handle}``: the client's next TLS records, relayed unread.

    An empty body is refused before the handle is even looked up: it carries
    nothing to relay and must not count as activity.
    """

    async def resume(request: Request) -> Response:
        if not request.content:
            events.emit(events.GatewayInnerRequest(route="bad_request", status=400))
            return problem(400, "no records")
        handle = request.path.split("?", 1)[0][len(SESSIONS_PREFIX) :]
        try:
            target, session_id = table.begin(handle)
        except NotFoundError:
            events.emit(events.GatewayInnerRequest(route="not_found", status=404))
            return problem(404, "no such session")
        try:
            records, closed = await pool.resume(target, session_id, request.content)
        except (UnavailableError, NotFoundError):
            table.drop(handle)
            events.emit(events.GatewayInnerRequest(route="unavailable", status=503))
            return problem(503, "session lost")
        finally:
            table.end(handle)
        if closed:
            table.drop(handle)
        events.emit(events.GatewayInnerRequest(route="session_continued", status=200))
        return _records(200, records)

    return resume


def health_route(service_name: str) -> InnerHandler:
    async def health(_: Request) -> Response:
        events.emit(events.GatewayInnerRequest(route="health", status=200))
        return json_response(200, {"status": "serving", "service": service_name, "version": __version__})

    return health
