"""What the gateway answers inside the encapsulation: the inner HTTP resources.

The gateway is the target for its own origin (default ``privproc.local``).
Requests for any other authority are refused with 421: the gateway is not an
open proxy. Every answer from here on travels encapsulated, typed errors
included: the relay must not learn from a status what happened inside.

The resources: ``GET /v1/health``; ``POST /v1/sessions`` (a Privacy Pass
token and the client's TLS ClientHello: 401 with a challenge without an
acceptable token, else the ClientHello relayed to an admitted predictor and
its TLS flight answered with a session handle); ``POST /v1/sessions/{handle}``
(the client's next TLS records, relayed unread, and the predictor's records
streamed back as they come: a :class:`StreamingResponse`).

**One deadline.** Each session request carries its remaining budget in
``privproc-timeout-ms`` (:data:`~privproc.wire.session.TIMEOUT_HEADER`;
without one, :attr:`RouteLimits.max_request_seconds`); it is read strictly (a
malformed one is answered 400), capped at ``max_request_seconds``, and it is
the gRPC deadline of ``OpenSession`` and ``StreamSession``. When it passes
before the answer starts, the answer is 504 ``deadline exceeded``; after,
the stream is cut (see :mod:`privproc.gateway.core`). A stream from the
predictor that sends nothing for ``idle_seconds`` is cancelled: a live one
sends a padding frame every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from privproc import __version__, events
from privproc.errors import (
    DeadlineExceededError,
    NotFoundError,
    PrivprocError,
    TokenRefusedError,
    UnavailableError,
)
from privproc.gateway.redemption import CheckedToken, Redeemer
from privproc.gateway.sessions import PredictorPool, SessionTable
from privproc.runtime.status import http_status
from privproc.wire.bhttp import Fields, Request, Response
from privproc.wire.session import (
    SESSION_HEADER,
    SESSIONS_PREFIX,
    TIMEOUT_HEADER,
    TimeoutFieldError,
    parse_timeout,
)


@dataclass(frozen=True)
class StreamingResponse:
    """An answer whose content is produced as it goes: status and headers now, content pieces later.

    ``pieces`` is an async generator already started (whatever could fail
    before the answer starts has been answered with a status instead);
    whoever takes the answer reads it to its end or closes it. It raises a
    typed error if the content fails midway: there is no status left to give
    then, and the answer must end visibly incomplete.
    """

    status: int
    headers: Fields
    pieces: AsyncGenerator[bytes, None]


#: What a route answers.
Answer = Response | StreamingResponse
InnerHandler = Callable[[Request], Awaitable[Answer]]


@dataclass(frozen=True)
class RouteLimits:
    """The session routes' time limits (the gateway's ``max_request_seconds`` and ``idle_seconds``)."""

    #: A request's budget when it names none, and the most it may name.
    max_request_seconds: float = 120.0
    #: A predictor stream silent this long is cancelled.
    idle_seconds: float = 30.0

    def __post_init__(self) -> None:
        if min(self.max_request_seconds, self.idle_seconds) <= 0:
            raise ValueError("route limits must be positive")

    def deadline(self, request: Request) -> float:
        """The request's deadline on :func:`time.monotonic`, from its timeout header (capped).

        Raises :class:`~privproc.wire.session.TimeoutFieldError` for a malformed header.
        """
        value = request.header(TIMEOUT_HEADER)
        seconds = self.max_request_seconds if value is None else parse_timeout(value)
        return time.monotonic() + min(seconds, self.max_request_seconds)


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

    async def dispatch(self, request: Request) -> Answer:
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
    return Response(status=status, headers=(*_RECORDS_HEADERS, *extra), content=records)


def stream_failure(error: PrivprocError) -> Response:
    """The answer of a session stream that failed before its first byte went out: 504 when the
    deadline passed, else 503 (the route counts it; ``GatewayCore.handle`` answers a whole
    message with it too)."""
    if isinstance(error, DeadlineExceededError):
        return problem(504, "deadline exceeded")
    return problem(503, "session lost")


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


def _deadline_exceeded() -> Response:
    events.emit(events.GatewayInnerRequest(route="deadline_exceeded", status=504))
    return stream_failure(DeadlineExceededError("deadline exceeded"))


def _bad_deadline() -> Response:
    events.emit(events.GatewayInnerRequest(route="bad_request", status=400))
    return problem(400, "malformed timeout")


def sessions_route(
    redeemer: Redeemer,
    pool: PredictorPool | None = None,
    table: SessionTable | None = None,
    limits: RouteLimits | None = None,
) -> InnerHandler:
    """``POST /v1/sessions``: a token, then the ClientHello relayed to an admitted predictor.

    Order: check the token (genuine, unspent) → reserve a slot (a full table is
    known here) → a predictor opens the session → spend the token → the
    handle. Every refusal before the spend leaves the token valid; after it,
    nothing can fail. If the spend loses a race, the opened predictor session
    is abandoned (its handshake deadline drops it) and the client gets the
    401 challenge. While one request holds a checked token, the same token is
    refused (``in_flight``): a burst of one token opens one predictor session,
    not one per copy. The request's deadline bounds the whole of it: when it
    passes before the predictor opened the session, the answer is 504 and
    the token is not spent.
    """
    limits = limits or RouteLimits()

    async def sessions(request: Request) -> Response:
        try:
            deadline = limits.deadline(request)
        except TimeoutFieldError:
            return _bad_deadline()
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
            return await _open_and_spend(request, checked, redeemer, pool, table, deadline=deadline)
        finally:
            redeemer.release(checked)  # unspent: usable again (a no-op once spent)

    return sessions


async def _open_and_spend(
    request: Request,
    checked: CheckedToken,
    redeemer: Redeemer,
    pool: PredictorPool | None,
    table: SessionTable | None,
    *,
    deadline: float,
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
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            table.release(reservation)
            return _deadline_exceeded()
        try:
            session_id, records, closed = await pool.open(
                reservation.target, request.content, timeout_seconds=remaining
            )
        except DeadlineExceededError:
            table.release(reservation)
            return _deadline_exceeded()
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


def session_continue_route(
    pool: PredictorPool, table: SessionTable, limits: RouteLimits | None = None
) -> InnerHandler:
    """``POST /v1/sessions/{handle}``: the client's next TLS records, relayed unread; the
    predictor's records streamed back as they come (``StreamSession``).

    An empty body is refused before the handle is even looked up: it carries
    nothing to relay and must not count as activity. Failures before the
    predictor's first records are answered with a status (504 when the
    deadline passed, 503 when the session is lost); after, the stream raises.
    """
    limits = limits or RouteLimits()

    async def resume(request: Request) -> Answer:
        if not request.content:
            events.emit(events.GatewayInnerRequest(route="bad_request", status=400))
            return problem(400, "no records")
        try:
            deadline = limits.deadline(request)
        except TimeoutFieldError:
            return _bad_deadline()
        handle = request.path.split("?", 1)[0][len(SESSIONS_PREFIX) :]
        try:
            target, session_id = table.begin(handle)
        except NotFoundError:
            events.emit(events.GatewayInnerRequest(route="not_found", status=404))
            return problem(404, "no such session")
        records = _session_records(
            pool,
            table,
            handle=handle,
            target=target,
            session_id=session_id,
            records=request.content,
            deadline=deadline,
            idle_seconds=limits.idle_seconds,
        )
        try:
            first = await anext(records)
        except DeadlineExceededError:
            return _deadline_exceeded()
        except StopAsyncIteration:
            # The predictor took the records and has nothing to send yet (a handshake split
            # across requests): the session stays open, and the answer is empty, as it was whole.
            events.emit(events.GatewayInnerRequest(route="session_continued", status=200))
            return _records(200, b"")
        except (UnavailableError, NotFoundError) as err:
            events.emit(events.GatewayInnerRequest(route="unavailable", status=503))
            return stream_failure(err)
        events.emit(events.GatewayInnerRequest(route="session_continued", status=200))
        return StreamingResponse(200, _RECORDS_HEADERS, _prepended(first, records))

    return resume


_RECORDS_HEADERS: Fields = (("content-type", "application/octet-stream"), ("cache-control", "no-store"))


async def _prepended(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    async with contextlib.aclosing(rest):
        yield first
        async for piece in rest:
            yield piece


async def _session_records(
    pool: PredictorPool,
    table: SessionTable,
    *,
    handle: str,
    target: str,
    session_id: bytes,
    records: bytes,
    deadline: float,
    idle_seconds: float,
) -> AsyncGenerator[bytes, None]:
    """The predictor's records of one continuation, each batch as it comes (never an empty one).

    Ends once the predictor closed the session (the route is dropped) or its
    stream ended with the session still open. Raises
    :class:`~privproc.errors.DeadlineExceededError` when the deadline passes,
    :class:`~privproc.errors.UnavailableError` when the predictor fails or
    sends nothing for ``idle_seconds``. Each outcome is a
    ``gateway.session_stream`` event.
    """
    outcome = "cancelled"
    closed = False
    try:
        call = pool.stream(
            target, session_id, records, timeout_seconds=max(deadline - time.monotonic(), 0.001)
        )
        async with contextlib.aclosing(call):
            while not closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceededError("deadline exceeded")
                try:
                    async with asyncio.timeout(min(idle_seconds, remaining)):
                        item = await anext(call, None)
                except TimeoutError:
                    if deadline <= time.monotonic():
                        raise DeadlineExceededError("deadline exceeded") from None
                    outcome = "idle"
                    raise UnavailableError("predictor idle") from None
                if item is None:
                    break
                batch, closed = item
                if batch:
                    yield batch
        outcome = "closed" if closed else "open"
    except DeadlineExceededError:
        outcome = "deadline"
        raise
    except (UnavailableError, NotFoundError):
        outcome = "idle" if outcome == "idle" else "lost"
        raise
    finally:
        table.end(handle)
        if outcome != "open":
            table.drop(handle)  # closed, or unusable: a failed stream leaves no usable session
        events.emit(events.GatewaySessionStream(outcome=outcome))


def health_route(service_name: str) -> InnerHandler:
    async def health(_: Request) -> Response:
        events.emit(events.GatewayInnerRequest(route="health", status=200))
        return json_response(200, {"status": "serving", "service": service_name, "version": __version__})

    return health
