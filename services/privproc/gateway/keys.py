"""The gateway's OHTTP key schedule — pure, driven by an injected clock.

One key is *current*: it is the only one advertised. Every ``rotation``
seconds a new key becomes current; the previous one stays *accepted* for a
``grace`` period so clients holding the old configuration (CDN caches,
in-flight requests) still get through, then its private key is dropped.

Without a seed, keys are random and rotation is timed from the gateway's
start: right for one gateway. Replicas behind one Service must advertise and
accept the same keys, so they share a secret *seed* and the schedule becomes
a function of the time alone: epoch ``e = floor(now / rotation)``; the key of
epoch ``e`` is current from ``e * rotation`` until ``(e + 1) * rotation`` and
accepted ``grace`` after; its key id is ``e mod 256``; its key pair is
RFC 9180 ``DeriveKeyPair`` of ``HKDF-SHA256(seed, info)``, where ``info``
names privproc, the KEM, the rotation period and the epoch
(:func:`epoch_key`). Replicas started at any time compute byte-identical
advertisements and keyrings at the same instant.
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privproc.errors import ConfigError
from privproc.wire import hpke
from privproc.wire.ohttp import GatewayKey, KeyConfig, Keyring, encode_key_config_list

#: Shortest seed accepted (bytes, once decoded): 256 bits.
MIN_SEED_BYTES = 32
#: Longest seed file accepted (characters): a seed is a key, not a document.
MAX_SEED_CHARS = 1024
#: Domain separation of the seeded keys' HKDF ``info``; followed by the KEM id (2 bytes), the
#: rotation period (IEEE 754 double) and the epoch (8 bytes), all big-endian.
SEED_INFO = b"privproc ohttp-gateway-key v1"


def new_seed() -> str:
    """A fresh seed as its file holds it: 32 random bytes, base64 (RFC 4648, padded)."""
    return base64.b64encode(secrets.token_bytes(MIN_SEED_BYTES)).decode()


def parse_seed(text: str) -> bytes:
    """The seed a seed file holds: base64 (RFC 4648 with padding, surrounding whitespace ignored)
    of at least :data:`MIN_SEED_BYTES` bytes; :class:`ConfigError` otherwise (naming no content)."""
    text = text.strip()
    if len(text) > MAX_SEED_CHARS:
        raise ConfigError("the OHTTP seed file is too long")
    try:
        seed = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ConfigError("the OHTTP seed file is not base64") from None
    if len(seed) < MIN_SEED_BYTES:
        raise ConfigError(f"the OHTTP seed is shorter than {MIN_SEED_BYTES} bytes")
    return seed


def epoch_key(seed: bytes, rotation: float, epoch: int) -> GatewayKey:
    """The key of ``epoch`` under ``seed`` and ``rotation``: key id ``epoch mod 256``.

    The rotation period is in the derivation so that changing it never brings back, for a new
    window, a key that was current in another.
    """
    info = SEED_INFO + struct.pack(">HdQ", hpke.KEM_X25519_HKDF_SHA256, rotation, epoch)
    ikm = HKDF(algorithm=SHA256(), length=hpke.NSK, salt=None, info=info).derive(seed)
    return GatewayKey.derive(epoch % 256, ikm)


def epoch_at(now: float, rotation: float) -> int:
    """The epoch ``now`` is in: ``e`` with ``e * rotation <= now < (e + 1) * rotation``."""
    epoch = math.floor(now / rotation)
    # The division rounds: settle the boundaries on the products the windows are made of.
    if (epoch + 1) * rotation <= now:
        epoch += 1
    elif epoch * rotation > now:
        epoch -= 1
    return epoch


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
    """Which keys are advertised and accepted at a given time.

    With ``seed`` (see the module docstring) they are a function of the time alone, the same
    in every replica holding that seed; without it, random and timed from ``now`` at creation.
    """

    def __init__(
        self,
        *,
        rotation: float,
        grace: float,
        now: float,
        generate: Callable[[int], GatewayKey] = GatewayKey.generate,
        seed: bytes | None = None,
    ) -> None:
        if not (math.isfinite(rotation) and math.isfinite(grace)) or rotation <= 0 or grace < 0:
            raise ValueError("rotation must be positive and grace non-negative")
        self.rotation = rotation
        self.grace = grace
        self._generate = generate
        self._seed = seed
        #: Seeded: the keys held, by epoch (derived once each).
        self._by_epoch: dict[int, ScheduledKey] = {}
        self._keys: list[ScheduledKey] = []
        self._keyring = Keyring(())
        if seed is None:
            self._rotate(now)
            return
        if len(seed) < MIN_SEED_BYTES:
            raise ValueError("the seed is too short")
        # Key ids are epochs mod 256: fewer than 256 keys may be accepted at once.
        if grace >= 254 * rotation:
            raise ValueError("with a seed, grace must be under 254 rotation periods")
        if now < 0:
            raise ValueError("with a seed, the clock starts at the epoch")
        self._keys = self._seeded_keys(now)
        self._rebuild()

    @property
    def seeded(self) -> bool:
        """Whether the keys come from a shared seed (the same in every replica)."""
        return self._seed is not None

    def _seeded_keys(self, now: float) -> list[ScheduledKey]:
        """The keys accepted at ``now``, oldest first: epochs whose window plus grace covers it."""
        assert self._seed is not None
        current = max(0, epoch_at(now, self.rotation))
        epochs = [current]
        while epochs[-1] > 0 and epochs[-1] * self.rotation + self.grace > now:
            epochs.append(epochs[-1] - 1)  # the previous epoch, current until this one began
        held: dict[int, ScheduledKey] = {}
        for epoch in reversed(epochs):
            key = self._by_epoch.get(epoch)
            if key is None:
                key = ScheduledKey(
                    epoch_key(self._seed, self.rotation, epoch),
                    epoch * self.rotation,
                    (epoch + 1) * self.rotation,
                )
            held[epoch] = key
        self._by_epoch = held
        return list(held.values())

    @property
    def current(self) -> ScheduledKey:
        return self._keys[-1]

    @property
    def accepted(self) -> tuple[ScheduledKey, ...]:
        """The keys accepted now, oldest first (the last is current)."""
        return tuple(self._keys)

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
        if self._seed is not None:
            keys = self._seeded_keys(now)
            added_keys = [k.key.config.key_id for k in keys if not any(k is o for o in self._keys)]
            retired_keys = [k.key.config.key_id for k in self._keys if not any(k is n for n in keys)]
            if added_keys or retired_keys:
                self._keys = keys
                self._rebuild()
            return added_keys, retired_keys
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
