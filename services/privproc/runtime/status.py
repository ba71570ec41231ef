"""The one mapping of typed errors to gRPC and HTTP status, and of gRPC failures back to errors.

Errors (:mod:`privproc.errors`) name their failure by a transport-neutral
``reason``; how each reason is answered over gRPC and over HTTP is decided
here, once, in :data:`STATUS`. A reason not listed takes the status of the
nearest class it inherits from that declares a listed reason, down to
``internal`` (``INTERNAL`` / 500) for :class:`~privproc.errors.PrivprocError`
itself. Every server adapter (the gRPC interceptor, the aiohttp middleware,
the gateway's encapsulated answers) calls :func:`report` or
:func:`http_status`; every client of a privproc gRPC service rebuilds the
peer's typed error with :func:`error_from_rpc`.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc import aio

from privproc.errors import PrivprocError, error_from_status, exception_token, public_message

_Code = grpc.StatusCode

#: reason -> (gRPC status code, HTTP status), for every reason whose status differs from its parent's.
STATUS: dict[str, tuple[grpc.StatusCode, int]] = {
    "internal": (_Code.INTERNAL, 500),
    # wire formats and cryptography
    "malformed": (_Code.INVALID_ARGUMENT, 400),
    "too_large": (_Code.RESOURCE_EXHAUSTED, 413),
    "crypto": (_Code.INVALID_ARGUMENT, 400),
    "crypto_internal": (_Code.INTERNAL, 500),  # the native RSA operation failed: ours, not the peer's
    "ohttp_key": (_Code.FAILED_PRECONDITION, 400),  # RFC 9458 §5.3: fetch the key configuration again
    # service-level
    "bad_request": (_Code.INVALID_ARGUMENT, 400),
    "unsupported_media_type": (_Code.INVALID_ARGUMENT, 415),
    "not_found": (_Code.NOT_FOUND, 404),
    "unauthenticated": (_Code.UNAUTHENTICATED, 401),
    "permission_denied": (_Code.PERMISSION_DENIED, 403),
    "rate_limited": (_Code.RESOURCE_EXHAUSTED, 429),
    "upstream": (_Code.UNAVAILABLE, 502),
    "unavailable": (_Code.UNAVAILABLE, 503),
    "deadline_exceeded": (_Code.DEADLINE_EXCEEDED, 504),
    # client
    "wallet_empty": (_Code.FAILED_PRECONDITION, 409),
}

_INTERNAL = STATUS["internal"]


def _status(error: BaseException) -> tuple[grpc.StatusCode, int]:
    if not isinstance(error, PrivprocError):
        return _INTERNAL
    for cls in type(error).__mro__:
        reason = cls.__dict__.get("reason")
        if isinstance(reason, str) and reason in STATUS:
            return STATUS[reason]
    return _INTERNAL


def grpc_status(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and public message for ``error``.

    Anything that is not a :class:`~privproc.errors.PrivprocError` is an
    internal error whose text is not shown: it could carry data we never vetted.
    """
    if isinstance(error, PrivprocError):
        return _status(error)[0], public_message(error)
    return grpc.StatusCode.INTERNAL, "internal error"


def http_status(error: BaseException) -> int:
    """The HTTP status for ``error`` (500 for anything not ours)."""
    return _status(error)[1]


@dataclass(frozen=True)
class ErrorReport:
    """Everything an adapter needs to answer and log one failure, chosen here once."""

    #: The typed reason, or ``"internal"`` for anything that is not a :class:`~privproc.errors.PrivprocError`.
    reason: str
    #: The exception's class as an identifier (for internal errors' events).
    exception: str
    grpc_code: grpc.StatusCode
    #: Public ``reason: message`` text (``"internal error"`` for foreign exceptions).
    message: str
    http_status: int
    #: Whether this is one of ours (a refusal) or an internal failure.
    typed: bool


def report(error: BaseException) -> ErrorReport:
    """The one mapping of ``error`` to status, public text and loggable fields."""
    code, message = grpc_status(error)
    typed = isinstance(error, PrivprocError)
    return ErrorReport(
        reason=error.reason if isinstance(error, PrivprocError) else "internal",
        exception=exception_token(error),
        grpc_code=code,
        message=message,
        http_status=http_status(error),
        typed=typed,
    )


def error_from_rpc(err: aio.AioRpcError) -> PrivprocError:
    """The typed error a privproc gRPC peer answered with (its ``reason: text`` details).

    Rebuilt by reason only (:func:`~privproc.errors.error_from_status`), never
    from the status code, so the same answer is the same class in every process.
    """
    return error_from_status(err.details() or "")
