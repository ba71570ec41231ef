"""The emitting side of the log sidecar: events go to a bounded queue, a thread writes them out.

:class:`LogSink` never blocks the code that emits: :meth:`LogSink.offer` appends to a queue of
at most ``capacity`` events, or drops the event (counted) when the queue is full. A writer
thread connects to the sidecar's Unix socket, frames the queued events
(:mod:`privproc.wire.logrecord`) and sends them. When the sidecar cannot be reached the thread
reports it once through the process's fallback log (``log_sink.unavailable``), keeps trying
with a doubling backoff, and the events that pile up meanwhile are dropped, counted. Every
event offered is, in the end, exactly one of: sent, dropped (queue full), or lost (the
connection failed while it was being sent, or the sink closed before it could be sent).

Install it with :func:`install` so that :func:`privproc.events.emit` routes to it, or with
:func:`route_process_to_sidecar` to make the sidecar the process's only log path (the CVM).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from privproc import events
from privproc.errors import exception_token
from privproc.runtime import quiet
from privproc.wire import logrecord


@dataclass(frozen=True)
class SinkCounts:
    """What became of the events offered so far."""

    offered: int
    sent: int
    #: Refused at :meth:`LogSink.offer`: the queue was full.
    dropped: int
    #: Taken from the queue but not sent: the connection failed, or the sink closed first.
    lost: int
    #: Events waiting in the queue.
    queued: int


class LogSink:
    """A non-blocking, bounded route from this process's events to its log sidecar."""

    def __init__(
        self,
        socket_path: Path,
        *,
        capacity: int = 10_000,
        backoff_seconds: float = 0.05,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        if capacity < 1 or backoff_seconds <= 0 or max_backoff_seconds < backoff_seconds:
            raise ValueError("capacity and backoff must be positive")
        self.socket_path = socket_path
        self.capacity = capacity
        self._backoff = (backoff_seconds, max_backoff_seconds)
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, Mapping[str, object]]] = deque()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._offered = 0
        self._dropped = 0
        self._sent = 0
        self._lost = 0
        #: The largest queue length seen (a test checks it never passes the capacity).
        self.max_queued = 0
        self._thread = threading.Thread(target=self._write_forever, name="privproc-logsink", daemon=True)

    def start(self) -> LogSink:
        self._thread.start()
        return self

    def offer(self, name: str, values: Mapping[str, object]) -> bool:
        """Queue one event (already checked by the registry); False when the queue is full."""
        with self._lock:
            self._offered += 1
            if len(self._queue) >= self.capacity:
                self._dropped += 1
                return False
            self._queue.append((name, values))
            length = len(self._queue)
            self.max_queued = max(self.max_queued, length)
        if length == 1:
            self._wake.set()
        return True

    def __call__(self, spec: events.EventSpec, values: Mapping[str, object]) -> bool:
        """The :data:`privproc.events.Sink` hook: every event but the writer thread's own."""
        if threading.current_thread() is self._thread:
            return False  # the writer reports through the fallback log, not to itself
        self.offer(spec.name, values)
        return True

    def counts(self) -> SinkCounts:
        with self._lock:
            return SinkCounts(self._offered, self._sent, self._dropped, self._lost, len(self._queue))

    def close(self, timeout: float = 5.0) -> SinkCounts:
        """Send what is queued (if the sidecar is reachable), then stop the writer thread.

        Whatever is still queued when it stops is counted as lost.
        """
        self._closing.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            if not self._thread.is_alive():
                self._lost += len(self._queue)
                self._queue.clear()
        return self.counts()

    # --- the writer thread ---------------------------------------------------------------

    def _take(self) -> list[tuple[str, Mapping[str, object]]]:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
        return batch

    def _write_forever(self) -> None:
        delay, max_delay = self._backoff
        connection: socket.socket | None = None
        reported = False
        while True:
            if connection is None:
                candidate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    candidate.connect(str(self.socket_path))
                except OSError as err:
                    candidate.close()
                    if not reported:
                        events.emit(events.LogSinkUnavailable(reason=exception_token(err)))
                        reported = True
                    if self._closing.is_set():
                        return  # that was the last attempt: close() counts the queue as lost
                    self._closing.wait(delay)
                    delay = min(delay * 2, max_delay)
                    continue
                connection = candidate
                delay, reported = self._backoff[0], False
            self._wake.wait(0.1)
            self._wake.clear()
            batch = self._take()
            if not batch:
                if self._closing.is_set():
                    connection.close()
                    return
                continue
            frames = bytearray()
            unframed = 0
            for name, values in batch:
                try:
                    frames += logrecord.encode(name, values)
                except (logrecord.LogRecordError, TypeError, ValueError):
                    unframed += 1
            try:
                connection.sendall(frames)
            except OSError:
                connection.close()
                connection = None
                with self._lock:
                    self._lost += len(batch)
                continue
            with self._lock:
                self._sent += len(batch) - unframed
                self._lost += unframed


_INSTALLED: list[LogSink | None] = [None]


def install(socket_path: Path, *, capacity: int = 10_000) -> LogSink:
    """Start a :class:`LogSink` to ``socket_path`` and route this process's events to it."""
    sink = LogSink(socket_path, capacity=capacity).start()
    events.install_sink(sink)
    _INSTALLED[0] = sink
    return sink


def installed() -> LogSink | None:
    """The sink :func:`install` routed this process's events to, if any (its counts are reported)."""
    return _INSTALLED[0]


def route_process_to_sidecar(socket_path: Path, *, capacity: int = 10_000) -> LogSink:
    """Make the sidecar at ``socket_path`` this process's only log path (the CVM's predictor).

    Call it once the process knows its socket and before it builds anything that could log:
    every event goes to the sink from then on, and :func:`privproc.runtime.quiet.silence_process`
    closes stderr for everything else. The events logger's own output — the fallback a sink
    uses when it cannot reach its sidecar (``log_sink.unavailable``) — is dropped and counted
    too, never written: while the sidecar is unreachable events wait in the bounded queue, then
    are dropped, counted by the sink (:meth:`LogSink.counts`). Close the sink on the way out
    (:meth:`LogSink.close`) to send what is queued.
    """
    # Closed first: the sink's thread may report the sidecar unreachable at once, through the
    # events logger's handler, which must already be the one that drops.
    quiet.silence_process()
    logging.getLogger("privproc").handlers[:] = [quiet.DROP]
    return install(socket_path, capacity=capacity)


def emit_totals() -> None:
    """Emit ``log_sink.totals`` if this process routes its events to a sink (on a reporting tick).

    Since the sink started: events offered, sent, dropped, lost, and other output silenced
    (:data:`privproc.runtime.quiet.SILENCED`). Emitted through the sink itself: while the sidecar
    is unreachable it is dropped with the rest, and the next one that gets through has the count.
    """
    sink = installed()
    if sink is None:
        return
    counts = sink.counts()
    events.emit(
        events.LogSinkTotals(
            offered=counts.offered,
            sent=counts.sent,
            dropped=counts.dropped,
            lost=counts.lost,
            silenced=quiet.SILENCED.total(),
        )
    )
