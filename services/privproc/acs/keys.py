"""Token issuer keys: one per token type per epoch, rotated with overlap.

Epoch ``e`` covers ``[e*L, (e+1)*L)``. Its key is created and published
half an epoch early (its ``not-before`` in the future), so that every copy
of the directory — the key CDN's above all — lists it before any gateway
challenges with it. It signs from ``e*L`` until half an epoch after its
epoch ends (a client answering a gateway that has not refreshed yet still
gets tokens), redeems until ``(e+2)*L``, and is then retired: removed from
the directory, its private half deleted. Keys are kept in the ACS database
so a restart does not invalidate tokens.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privproc.acs.store import Database
from privproc.crypto import blindrsa, voprf
from privproc.wire.privacypass import (
    TOKEN_TYPE_BLIND_RSA,
    TOKEN_TYPE_VOPRF,
    DirectoryKey,
    token_key_id,
    truncated_key_id,
)

RSA_BITS = 2048


@dataclass(frozen=True)
class IssuerKey:
    """One token key: its public encoding, id and windows, and what signs with it."""

    token_type: int
    epoch: int
    public_key: bytes  # SPKI (type 2) or SerializeElement (type 1): what the directory serves
    key_id: bytes
    not_before: float
    issue_until: float
    redeem_until: float
    signer: Any = field(repr=False, compare=False)

    @property
    def truncated_id(self) -> int:
        return truncated_key_id(self.key_id)


def _voprf_info(epoch: int) -> bytes:
    return b"privproc token type 1 epoch " + str(epoch).encode()


def _load(token_type: int, epoch: int, secret: bytes, epoch_seconds: float) -> IssuerKey:
    signer: Any
    if token_type == TOKEN_TYPE_BLIND_RSA:
        private = serialization.load_der_private_key(secret, password=None)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ValueError("stored type 2 key is not RSA")
        signer = blindrsa.BlindSigner(private)
        public = blindrsa.rsassa_pss_spki(private.public_key())
    else:
        signer = voprf.IssuerKey.derive(secret, _voprf_info(epoch))
        public = signer.public_key
    start = epoch * epoch_seconds
    return IssuerKey(
        token_type=token_type,
        epoch=epoch,
        public_key=public,
        key_id=token_key_id(public),
        not_before=start,
        issue_until=start + 1.5 * epoch_seconds,
        redeem_until=start + 2 * epoch_seconds,
        signer=signer,
    )


def _new_secret(token_type: int) -> bytes:
    if token_type == TOKEN_TYPE_BLIND_RSA:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        return key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return secrets.token_bytes(32)  # a VOPRF seed for DeriveKeyPair


class IssuerKeyring:
    """The issuer's keys for each enabled token type."""

    def __init__(
        self,
        db: Database,
        *,
        epoch_seconds: float,
        token_types: tuple[int, ...] = (TOKEN_TYPE_BLIND_RSA, TOKEN_TYPE_VOPRF),
    ) -> None:
        if epoch_seconds <= 0:
            raise ValueError("epoch length must be positive")
        self._db = db
        self.epoch_seconds = epoch_seconds
        self.token_types = token_types
        self._keys: dict[tuple[int, int], IssuerKey] = {}

    def epoch(self, now: float) -> int:
        return int(now // self.epoch_seconds)

    def refresh(self, now: float) -> tuple[list[IssuerKey], list[IssuerKey]]:
        """Create the current epoch's keys, load stored ones, retire old ones.

        Returns ``(created, retired)``.
        """
        current = self.epoch(now)
        created: list[IssuerKey] = []
        retired: list[IssuerKey] = []
        with self._db.lock:
            rows = self._db.conn.execute("SELECT token_type, epoch, secret FROM issuer_keys").fetchall()
        for token_type, epoch, secret in rows:
            if (token_type, epoch) not in self._keys and token_type in self.token_types:
                self._keys[(token_type, epoch)] = _load(token_type, epoch, bytes(secret), self.epoch_seconds)
        wanted = [current]
        if now >= (current + 0.5) * self.epoch_seconds:
            wanted.append(current + 1)  # published ahead of use
        for token_type in self.token_types:
            for epoch in wanted:
                if (token_type, epoch) not in self._keys:
                    key = self._create(token_type, epoch)
                    self._keys[(token_type, epoch)] = key
                    created.append(key)
        for slot, key in list(self._keys.items()):
            if key.redeem_until <= now:
                retired.append(self._keys.pop(slot))
                with self._db.lock:
                    self._db.conn.execute("DELETE FROM issuer_keys WHERE token_type = ? AND epoch = ?", slot)
        return created, retired

    def _create(self, token_type: int, epoch: int) -> IssuerKey:
        # A truncated key id must name one key among those in use, or a token
        # request would be ambiguous (RFC 9578 §5.3, §6.3).
        taken = {k.truncated_id for k in self._keys.values() if k.token_type == token_type}
        while True:
            secret = _new_secret(token_type)
            key = _load(token_type, epoch, secret, self.epoch_seconds)
            if key.truncated_id not in taken:
                break
        with self._db.lock:
            self._db.conn.execute(
                "INSERT OR REPLACE INTO issuer_keys (token_type, epoch, secret) VALUES (?, ?, ?)",
                (token_type, epoch, secret),
            )
        return key

    def for_issuance(self, token_type: int, truncated_id: int, now: float) -> IssuerKey | None:
        for key in self._keys.values():
            if (
                key.token_type == token_type
                and key.truncated_id == truncated_id
                and key.not_before <= now < key.issue_until
            ):
                return key
        return None

    def for_redemption(self, token_type: int, key_id: bytes, now: float) -> IssuerKey | None:
        for key in self._keys.values():
            if (
                key.token_type == token_type
                and key.key_id == key_id
                and key.not_before <= now < key.redeem_until
            ):
                return key
        return None

    def current(self, token_type: int, now: float) -> IssuerKey | None:
        return self._keys.get((token_type, self.epoch(now)))

    def directory_keys(self, now: float) -> tuple[DirectoryKey, ...]:
        """Upcoming and redeemable keys, newest first, each with its ``not-before``.

        Clients take the newest key of their type whose ``not-before`` has
        passed; redeemers accept any listed key that is live.
        """
        keys = sorted(
            (k for k in self._keys.values() if now < k.redeem_until),
            key=lambda k: (-k.not_before, k.token_type),
        )
        return tuple(DirectoryKey(k.token_type, k.public_key, int(k.not_before)) for k in keys)

    def upcoming(self, now: float) -> list[IssuerKey]:
        """Keys published ahead of their ``not-before``."""
        return [k for k in self._keys.values() if now < k.not_before]

    def redeemable(self, now: float) -> list[IssuerKey]:
        return [k for k in self._keys.values() if k.not_before <= now < k.redeem_until]
