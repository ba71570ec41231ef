"""When a streamed answer's frames go out: sans-I/O, driven by the caller's clock.

A streamed answer (``ProcessRequest.stream``) is a sequence of
``ProcessChunk`` frames. Their timing must not spell out tokens, and a live
stream must never look idle to the hops that carry it, so:

- text goes out at most once per ``tick`` (0.1 s by default): whatever text
  arrived during a tick is coalesced into one frame; the first text frame
  goes out as soon as there is text;
- a padding frame (no text) goes out whenever nothing was sent for
  ``keepalive`` (1 s by default), counted from when the request was
  received, so queueing and prompt processing are covered too;
- the final frame goes out as soon as the answer is ready (the driver does
  not ask this class: it is always due).

:class:`Cadence` only decides; :func:`privproc.predictor.sessions` drives it
with a real clock, and tests with a fake one.
"""

from __future__ import annotations

DEFAULT_TICK_SECONDS = 0.1
DEFAULT_KEEPALIVE_SECONDS = 1.0


class Cadence:
    """Decides, at a given time, whether a text or padding frame is due (see the module docstring)."""

    def __init__(
        self,
        *,
        start: float,
        tick: float = DEFAULT_TICK_SECONDS,
        keepalive: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> None:
        if not 0 < tick <= keepalive:
            raise ValueError("the tick must be positive and at most the keepalive")
        self._tick = tick
        self._keepalive = keepalive
        self._last_sent = start
        self._last_text: float | None = None
        self._pending: list[str] = []

    @property
    def pending(self) -> str:
        """Text received and not yet sent."""
        return "".join(self._pending)

    def add(self, text: str) -> None:
        """Text to append to the answer (sent at the next tick)."""
        if text:
            self._pending.append(text)

    def due(self, now: float) -> str | None:
        """The frame's text to send now (``""``: a padding frame), or ``None`` for nothing yet.

        Call again after sending: at most one frame is due per call.
        """
        if self._pending and (self._last_text is None or now >= self._last_text + self._tick):
            text = self.pending
            self._pending.clear()
            self._last_text = self._last_sent = now
            return text
        if now >= self._last_sent + self._keepalive:
            self._last_sent = now
            return ""
        return None

    def next_due(self, now: float) -> float:
        """The earliest time a frame may be due, given the text pending now (at least ``now``)."""
        wake = self._last_sent + self._keepalive
        if self._pending:
            wake = min(wake, now if self._last_text is None else self._last_text + self._tick)
        return max(now, wake)


__all__ = ["DEFAULT_KEEPALIVE_SECONDS", "DEFAULT_TICK_SECONDS", "Cadence"]
