"""The gateway's OHTTP key schedule — pure, driven by an injected clock.

One key is *current*: it is the only one advertised. Every ``rotation``
seconds a new key becomes current; the previous one stays *accepted* for a
``grace`` period so clients holding the old configuration (CDN caches,
in-flight requests) still get through, then its private key is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from privproc.wire.ohttp import GatewayKey, KeyConfig, Keyring, encode_key_config_list


@dataclass(frozen=True)
class ScheduledKey:
    key: GatewayKey
    current_from: float
    #: When it stops being current (``current_from + rotation``).
    current_until: float

    def accepted_until(self, grace: float) -> float:
        return self.current_until + grace


@dataclass(frozen=True)
class Advertisement:
    """What is published: the ``application/ohttp-keys`` body and its window."""

    body: bytes
    key_id: int
    not_before: float
    #: Clients may use these keys until the grace of the current key ends.
    not_after: float


class KeySchedule:
    """Which keys are advertised and accepted at a given time."""

    def __init__(
        self,
        *,
        rotation: float,
        grace: float,
        now: float,
        generate: Callable[[int], GatewayKey] = GatewayKey.generate,
    ) -> None:
        if rotation <= 0 or grace < 0:
            raise ValueError("rotation must be positive and grace non-negative")
        self.rotation = rotation
        self.grace = grace
        self._generate = generate
        self._keys: list[ScheduledKey] = []
        self._keyring = Keyring(())
        self._rotate(now)

    @property
    def current(self) -> ScheduledKey:
        return self._keys[-1]

    @property
    def keyring(self) -> Keyring:
        """Every key accepted now (current and those in their grace period)."""
        return self._keyring

    def _next_key_id(self) -> int:
        in_use = {k.key.config.key_id for k in self._keys}
        candidate = (self._keys[-1].key.config.key_id + 1) % 256 if self._keys else 1
        while candidate in in_use:  # at most 256 steps; the schedule never holds 256 keys
            candidate = (candidate + 1) % 256
        return candidate

    def _rotate(self, now: float) -> None:
        key = self._generate(self._next_key_id())
        self._keys.append(ScheduledKey(key, now, now + self.rotation))
        self._rebuild()

    def _rebuild(self) -> None:
        self._keyring = Keyring(k.key for k in self._keys)

    def tick(self, now: float) -> tuple[list[int], list[int]]:
        """Advance to ``now``: returns ``(new_key_ids, retired_key_ids)``."""
        added: list[int] = []
        if now >= self.current.current_until:
            self._rotate(now)
            added.append(self.current.key.config.key_id)
        keep = [k for k in self._keys if k is self.current or now < k.accepted_until(self.grace)]
        retired = [k.key.config.key_id for k in self._keys if k not in keep]
        if retired:
            self._keys = keep
            self._rebuild()
        return added, retired

    def advertised_configs(self) -> list[KeyConfig]:
        return [self.current.key.config]

    def advertisement(self) -> Advertisement:
        current = self.current
        return Advertisement(
            body=encode_key_config_list(self.advertised_configs()),
            key_id=current.key.config.key_id,
            not_before=current.current_from,
            not_after=current.accepted_until(self.grace),
        )

    def seconds_until_rotation(self, now: float) -> float:
        return max(0.0, self.current.current_until - now)
