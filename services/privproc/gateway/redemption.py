"""Token redemption at the gateway: challenge, verify, spend once.

A request under ``/v1/sessions`` must carry ``Authorization: PrivateToken``.
The token is parsed, its key looked up among the issuer's live keys (from
the issuer directory; a retired key is unknown), its challenge digest
checked against the challenges this gateway issues, its authenticator
verified — RSA-PSS with the public key for type 0x0002, the ACS for the
privately verifiable type 0x0001 — and only then marked spent, atomically,
in a store shared by every gateway replica. Any failure answers 401 with a
fresh ``WWW-Authenticate: PrivateToken`` challenge.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa
from redis.exceptions import RedisError

from privproc import events
from privproc.errors import CryptoError, TokenRefusedError, UnavailableError, WireError
from privproc.wire import blindrsa
from privproc.wire import privacypass as pp

_SPENT_DOMAIN = b"privproc/spent-token/v1"


class SpentTokenStore(Protocol):
    """Remembers spent tokens until their key can no longer redeem."""

    async def mark_spent(self, key: bytes, ttl_seconds: float) -> bool:
        """Atomically mark ``key`` spent; False if it already was."""
        ...

    async def close(self) -> None: ...


class MemorySpentStore:
    """In-process spent set, bounded by key lifetime and an entry cap (fails closed when full)."""

    def __init__(self, *, max_entries: int = 10_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._expiry: dict[bytes, float] = {}
        self._max = max_entries
        self._clock = clock
        self._next_prune = 0.0

    async def mark_spent(self, key: bytes, ttl_seconds: float) -> bool:
        now = self._clock()
        if now >= self._next_prune or len(self._expiry) >= self._max:
            self._expiry = {k: t for k, t in self._expiry.items() if t > now}
            self._next_prune = now + 60
        expiry = self._expiry.get(key)
        if expiry is not None and expiry > now:
            return False
        if len(self._expiry) >= self._max:
            raise UnavailableError("spent-token store full")
        self._expiry[key] = now + ttl_seconds
        return True

    def __len__(self) -> int:
        return len(self._expiry)

    async def close(self) -> None:
        self._expiry.clear()


class RedisSpentStore:
    """Spent set in Redis, shared by gateway replicas: ``SET key 1 NX PX ttl``."""

    def __init__(self, url: str, *, prefix: str = "privproc:spent:") -> None:
        self._redis = redis_asyncio.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix.encode()

    async def mark_spent(self, key: bytes, ttl_seconds: float) -> bool:
        try:
            result = await self._redis.set(
                self._prefix + key.hex().encode(), b"1", nx=True, px=max(1, int(ttl_seconds * 1000))
            )
        except (RedisError, OSError) as err:
            # Fail closed: without the store we cannot know a token is fresh.
            raise UnavailableError("spent-token store unavailable") from err
        return bool(result)

    async def close(self) -> None:
        await self._redis.aclose()


@dataclass(frozen=True)
class LiveKey:
    token_type: int
    token_key: bytes  # as served in the directory
    key_id: bytes
    not_before: int | None
    rsa_public: rsa.RSAPublicKey | None


def live_keys(directory: pp.IssuerDirectory) -> list[LiveKey]:
    keys = []
    for entry in directory.token_keys:
        rsa_public = None
        if entry.token_type == pp.TOKEN_TYPE_BLIND_RSA:
            try:
                rsa_public = blindrsa.public_key_from_spki_pss(entry.token_key)
            except WireError:
                continue
        elif entry.token_type != pp.TOKEN_TYPE_VOPRF:
            continue
        keys.append(
            LiveKey(
                entry.token_type,
                entry.token_key,
                pp.token_key_id(entry.token_key),
                entry.not_before,
                rsa_public,
            )
        )
    return keys


#: Asks the issuer whether a type 0x0001 token is genuine.
PrivateVerifier = Callable[[bytes], Awaitable[bool]]


class Redeemer:
    """Challenges and redemption for one origin and one issuer."""

    def __init__(
        self,
        *,
        issuer_name: str,
        origin: str,
        spent: SpentTokenStore,
        private_verifier: PrivateVerifier | None,
        key_lifetime_seconds: float,
    ) -> None:
        self.issuer_name = issuer_name
        self.origin = origin
        self.spent = spent
        self._private_verifier = private_verifier
        self._key_lifetime = key_lifetime_seconds
        self._keys: list[LiveKey] = []
        self._digests = {
            token_type: self.token_challenge(token_type).digest()
            for token_type in (pp.TOKEN_TYPE_BLIND_RSA, pp.TOKEN_TYPE_VOPRF)
        }

    def token_challenge(self, token_type: int) -> pp.TokenChallenge:
        # One stable challenge per type (no redemption context) so clients can
        # fetch tokens ahead of need; double spending is stopped by the spent set.
        return pp.TokenChallenge(token_type, self.issuer_name, b"", (self.origin,))

    def update_keys(self, directory: pp.IssuerDirectory) -> None:
        self._keys = live_keys(directory)
        events.emit("gateway.issuer_keys_refreshed", keys=len(self._keys))

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    def challenges(self, now: float | None = None) -> list[pp.Challenge]:
        """One challenge per token type: its newest key already in force."""
        now = time.time() if now is None else now
        seen: dict[int, pp.Challenge] = {}
        for key in sorted(self._keys, key=lambda k: -(k.not_before or 0)):
            if key.not_before is not None and key.not_before > now:
                continue  # published ahead of use
            if key.token_type == pp.TOKEN_TYPE_VOPRF and self._private_verifier is None:
                continue
            seen.setdefault(key.token_type, pp.Challenge(self.token_challenge(key.token_type), key.token_key))
        return [seen[t] for t in sorted(seen, reverse=True)]  # type 2 first: publicly verifiable

    def www_authenticate(self) -> str:
        return ", ".join(c.header_value() for c in self.challenges())

    async def redeem(self, authorization: str | None) -> pp.Token:
        """Accept the token in ``authorization`` exactly once, or raise TokenRefusedError."""
        if not authorization:
            raise self._refuse("missing")
        try:
            token = pp.parse_authorization(authorization)
        except WireError:
            raise self._refuse("malformed") from None
        key = next(
            (k for k in self._keys if k.token_type == token.token_type and k.key_id == token.token_key_id),
            None,
        )
        if key is None:
            raise self._refuse("unknown_key")
        if token.challenge_digest != self._digests.get(token.token_type):
            raise self._refuse("wrong_challenge")
        if not await self._genuine(token, key):
            raise self._refuse("invalid")
        spent_key = hashlib.sha256(_SPENT_DOMAIN + token.authenticator_input()).digest()
        try:
            fresh = await self.spent.mark_spent(spent_key, self._key_lifetime)
        except UnavailableError:
            events.emit("gateway.token_refused", reason="unavailable")
            raise
        if not fresh:
            raise self._refuse("double_spend")
        events.emit("gateway.token_redeemed", token_type=token.token_type)
        return token

    async def _genuine(self, token: pp.Token, key: LiveKey) -> bool:
        if key.rsa_public is not None:
            try:
                blindrsa.verify(
                    key.rsa_public,
                    token.authenticator_input(),
                    token.authenticator,
                    blindrsa.Variant.SHA384_PSS_DETERMINISTIC,
                )
            except CryptoError:
                return False
            return True
        if self._private_verifier is None:
            return False
        return await self._private_verifier(token.encode())

    def _refuse(self, reason: str) -> TokenRefusedError:
        events.emit("gateway.token_refused", reason=reason)
        return TokenRefusedError("a valid token is required")
