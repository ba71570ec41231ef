"""The sidecar's filter — sans-I/O: framed bytes in, allowed events out, every drop counted.

A record gets out only if it is a well-formed record (:mod:`privproc.wire.logrecord`) that
:func:`privproc.events.rejection` — the registry's one allow-list check — does not reject.
What gets out is rebuilt from the parsed values, never the bytes received.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, get_args

from privproc import events
from privproc.wire import logrecord

#: Why a record was dropped: over the size bound, not a well-formed record, or the allow-list's
#: reason (:data:`privproc.events.Rejection`).
DropReason = Literal["oversize", "malformed", "undeclared", "fields", "value"]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)


@dataclass(frozen=True)
class Accepted:
    """An allowed event: its declared name and its checked values."""

    name: str
    fields: dict[str, logrecord.Scalar]


def check(body: bytes) -> Accepted | DropReason:
    """The allowed event in one record body, or why it is dropped."""
    try:
        name, fields = logrecord.parse(body)
    except logrecord.LogRecordError:
        return "malformed"
    refused = events.rejection(name, fields)
    if refused is not None:
        return refused
    return Accepted(name, fields)


@dataclass
class Totals:
    """Records let through and dropped (by reason) since the sidecar started."""

    accepted: int = 0
    dropped: Counter[DropReason] = field(default_factory=Counter)

    def counts(self) -> dict[str, int]:
        """The totals as the fields of ``sidecar.dropped`` (each capped at its field's bound)."""
        cap = events.SidecarDropped.spec.fields["accepted"].max_value
        totals: dict[str, int] = {"accepted": self.accepted}
        totals.update((reason, self.dropped[reason]) for reason in DROP_REASONS)
        return {name: min(count, cap) for name, count in totals.items()}


class StreamFilter:
    """One connection's filter: bytes as they arrive in, allowed events out, drops into ``totals``.

    :attr:`broken` is set when the stream stopped being records (a length far over the bound):
    the connection is to be closed.
    """

    def __init__(self, totals: Totals) -> None:
        self.totals = totals
        self._decoder = logrecord.Decoder()

    @property
    def broken(self) -> bool:
        return self._decoder.broken

    def feed(self, data: bytes) -> list[Accepted]:
        accepted: list[Accepted] = []
        for frame in self._decoder.feed(data):
            result: Accepted | DropReason = (
                "oversize" if isinstance(frame, logrecord.Skipped) else check(frame)
            )
            if isinstance(result, Accepted):
                self.totals.accepted += 1
                accepted.append(result)
            else:
                self.totals.dropped[result] += 1
        return accepted
