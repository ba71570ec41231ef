"""Typed errors of privproc, transport-neutral: each names its failure by a ``reason``.

Every failure the stack can report is a subclass of :class:`PrivprocError`.
A class declares a stable, machine-readable ``reason``; nothing here knows
gRPC or HTTP exists. The one mapping of reasons to gRPC and HTTP status is
:mod:`privproc.runtime.status`, which every server adapter and the client
use; a peer's ``reason: text`` answer is rebuilt into the one class of its
reason by :func:`error_from_status`.

Messages are fixed, public strings chosen by the raiser. They must never
contain message content, tokens, keys or client addresses: exception text
ends up in logs and in answers to untrusted peers.
"""

from __future__ import annotations

import re
from typing import ClassVar

#: What a reason (and an exception token) must look like: it goes into events and peers' answers.
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_NOT_TOKEN = re.compile(r"[^a-z0-9_]")


class PrivprocError(Exception):
    """Root of every error privproc raises on purpose."""

    #: Stable, machine-readable reason, used in logs, error bodies and status mapping.
    reason: ClassVar[str] = "internal"
    #: RFC 9457 problem type URI for HTTP answers (``None``: ``about:blank``).
    problem_type: ClassVar[str | None] = None

    _by_reason: ClassVar[dict[str, type[PrivprocError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # One class per reason, whatever was imported first: only a class that
        # declares a reason of its own stands for it (a subclass that merely
        # inherits its parent's reason decodes as the parent), and a second
        # class declaring a reason already taken is refused when it is defined.
        if "reason" not in cls.__dict__:
            return
        if not isinstance(cls.reason, str) or not _REASON.match(cls.reason):
            raise TypeError(f"{cls.__qualname__}: a reason is a short lowercase identifier")
        taken = PrivprocError._by_reason.get(cls.reason)
        if taken is not None and _qualified(taken) != _qualified(cls):
            raise TypeError(f"reason {cls.reason!r} is already {_qualified(taken)}'s")
        # The same class defined again (a module reloaded) replaces itself.
        PrivprocError._by_reason[cls.reason] = cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --- wire formats ---------------------------------------------------------


class WireError(PrivprocError):
    """Bytes that do not parse as the format they claim to be."""

    reason = "malformed"


class TruncatedError(WireError):
    """The input ended before the structure it encodes was complete."""

    reason = "truncated"


class LimitExceededError(WireError):
    """The input is well formed so far but exceeds a configured bound."""

    reason = "too_large"


class CryptoError(PrivprocError):
    """A cryptographic operation failed (authentication, decryption, key)."""

    reason = "crypto"


# --- service-level --------------------------------------------------------


class BadRequestError(PrivprocError):
    """A request a service understood and refuses (wrong method, type, field)."""

    reason = "bad_request"


class UnsupportedMediaTypeError(BadRequestError):
    reason = "unsupported_media_type"


class NotFoundError(PrivprocError):
    reason = "not_found"


class UnauthenticatedError(PrivprocError):
    reason = "unauthenticated"


class TokenRefusedError(UnauthenticatedError):
    """No acceptable Privacy Pass token (the gateway answers 401 with a challenge)."""

    reason = "token_refused"


class PermissionDeniedError(PrivprocError):
    reason = "permission_denied"


class RateLimitedError(PrivprocError):
    reason = "rate_limited"


class UpstreamError(PrivprocError):
    """A service this one depends on failed or could not be reached."""

    reason = "upstream"


class UnavailableError(PrivprocError):
    reason = "unavailable"


class DeadlineExceededError(PrivprocError):
    """The request's deadline passed before its answer was complete (the message names the
    deadline: it is the client's own setting, never content)."""

    reason = "deadline_exceeded"


class ConfigError(PrivprocError):
    """The stack is configured in a way that cannot work (start-up only)."""

    reason = "config"


def registered(reason: str) -> type[PrivprocError] | None:
    """The one class that stands for ``reason`` (``None`` if no class declares it)."""
    return PrivprocError._by_reason.get(reason)


def exception_token(error: BaseException) -> str:
    """The class name of ``error`` reduced to an event identifier (never its text).

    ``_InactiveRpcError`` becomes ``inactiverpcerror``: lowercase letters,
    digits and underscores, no leading underscore, at most 64 characters.
    """
    token = _NOT_TOKEN.sub("", type(error).__name__.lower()).lstrip("_0123456789")[:64]
    return token or "exception"


def error_from_status(message: str) -> PrivprocError:
    """Rebuild the typed error a privproc peer reported as ``reason: text``.

    Used where one privproc service relays another's failure (the relay
    passing on the gateway's answer), so the status is mapped once, here,
    instead of being re-derived from gRPC codes. Unknown reasons become an
    :class:`UpstreamError`.
    """
    reason, _, text = message.partition(": ")
    # The peer's text is relayed, so keep it short and printable.
    text = "".join(ch for ch in text[:200] if ch.isprintable())
    cls = PrivprocError._by_reason.get(reason)
    if cls is None:
        return UpstreamError("upstream failed")
    try:
        return cls(text)
    except Exception:  # a class whose constructor wants more than a message
        return UpstreamError("upstream failed")


def public_message(error: PrivprocError) -> str:
    """The text of ``error`` that may be shown to a peer: ``reason: message``."""
    text = str(error)
    return f"{error.reason}: {text}" if text else error.reason
