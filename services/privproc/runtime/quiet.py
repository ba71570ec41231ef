"""Nothing of a process reaches its stderr: every library's output channel closed, what was dropped counted.

The CVM's predictor has one log path, its log sidecar (:mod:`privproc.runtime.logsink`). Its
stderr is the other way out of the CVM — a container runtime collects it — and everything a
library writes there is free text: a traceback quotes the exception's message (a tokenizer's
error can quote the input), a warning its argument, gRPC's core the peer it talked to, a
progress bar the item it is on. :func:`silence_process` closes each channel deliberately, one
by one, so that nothing even tries, and then points file descriptor 2 at ``/dev/null`` as the
backstop for what no Python setting reaches (C and C++ code writing to fd 2 directly). What it
drops is counted (:data:`SILENCED`, by channel; never its content).

It is for a process whose events go to a sidecar; before it runs, start-up failures reach
stderr as usual (the sidecar's socket may be wrong, say).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import warnings
from collections import Counter
from types import TracebackType
from typing import Any, Literal

#: What was dropped: a write to ``sys.stderr``, a library's log record, a warning, an exception
#: no one caught (a thread's, an unraisable one, the main thread's).
Channel = Literal["stderr", "logging", "warnings", "uncaught"]
CHANNELS: tuple[Channel, ...] = ("stderr", "logging", "warnings", "uncaught")

#: Environment read by libraries when they initialise (set for code that starts later, and for
#: any child process).
QUIET_ENVIRONMENT = {
    # gRPC's C core logs connection failures with peer addresses, and TLS errors, straight to
    # fd 2; GRPC_TRACE would add per-call traces.
    "GRPC_VERBOSITY": "NONE",
    "GRPC_TRACE": "",
    # absl (gRPC's logging since 1.6x) writes "WARNING: All log messages before absl::InitializeLog()"
    # and the like to fd 2 unless told to keep quiet.
    "ABSL_MIN_LOG_LEVEL": "3",
    # tqdm progress bars (transformers converting a GGUF model, hub downloads) draw on stderr.
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # transformers adds its own stderr handler to its logger; its advisory warnings quote
    # generation settings and inputs' shapes.
    "TRANSFORMERS_VERBOSITY": "critical",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # torch's C++ warnings (TORCH_WARN) go to fd 2.
    "TORCH_CPP_LOG_LEVEL": "FATAL",
    # Python warnings in any child interpreter.
    "PYTHONWARNINGS": "ignore",
}


class _Counts:
    """Dropped output by channel; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, channel: Channel) -> None:
        with self._lock:
            self._counts[channel] += 1

    def snapshot(self) -> dict[Channel, int]:
        with self._lock:
            return {channel: self._counts[channel] for channel in CHANNELS}

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


#: What :func:`silence_process` dropped since it ran.
SILENCED = _Counts()


class _NullStderr(io.TextIOBase):
    """A ``sys.stderr`` that keeps nothing: each write is counted, its text discarded."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            SILENCED.add("stderr")
        return len(text)

    def isatty(self) -> bool:
        return False  # so that no library thinks it may draw (progress bars, colours)


class _DropHandler(logging.Handler):
    """A logging handler that counts each record and formats nothing of it."""

    def emit(self, record: logging.LogRecord) -> None:
        SILENCED.add("logging")

    def handleError(self, record: logging.LogRecord) -> None:  # never print a logging error
        SILENCED.add("logging")


def _drop_warning(*args: Any, **kwargs: Any) -> None:
    SILENCED.add("warnings")


def _drop_exception(*args: Any, **kwargs: Any) -> None:
    SILENCED.add("uncaught")


def _drop_main_exception(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    SILENCED.add("uncaught")


#: The handler every library logger ends at once :func:`silence_process` ran.
DROP = _DropHandler()
_SILENCED = [False]


def silence_process() -> None:
    """Close every way this process has to write to stderr, for the rest of its life.

    Idempotent. The ``privproc.events`` logger is left alone (its handler is set by the
    caller); every other logger, the warnings machinery, the exception hooks, ``sys.stderr``
    and file descriptor 2 are closed here, each with why.
    """
    os.environ.update(QUIET_ENVIRONMENT)
    # Warnings: free text, and their default display writes the source line. Ignore them all,
    # and should a library turn one back on with its own filter, drop it at display too.
    warnings.simplefilter("ignore")
    warnings.showwarning = _drop_warning
    logging.captureWarnings(False)
    # Uncaught exceptions: the default hooks print a traceback, exception text included.
    # (asyncio's "Task exception was never retrieved" is a log record of the asyncio logger,
    # dropped below.)
    sys.excepthook = _drop_main_exception
    threading.excepthook = _drop_exception
    sys.unraisablehook = _drop_exception
    # Text writes to sys.stderr (print(file=sys.stderr), tqdm, the traceback module, handlers
    # created from now on with StreamHandler()).
    null = _NullStderr()
    sys.stderr = null
    vars(sys)["__stderr__"] = null  # some libraries write to the original stream deliberately
    # Logging: every library logger's own handlers go (transformers adds a stderr handler to
    # its logger; huggingface_hub, torch, grpc, asyncio, aiohttp log through the root), the
    # root's only handler counts and drops, and the last-resort handler (used for a logger
    # with no handler at all) too.
    root = logging.getLogger()
    root.handlers[:] = [DROP]
    logging.lastResort = DROP
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and not name.startswith("privproc"):
            logger.handlers[:] = []  # with none left, a record ends at the root's or the last resort
    # Libraries imported after this may still add a handler of their own; it writes to the
    # null sys.stderr above, or (opening fd 2 itself) to /dev/null below.
    _transformers_quiet()
    # The backstop: C and C++ code (gRPC core, torch, tokenizers, llama.cpp-style converters)
    # writes to fd 2 directly, whatever Python says.
    if not _SILENCED[0]:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        _SILENCED[0] = True


def _transformers_quiet() -> None:
    """If transformers is loaded already, its own verbosity and progress bars (it read the env early)."""
    module = sys.modules.get("transformers.utils.logging")
    if module is None:
        return
    module.set_verbosity(logging.CRITICAL)
    module.disable_progress_bar()
    logging.getLogger("transformers").handlers[:] = []


__all__ = ["CHANNELS", "DROP", "QUIET_ENVIRONMENT", "SILENCED", "Channel", "silence_process"]
