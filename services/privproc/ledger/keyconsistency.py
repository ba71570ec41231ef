"""One OHTTP key configuration for everyone: refuse any but the newest logged one (sans-I/O).

Logging every key configuration stops a gateway from giving one user a key
no one else can see, but not from giving one user an *older* logged key
that is still inside its validity window while everyone else moved on
(key partitioning: the gateway then knows who holds that key). The gateway
logs each new configuration before it serves it, and the previous one stays
valid for a grace period; so at any moment the configuration to use is the
newest logged one (highest log index) whose window covers now.

:class:`KeyConfigHistory` learns the log's ``ohttp-key-config`` entries in
log order (from whatever follows the log outside any session) and refuses,
with :class:`StaleKeyConfigError`, a configuration when it knows a newer
logged one that is valid now. :func:`live_key_configs` and
:func:`key_config_alerts` are what ``privproc ledger monitor`` reports: a
second live configuration is expected only for a grace period after a
rotation; anything more is flagged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from privproc.errors import CryptoError
from privproc.wire.entries import Entry, OhttpKeyConfigEntry

#: Key configuration entries remembered (the newest by log index; older ones cannot be newer than them).
MAX_REMEMBERED = 256
#: What ``privproc ledger monitor`` tolerates as the overlap of a configuration with its successor
#: (the gateway's default grace period).
DEFAULT_MAX_GRACE_SECONDS = 600


class StaleKeyConfigError(CryptoError):
    """The offered key configuration is logged, but the log holds a newer one valid now."""

    reason = "stale_key_config"


@dataclass(frozen=True)
class LoggedKeyConfig:
    """One ``ohttp-key-config`` entry of the log."""

    index: int
    sha256: str
    key_id: int
    not_before: int
    not_after: int

    def live(self, now: float) -> bool:
        return self.not_before <= now <= self.not_after

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "sha256": self.sha256,
            "key_id": self.key_id,
            "not_before": self.not_before,
            "not_after": self.not_after,
        }

    @classmethod
    def of(cls, index: int, entry: Entry) -> LoggedKeyConfig | None:
        """The record of a (parsed) entry, or None if it is not a key configuration."""
        if not isinstance(entry, OhttpKeyConfigEntry):
            return None
        return cls(index, entry.sha256, entry.key_id, entry.not_before, entry.not_after)


class KeyConfigHistory:
    """The newest key configurations the log holds, as far as this client has read it."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._max = max_remembered
        self._configs: dict[int, LoggedKeyConfig] = {}

    def __len__(self) -> int:
        return len(self._configs)

    def observe(self, index: int, entry: Entry) -> None:
        """Learn one (parsed) log entry; entries of other kinds are ignored."""
        record = LoggedKeyConfig.of(index, entry)
        if record is None:
            return
        self._configs[index] = record
        if len(self._configs) > self._max:
            del self._configs[min(self._configs)]

    def newer_live(self, index: int, sha256: str, now: float) -> LoggedKeyConfig | None:
        """A configuration logged after ``index``, other than ``sha256``, valid at ``now`` (the newest)."""
        newer = [c for c in self._configs.values() if c.index > index and c.sha256 != sha256 and c.live(now)]
        return max(newer, key=lambda c: c.index, default=None)

    def check(self, index: int, entry: OhttpKeyConfigEntry, now: float) -> None:
        """Refuse the logged configuration ``entry`` (at ``index``) unless it is the newest valid now."""
        if self.newer_live(index, entry.sha256, now) is not None:
            raise StaleKeyConfigError("a newer logged key configuration is valid: this one is refused")


def live_key_configs(configs: Iterable[LoggedKeyConfig], now: float) -> list[LoggedKeyConfig]:
    """The configurations whose validity window covers ``now``, in log order."""
    return sorted((c for c in configs if c.live(now)), key=lambda c: c.index)


def key_config_alerts(
    configs: Iterable[LoggedKeyConfig], now: float, *, max_grace_seconds: int = DEFAULT_MAX_GRACE_SECONDS
) -> list[dict[str, Any]]:
    """What a monitor flags about the configurations live at ``now``.

    More than one live configuration is a partitioning risk: a gateway could
    hand each user a different one. It is expected only right after a
    rotation: an older configuration whose successor (the next one logged)
    is already valid, and which ends at most ``max_grace_seconds`` after that
    successor began. Every other live configuration beside the newest is
    flagged (``multiple_live_key_configs``), naming the log indexes.
    """
    live = live_key_configs(configs, now)
    alerts: list[dict[str, Any]] = []
    for older, successor in itertools.pairwise(live):
        in_grace = successor.not_before <= now and older.not_after - successor.not_before <= max_grace_seconds
        if not in_grace:
            alerts.append(
                {
                    "alert": "multiple_live_key_configs",
                    "indexes": [older.index, successor.index],
                    "overlap_seconds": max(0, older.not_after - successor.not_before),
                }
            )
    return alerts
