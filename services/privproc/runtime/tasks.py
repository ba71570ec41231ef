"""Supervised background tasks: nothing dies silently.

Every background loop of a service (key rotation, publishing, admission,
certificate renewal) runs under :func:`supervise`. When its body raises,
the supervisor emits ``task.failed`` (the task's name and the error's
reason, never its text) and starts the body again after an exponential
backoff. Cancelling the task stops it.

An error that retrying cannot fix (:class:`~privproc.errors.ConfigError`,
e.g. a publisher credential the CDN refuses) is fatal: the supervisor
emits ``task.fatal`` and asks the process to stop with a non-zero exit
status through the handler installed by :func:`privproc.runtime.lifecycle.run`
(see :func:`fatal_handler`). Without a handler (a service embedded in a
test) the task ends with the error, so ``task.result()`` still reports it.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Awaitable, Callable

from privproc import events
from privproc.errors import ConfigError
from privproc.runtime.status import report

#: Called with the task's name when a supervised task cannot go on.
FatalHandler = Callable[[str], None]

_FATAL_HANDLER: contextvars.ContextVar[FatalHandler | None] = contextvars.ContextVar(
    "privproc_fatal_handler", default=None
)

_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")

#: Attempts after which the counter stays put (the event field's bound).
_MAX_ATTEMPT = 10**6


def fatal_handler(handler: FatalHandler | None) -> contextvars.Token[FatalHandler | None]:
    """Install ``handler`` for tasks supervised from this context on.

    Tasks copy the context they are created in, so a handler installed
    before a service starts reaches every task the service supervises.
    """
    return _FATAL_HANDLER.set(handler)


def is_fatal(error: BaseException) -> bool:
    """Errors that a retry cannot fix: the configuration itself is wrong."""
    return isinstance(error, ConfigError)


def supervise(
    name: str,
    body: Callable[[], Awaitable[None]],
    *,
    backoff_seconds: float = 1.0,
    max_backoff_seconds: float = 60.0,
) -> asyncio.Task[None]:
    """Run ``body`` (normally a loop) as a task that logs and restarts on failure.

    ``name`` is a short identifier (lowercase letters, digits, dots and
    underscores) that appears in the events. If ``body`` returns, the task
    ends. If it raises, ``task.failed`` is emitted and ``body`` is called
    again after ``backoff_seconds``, doubling up to ``max_backoff_seconds``;
    a body that ran longer than ``max_backoff_seconds`` before failing
    starts again from the shortest backoff. A fatal error (see
    :func:`is_fatal`) emits ``task.fatal`` and calls the installed fatal
    handler instead of retrying. Cancelling the returned task stops it.
    """
    if not _NAME.match(name):
        raise ValueError("task names are short lowercase identifiers")
    if backoff_seconds <= 0 or max_backoff_seconds < backoff_seconds:
        raise ValueError("backoff must be positive and at most its maximum")
    return asyncio.create_task(
        _run(name, body, backoff_seconds, max_backoff_seconds), name=f"privproc.{name}"
    )


async def _run(
    name: str, body: Callable[[], Awaitable[None]], backoff_seconds: float, max_backoff_seconds: float
) -> None:
    loop = asyncio.get_running_loop()
    attempt = 0
    delay = backoff_seconds
    while True:
        started = loop.time()
        try:
            await body()
            return
        except asyncio.CancelledError:
            raise
        except Exception as err:
            failure = report(err)
            if is_fatal(err):
                events.emit(events.TaskFatal(task=name, reason=failure.reason, exception=failure.exception))
                handler = _FATAL_HANDLER.get()
                if handler is None:
                    raise
                handler(name)
                return
            if loop.time() - started > max_backoff_seconds:
                # It ran well for a while: this is a new failure, not the same one again.
                attempt, delay = 0, backoff_seconds
            attempt = min(attempt + 1, _MAX_ATTEMPT)
            events.emit(
                events.TaskFailed(
                    task=name,
                    reason=failure.reason,
                    exception=failure.exception,
                    attempt=attempt,
                    backoff_millis=min(int(delay * 1000), 10**9),
                )
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff_seconds)
