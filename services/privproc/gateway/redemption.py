"""Token redemption at the gateway: challenge, verify, and — only once a predictor took the session — spend.

A request under ``/v1/sessions`` must carry ``Authorization: PrivateToken``.
Redemption is two steps, so that a token is never spent for nothing:

1. :meth:`Redeemer.check`: the token is parsed, its key looked up among the
   issuer's live keys (from the issuer directory; a retired key is unknown,
   and so is a key past its redemption deadline), its challenge digest checked
   against the challenges this gateway issues, its authenticator verified —
   RSA-PSS with the public key for type 0x0002, the ACS for the privately
   verifiable type 0x0001 — and the spent set asked whether it was used.
2. :meth:`Redeemer.spend`: once a predictor has opened the session, the token
   is marked spent atomically (``SET NX`` semantics) in a store shared by every
   gateway replica. Losing that race refuses the request like any spent token.

Any refusal answers 401 with a fresh ``WWW-Authenticate: PrivateToken``
challenge.

How long a spent token is remembered follows its key: a key redeems here from
its ``not-before`` for ``key_lifetime_seconds`` (two issuer epochs) and never
after, whatever the directory still lists, so a spent entry kept until that
deadline plus the clock-skew allowance outlives every chance to spend the
token again. A key without a ``not-before`` cannot be bounded that way and is
not accepted.

Stores: :class:`SqliteSpentStore` (the default: durable, a restart forgets
nothing), :class:`RedisSpentStore` (shared by replicas) and
:class:`MemorySpentStore` (tests and benchmarks).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis.asyncio as redis_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry import metrics
from redis.exceptions import RedisError

from privproc import events
from privproc.crypto import blindrsa
from privproc.errors import CryptoError, TokenRefusedError, UnavailableError, WireError
from privproc.runtime.sqlite import open_database
from privproc.wire import privacypass as pp

_METER = metrics.get_meter("privproc.gateway")
#: Tokens accepted and spent, by token type.
_REDEEMED = _METER.create_counter("privproc.gateway.tokens.redeemed", unit="{token}")
#: Tokens refused, by reason (the same reasons as ``gateway.token_refused``).
TOKENS_REFUSED = _METER.create_counter("privproc.gateway.tokens.refused", unit="{token}")

_SPENT_DOMAIN = b"privproc/spent-token/v1"

#: How long a key redeems from its ``not-before`` by default: two issuer epochs of a day.
DEFAULT_KEY_LIFETIME_SECONDS = 2 * 86400.0
#: Clock difference tolerated between the gateway, its replicas and the spent store.
DEFAULT_CLOCK_SKEW_SECONDS = 600.0


class SpentTokenStore(Protocol):
    """Remembers spent tokens until their key can no longer redeem."""

    async def is_spent(self, key: bytes) -> bool:
        """Whether ``key`` is spent now (advisory: only :meth:`mark_spent` decides)."""
        ...

    async def mark_spent(self, key: bytes, ttl_seconds: float) -> bool:
        """Atomically mark ``key`` spent for ``ttl_seconds``; False if it already was."""
        ...

    async def close(self) -> None: ...


class MemorySpentStore:
    """In-process spent set, bounded by key lifetime and an entry cap (fails closed when full).

    It forgets everything on restart: for tests and benchmarks, not for a gateway.
    """

    def __init__(self, *, max_entries: int = 10_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._expiry: dict[bytes, float] = {}
        self._max = max_entries
        self._clock = clock
        self._next_prune = 0.0

    async def is_spent(self, key: bytes) -> bool:
        expiry = self._expiry.get(key)
        return expiry is not None and expiry > self._clock()

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


_SPENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS spent (
    key BLOB PRIMARY KEY,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spent_expires ON spent (expires);
"""


class SqliteSpentStore:
    """The gateway's own durable spent set: one SQLite file (0600, WAL, fsync per commit).

    Expiry is wall-clock time, so it means the same after a restart. Entries
    are keyed by a domain-separated hash of the token, never the token.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        max_entries: int = 10_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = open_database(path, _SPENT_SCHEMA)
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock
        self._next_prune = 0.0
        self._count = int(self._conn.execute("SELECT COUNT(*) FROM spent").fetchone()[0])

    def _prune(self, now: float) -> None:
        self._conn.execute("DELETE FROM spent WHERE expires <= ?", (now,))
        self._count = int(self._conn.execute("SELECT COUNT(*) FROM spent").fetchone()[0])
        self._next_prune = now + 60

    def _is_spent(self, key: bytes) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT expires FROM spent WHERE key = ?", (key,)).fetchone()
        return row is not None and float(row[0]) > self._clock()

    def _mark(self, key: bytes, ttl_seconds: float) -> bool:
        with self._lock:
            now = self._clock()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if now >= self._next_prune or self._count >= self._max:
                    self._prune(now)
                row = conn.execute("SELECT expires FROM spent WHERE key = ?", (key,)).fetchone()
                if row is not None and float(row[0]) > now:
                    conn.execute("ROLLBACK")
                    return False
                if row is None and self._count >= self._max:
                    conn.execute("ROLLBACK")
                    raise UnavailableError("spent-token store full")
                conn.execute(
                    "INSERT OR REPLACE INTO spent (key, expires) VALUES (?, ?)", (key, now + ttl_seconds)
                )
                conn.execute("COMMIT")
            except UnavailableError:
                raise
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if row is None:
                self._count += 1
            return True

    async def is_spent(self, key: bytes) -> bool:
        try:
            return await asyncio.to_thread(self._is_spent, key)
        except sqlite3.Error as err:
            raise UnavailableError("spent-token store unavailable") from err

    async def mark_spent(self, key: bytes, ttl_seconds: float) -> bool:
        try:
            # The commit waits for fsync: off the loop.
            return await asyncio.to_thread(self._mark, key, ttl_seconds)
        except sqlite3.Error as err:
            # Fail closed: a store we cannot write cannot say a token is fresh.
            raise UnavailableError("spent-token store unavailable") from err

    def __len__(self) -> int:
        with self._lock:
            return int(
                self._conn.execute(
                    "SELECT COUNT(*) FROM spent WHERE expires > ?", (self._clock(),)
                ).fetchone()[0]
            )

    async def close(self) -> None:
        with self._lock:
            self._conn.close()


class RedisSpentStore:
    """Spent set in Redis, shared by gateway replicas: ``SET key 1 NX PX ttl``."""

    def __init__(self, url: str, *, prefix: str = "privproc:spent:") -> None:
        self._redis = redis_asyncio.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix.encode()

    async def is_spent(self, key: bytes) -> bool:
        try:
            return bool(await self._redis.exists(self._prefix + key.hex().encode()))
        except (RedisError, OSError) as err:
            raise UnavailableError("spent-token store unavailable") from err

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
    not_before: int
    #: Wall-clock time from which this gateway refuses the key, whatever the directory says.
    redeem_until: float
    rsa_public: rsa.RSAPublicKey | None


def live_keys(directory: pp.IssuerDirectory, key_lifetime_seconds: float) -> list[LiveKey]:
    """The directory's keys this gateway can verify, each with its redemption deadline."""
    keys = []
    for entry in directory.token_keys:
        if entry.not_before is None:
            continue  # no start, no deadline: a spent entry could not be kept long enough
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
                entry.not_before + key_lifetime_seconds,
                rsa_public,
            )
        )
    return keys


@dataclass(frozen=True)
class CheckedToken:
    """A genuine, not yet spent token: what :meth:`Redeemer.spend` takes."""

    token: pp.Token
    spent_key: bytes
    redeem_until: float


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
        key_lifetime_seconds: float = DEFAULT_KEY_LIFETIME_SECONDS,
        clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``key_lifetime_seconds``: how long a key redeems from its ``not-before`` (the issuer's
        two epochs); ``clock`` is wall-clock time, the directory's ``not-before`` is Unix time."""
        if key_lifetime_seconds <= 0 or clock_skew_seconds < 0:
            raise ValueError("key lifetime must be positive and skew not negative")
        self.issuer_name = issuer_name
        self.origin = origin
        self.spent = spent
        self._private_verifier = private_verifier
        self.key_lifetime = key_lifetime_seconds
        self.clock_skew = clock_skew_seconds
        self._clock = clock
        self._keys: list[LiveKey] = []
        # Tokens checked but not yet spent or released: one token opens one predictor session at a
        # time, so a burst of the same token cannot make every predictor attest for nothing.
        self._in_flight: set[bytes] = set()
        self._digests = {
            token_type: self.token_challenge(token_type).digest()
            for token_type in (pp.TOKEN_TYPE_BLIND_RSA, pp.TOKEN_TYPE_VOPRF)
        }

    def token_challenge(self, token_type: int) -> pp.TokenChallenge:
        # One stable challenge per type (no redemption context) so clients can
        # fetch tokens ahead of need; double spending is stopped by the spent set.
        return pp.TokenChallenge(token_type, self.issuer_name, b"", (self.origin,))

    def update_keys(self, directory: pp.IssuerDirectory) -> None:
        self._keys = live_keys(directory, self.key_lifetime)
        events.emit(events.GatewayIssuerKeysRefreshed(keys=len(self._keys)))

    @property
    def has_keys(self) -> bool:
        now = self._clock()
        return any(now < k.redeem_until for k in self._keys)

    def challenges(self, now: float | None = None) -> list[pp.Challenge]:
        """One challenge per token type: its newest key already in force and still redeeming."""
        now = self._clock() if now is None else now
        seen: dict[int, pp.Challenge] = {}
        for key in sorted(self._keys, key=lambda k: -k.not_before):
            if key.not_before > now or now >= key.redeem_until:
                continue  # published ahead of use, or past its deadline here
            if key.token_type == pp.TOKEN_TYPE_VOPRF and self._private_verifier is None:
                continue
            seen.setdefault(key.token_type, pp.Challenge(self.token_challenge(key.token_type), key.token_key))
        return [seen[t] for t in sorted(seen, reverse=True)]  # type 2 first: publicly verifiable

    def www_authenticate(self) -> str:
        return ", ".join(c.header_value() for c in self.challenges())

    async def check(self, authorization: str | None) -> CheckedToken:
        """The token in ``authorization`` if it is genuine and unspent (TokenRefusedError if not).

        Nothing is spent: call :meth:`spend` once the request it pays for is taken, or
        :meth:`release` if it is not. Until then the same token is refused here (``in_flight``).
        """
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
        if self._clock() >= key.redeem_until:
            raise self._refuse("expired_key")
        if token.challenge_digest != self._digests.get(token.token_type):
            raise self._refuse("wrong_challenge")
        if not await self._genuine(token, key):
            raise self._refuse("invalid")
        spent_key = hashlib.sha256(_SPENT_DOMAIN + token.authenticator_input()).digest()
        if await self._store(self.spent.is_spent(spent_key)):
            raise self._refuse("double_spend")
        if spent_key in self._in_flight:  # no await between this test and the add below
            raise self._refuse("in_flight")
        self._in_flight.add(spent_key)
        return CheckedToken(token, spent_key, key.redeem_until)

    def release(self, checked: CheckedToken) -> None:
        """Give ``checked`` back unspent (its request was not taken); a no-op once spent."""
        self._in_flight.discard(checked.spent_key)

    async def spend(self, checked: CheckedToken) -> pp.Token:
        """Mark ``checked`` spent, atomically; TokenRefusedError if it already was (a lost race).

        The entry is kept until the key's deadline here plus the skew allowance:
        never shorter than the time the token could still be accepted.
        """
        try:
            ttl = checked.redeem_until + self.clock_skew - self._clock()
            if ttl <= self.clock_skew:
                raise self._refuse("expired_key")  # the deadline passed while the session opened
            if not await self._store(self.spent.mark_spent(checked.spent_key, ttl)):
                raise self._refuse("double_spend")
        finally:
            self._in_flight.discard(checked.spent_key)
        events.emit(events.GatewayTokenRedeemed(token_type=checked.token.token_type))
        _REDEEMED.add(1, {"privproc.token_type": checked.token.token_type})
        return checked.token

    async def redeem(self, authorization: str | None) -> pp.Token:
        """Check and spend at once (when nothing else must succeed first)."""
        return await self.spend(await self.check(authorization))

    async def _store(self, call: Awaitable[bool]) -> bool:
        try:
            return await call
        except UnavailableError:
            events.emit(events.GatewayTokenRefused(reason="unavailable"))
            TOKENS_REFUSED.add(1, {"privproc.reason": "unavailable"})
            raise

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
        events.emit(events.GatewayTokenRefused(reason=reason))
        TOKENS_REFUSED.add(1, {"privproc.reason": reason})
        return TokenRefusedError("a valid token is required")
