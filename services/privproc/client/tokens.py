"""The device's token wallet: tokens bought ahead of need, at random times, spent one per session.

Buying tokens is the only moment the account is shown (to the ACS, with the
device's address). If a purchase happened just before a redemption, the
issuer and the gateway together could line the two up and link the account
to the request, so the wallet never buys inside a request:

* tokens are kept in a file (``client/wallet.json`` beside ``stack.json``,
  mode 0600, written atomically under a lock) so they outlive the process
  that bought them; a token is removed from the file *before* it is sent;
* a supervised background task wakes at random times and, when the wallet
  runs low and no request is in flight (nor was for a quiet period), buys a
  batch for the issuer's current key; keys that left the issuer directory
  are pruned with their tokens;
* a request that finds no token fails with :class:`WalletEmptyError`.
  Buying on the spot exists only as an explicit, logged opt-in
  (``allow_linkable_purchase=True``, ``--allow-linkable-purchase``).

Before blinding anything, the wallet checks that the key it buys for is one
the issuer publishes to everyone through the key CDN (and, with a
transparency log, that it is logged): a gateway that handed one user a key
of its own could recognise that user's tokens.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import fcntl
import json
import os
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from grpc import aio

from privproc import events
from privproc.client.transparency import fetch_proof
from privproc.crypto import blindrsa, voprf
from privproc.errors import (
    ConfigError,
    CryptoError,
    PrivprocError,
    UpstreamError,
    WireError,
)
from privproc.runtime.cdn_publisher import token_key_proof_name
from privproc.runtime.http import anonymous_client_session
from privproc.runtime.rpc import channel_options
from privproc.runtime.status import error_from_rpc
from privproc.runtime.tasks import supervise
from privproc.stackfile import StackFile
from privproc.v1 import acs_pb2, acs_pb2_grpc
from privproc.wire import privacypass as pp
from privproc.wire.entries import TokenIssuerKeyEntry
from privproc.wire.tlogclient import EntryMismatchError, TransparencyVerifier, Verified, check_validity

TOKEN_VARIANT = blindrsa.Variant.SHA384_PSS_DETERMINISTIC
MAX_DIRECTORY_BYTES = 64 << 10
#: The wallet file's name in the client's state directory.
WALLET_FILE = "wallet.json"
#: A wallet file larger than this is refused as corrupt (tokens are ~0.5 KiB each as JSON).
MAX_WALLET_BYTES = 4 << 20
_WALLET_VERSION = 1


class KeyConsistencyError(CryptoError):
    """The gateway challenged with a key the issuer does not publish to everyone."""

    reason = "key_consistency"


class ChallengeMismatchError(CryptoError):
    """The challenge names another issuer or origin than the client expects."""

    reason = "challenge_mismatch"


class WalletEmptyError(PrivprocError):
    """No token is held for the gateway's challenge.

    Buying one now would let the issuer and the gateway link the account to
    this request, so the request is not made: the wallet refills in the
    background (or ``privproc wallet refill`` ahead of time).
    """

    reason = "wallet_empty"


class WalletStoreError(PrivprocError):
    """The wallet file cannot be read or written (corrupt, or not ours)."""

    reason = "wallet_store"


@dataclass(frozen=True)
class SpentToken:
    token: pp.Token
    header: str
    #: Where the token's issuer key sits in the transparency log (checked when it was bought).
    log_index: int | None = None


@dataclass(frozen=True)
class RefillPolicy:
    """When the background task buys: at random times, only when low, never near a request.

    The task sleeps a uniformly random time in [``min_delay``, ``max_delay``]
    seconds, then buys a batch if fewer than ``low_water`` tokens are left
    and no request has been in flight for ``quiet_seconds`` (longer than a
    whole private request, so that a purchase never sits next to one). A
    request that arrives during a purchase waits until it is over and then
    a random ``settle_seconds``/2 to ``settle_seconds`` more, so that it
    neither overlaps the issuer's connection nor follows it in lockstep.
    """

    low_water: int = 4
    min_delay: float = 60.0
    max_delay: float = 900.0
    quiet_seconds: float = 120.0
    settle_seconds: float = 5.0

    def __post_init__(self) -> None:
        if (
            self.low_water < 1
            or not 0 < self.min_delay <= self.max_delay
            or self.quiet_seconds < 0
            or self.settle_seconds < 0
        ):
            raise ValueError("refill policy: low_water >= 1, 0 < min_delay <= max_delay, quiet, settle >= 0")


def default_wallet_path(stack: StackFile) -> Path | None:
    """``client/wallet.json`` beside the stack's ``stack.json`` (the checkpoints' directory too)."""
    path = stack.raw.get("_path")
    return Path(path).parent / "client" / WALLET_FILE if path else None


_Slot = tuple[bytes, bytes]  # (encoded TokenChallenge, token key)


class _WalletFile:
    """Tokens per slot, in memory or in a 0600 JSON file written atomically under a lock."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[_Slot, deque[pp.Token]] = {}
        self.log_index: dict[bytes, int] = {}  # token key id → log index

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[dict[_Slot, deque[pp.Token]]]:
        """The current tokens, re-read under an exclusive lock; saved when the block ends cleanly.

        The lock spans processes, so two clients sharing a wallet never take
        the same token.
        """
        if self.path is None:
            yield self._memory
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            tokens = self._read()
            yield tokens
            if write:
                self._write(tokens)
        finally:
            os.close(lock_fd)  # releases the lock

    def _read(self) -> dict[_Slot, deque[pp.Token]]:
        assert self.path is not None
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(MAX_WALLET_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError:
            raise WalletStoreError("the token wallet cannot be read") from None
        if len(raw) > MAX_WALLET_BYTES:
            raise WalletStoreError("the token wallet is too large")
        try:
            document = json.loads(raw)
            if document.get("version") != _WALLET_VERSION:
                raise WalletStoreError("unknown token wallet version")
            tokens: dict[_Slot, deque[pp.Token]] = {}
            for slot in document["slots"]:
                key = pp.b64url_decode(slot["token_key"])
                challenge = pp.b64url_decode(slot["challenge"])
                pp.TokenChallenge.decode(challenge)
                tokens[(challenge, key)] = deque(pp.Token.decode(pp.b64url_decode(t)) for t in slot["tokens"])
                if isinstance(slot.get("log_index"), int):
                    self.log_index[pp.token_key_id(key)] = slot["log_index"]
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, WireError):
            # Never echo the file: it holds secrets.
            raise WalletStoreError("the token wallet is corrupt") from None
        return tokens

    def _write(self, tokens: dict[_Slot, deque[pp.Token]]) -> None:
        assert self.path is not None
        slots = []
        for (challenge, key), held in tokens.items():
            if not held:
                continue
            slots.append(
                {
                    "challenge": pp.b64url_encode(challenge),
                    "token_key": pp.b64url_encode(key),
                    "log_index": self.log_index.get(pp.token_key_id(key)),
                    "tokens": [pp.b64url_encode(t.encode()) for t in held],
                }
            )
        data = json.dumps({"version": _WALLET_VERSION, "slots": slots}, separators=(",", ":")).encode()
        tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)  # atomic: a reader sees the old file or the new one
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


class TokenWallet:
    """Tokens per (challenge, key), bought from the ACS over gRPC in batches, ahead of need."""

    def __init__(
        self,
        *,
        acs_target: str,
        credential: str,
        directory_url: str,
        issuer_name: str,
        origin: str,
        batch_size: int = 8,
        proofs_url: str | None = None,
        transparency: TransparencyVerifier | None = None,
        path: Path | None = None,
        refill: RefillPolicy | None = None,
        allow_linkable_purchase: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``path``: where tokens are kept (``None``: in memory only).

        ``refill``: buy in the background by that policy (started on first
        use, or by :meth:`start_refill`). ``allow_linkable_purchase``: when
        no token is held, buy on the spot — the issuer and the gateway can
        then link the account to that request; for demos only. With
        ``transparency``, a token key is used only with a proof that it is
        logged.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.proofs_url = proofs_url
        self.transparency = transparency
        #: Token key id → where the key sits in the log (filled when transparency is on).
        self.logged: dict[bytes, Verified] = {}
        self.issuer_name = issuer_name
        self.origin = origin
        self.batch_size = batch_size
        self.refill_policy = refill
        self.allow_linkable_purchase = allow_linkable_purchase
        #: Purchases made inside a request (only with ``allow_linkable_purchase``).
        self.linkable_purchases = 0
        self._credential = credential
        self._directory_url = directory_url
        self._acs_target = acs_target
        self._store = _WalletFile(path)
        self._session = anonymous_client_session(10)
        self._clock = clock
        self._rng = random.SystemRandom()  # refill times nobody can predict
        self._active = 0
        self._last_activity = -float("inf")
        self._purchasing = False
        self._waiting = 0  # requests held back by a purchase
        self._purchase_done: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_stack(
        cls, stack: StackFile, *, transparency: TransparencyVerifier | None = None, **kw: Any
    ) -> TokenWallet:
        """A wallet for a local stack's demo account, kept in the stack's client state directory.

        It refills in the background by the default :class:`RefillPolicy`
        unless ``refill=None`` is given.
        """
        if stack.acs is None or stack.demo_account is None:
            raise ConfigError("stack.json has no ACS or demo account")
        kw.setdefault("path", default_wallet_path(stack))
        kw.setdefault("refill", RefillPolicy())
        return cls(
            acs_target=stack.acs.grpc,
            credential=kw.pop("credential", stack.demo_account.credential),
            directory_url=stack.cdn.issuer_directory_url,
            issuer_name=stack.acs.issuer_name,
            origin=stack.gateway.origin,
            proofs_url=stack.cdn.proofs_url,
            transparency=transparency,
            **kw,
        )

    @property
    def path(self) -> Path | None:
        return self._store.path

    @property
    def purchasing(self) -> bool:
        """Whether a background purchase is under way (requests wait for it to end)."""
        return self._purchasing

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._session.close()

    # --- what is held ---------------------------------------------------------------------

    def available(self, challenge: pp.Challenge) -> int:
        """Tokens held for exactly this challenge and key."""
        with self._store.transaction(write=False) as tokens:
            return len(tokens.get((challenge.challenge.encode(), challenge.token_key), ()))

    def held(self) -> int:
        """Tokens held for this wallet's issuer and origin, whatever the key."""
        with self._store.transaction(write=False) as tokens:
            return sum(len(q) for (c, _), q in tokens.items() if self._ours(c))

    def _ours(self, encoded_challenge: bytes) -> bool:
        try:
            tc = pp.TokenChallenge.decode(encoded_challenge)
        except pp.PrivacyPassFormatError:
            return False
        return tc.issuer_name == self.issuer_name and tc.origin_info == (self.origin,)

    # --- spending ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def request_scope(self) -> AsyncIterator[None]:
        """Hold this around a whole request: no purchase starts while it is open, or soon after.

        A request that begins while a purchase is under way waits for it to
        end, so the issuer is never contacted during a request.
        """
        await self._wait_for_purchase()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            self._last_activity = self._clock()

    async def spend(self, challenge: pp.Challenge) -> SpentToken:
        """A held token for ``challenge``, removed from the wallet (and its file) before it is returned.

        A token for an older key of the same challenge (still listed by the
        issuer at the last refill) is used when none is held for the
        challenge's key. With none at all: :class:`WalletEmptyError`, unless
        ``allow_linkable_purchase``.
        """
        self._start_refill_if_due()
        await self._wait_for_purchase()
        self._last_activity = self._clock()
        tc = challenge.challenge
        if tc.issuer_name != self.issuer_name or tc.origin_info != (self.origin,) or tc.redemption_context:
            raise ChallengeMismatchError("challenge does not match the expected issuer and origin")
        token = self._take(challenge)
        if token is None:
            if not self.allow_linkable_purchase:
                raise WalletEmptyError(
                    "no token in the wallet; it refills in the background (or: privproc wallet refill)"
                )
            # The caller asked for it: the issuer sees the account now, the gateway the token next.
            events.emit(events.ClientLinkablePurchase(tokens=self.batch_size))
            self.linkable_purchases += 1
            await self.check(challenge)
            self._add(challenge, await self._fetch(challenge, self.batch_size))
            token = self._take(challenge)
            if token is None:
                raise UpstreamError("the issuer gave no token")
        self._last_activity = self._clock()
        return SpentToken(token, pp.authorization_header(token), self._log_index(token.token_key_id))

    def _take(self, challenge: pp.Challenge) -> pp.Token | None:
        encoded = challenge.challenge.encode()
        with self._store.transaction() as tokens:
            exact = tokens.get((encoded, challenge.token_key))
            slots = [exact] if exact else [q for (c, _), q in tokens.items() if c == encoded and q]
            if not slots:
                return None
            return slots[0].popleft()  # saved to the file when the transaction ends

    def _add(self, challenge: pp.Challenge, bought: list[pp.Token]) -> None:
        key_id = pp.token_key_id(challenge.token_key)
        verified = self.logged.get(key_id)
        if verified is not None:
            self._store.log_index[key_id] = verified.index
        with self._store.transaction() as tokens:
            tokens.setdefault((challenge.challenge.encode(), challenge.token_key), deque()).extend(bought)

    def _log_index(self, key_id: bytes) -> int | None:
        verified = self.logged.get(key_id)
        return verified.index if verified is not None else self._store.log_index.get(key_id)

    async def _wait_for_purchase(self) -> None:
        while self._purchasing and self._purchase_done is not None:
            self._waiting += 1
            try:
                await self._purchase_done.wait()
            finally:
                self._waiting -= 1

    def _active_waiters(self) -> bool:
        return self._waiting > 0

    # --- refilling ----------------------------------------------------------------------------

    def start_refill(self) -> asyncio.Task[None]:
        """Start the background refill task (in the running loop); idempotent."""
        if self.refill_policy is None:
            raise ConfigError("this wallet has no refill policy")
        if self._task is None or self._task.done():
            self._task = supervise("client.wallet_refill", self._refill_loop)
        return self._task

    def _start_refill_if_due(self) -> None:
        if self.refill_policy is not None and (self._task is None or self._task.done()):
            self.start_refill()

    async def _refill_loop(self) -> None:
        policy = self.refill_policy
        assert policy is not None
        while True:
            await asyncio.sleep(self._rng.uniform(policy.min_delay, policy.max_delay))
            if self.held() < policy.low_water:
                await self.refill()

    async def refill(self, *, wait_quiet: bool = True) -> int:
        """Prune tokens of keys the issuer no longer lists, then buy a batch; returns the count bought.

        With ``wait_quiet`` it first waits until no request is in flight and
        none was for the policy's quiet period; requests that start while
        it buys wait for it to finish. Call it ahead of any request (at
        install time, from a scheduler): never in a request.
        """
        if wait_quiet:
            await self._wait_quiet()
        else:
            await self._wait_for_purchase()
        self._purchasing = True
        self._purchase_done = asyncio.Event()
        try:
            listed = await self.published_keys()
            self._prune(listed)
            challenge = self._current_challenge(listed)
            await self.check(challenge, published=listed)
            bought = await self._fetch(challenge, self.batch_size)
            self._add(challenge, bought)
            if wait_quiet and self.refill_policy is not None and self._active_waiters():
                settle = self.refill_policy.settle_seconds
                await asyncio.sleep(self._rng.uniform(settle / 2, settle))
        finally:
            self._purchasing = False
            self._purchase_done.set()
        events.emit(events.ClientWalletRefilled(bought=len(bought), held=min(self.held(), 10**6)))
        return len(bought)

    async def _wait_quiet(self) -> None:
        quiet = self.refill_policy.quiet_seconds if self.refill_policy is not None else 0.0
        while True:
            idle_for = self._clock() - self._last_activity
            if self._active == 0 and idle_for >= quiet and not self._purchasing:
                return
            await asyncio.sleep(max(min(quiet - idle_for, quiet), 0.05))

    def _prune(self, listed: dict[tuple[int, bytes], int | None]) -> None:
        """Drop tokens whose key the issuer no longer lists: the gateway would refuse them."""
        keys = {key for _, key in listed}
        with self._store.transaction() as tokens:
            for slot in [s for s in tokens if self._ours(s[0]) and s[1] not in keys]:
                del tokens[slot]

    def _current_challenge(self, listed: dict[tuple[int, bytes], int | None]) -> pp.Challenge:
        """The challenge the gateway uses: per type, the newest listed key already in force.

        Publicly verifiable type 0x0002 is preferred, as the client does when
        it picks among the gateway's challenges.
        """
        now = time.time()
        for token_type in (pp.TOKEN_TYPE_BLIND_RSA, pp.TOKEN_TYPE_VOPRF):
            usable = [
                (not_before or 0, key)
                for (kind, key), not_before in listed.items()
                if kind == token_type and (not_before is None or not_before <= now)
            ]
            if usable:
                _, key = max(usable, key=lambda item: item[0])
                tc = pp.TokenChallenge(token_type, self.issuer_name, b"", (self.origin,))
                return pp.Challenge(tc, key)
        raise UpstreamError("the issuer lists no key in force")

    # --- issuer directory, checks and issuance ------------------------------------------------------

    async def published_keys(self) -> dict[tuple[int, bytes], int | None]:
        """(token type, key) → ``not-before`` of the keys the issuer publishes, as the key CDN serves them."""
        try:
            async with self._session.get(
                self._directory_url, headers={"Accept": pp.MEDIA_TYPE_ISSUER_DIRECTORY}
            ) as resp:
                body = await resp.content.read(MAX_DIRECTORY_BYTES + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            raise UpstreamError("key CDN unavailable") from None
        if status != 200 or len(body) > MAX_DIRECTORY_BYTES:
            raise UpstreamError("key CDN gave no issuer directory")
        directory = pp.IssuerDirectory.decode(body)
        return {(k.token_type, k.token_key): k.not_before for k in directory.token_keys}

    async def check(
        self, challenge: pp.Challenge, *, published: dict[tuple[int, bytes], int | None] | None = None
    ) -> None:
        """Refuse a challenge for another issuer/origin or with an unpublished (or unlogged) key."""
        tc = challenge.challenge
        if tc.issuer_name != self.issuer_name or tc.origin_info != (self.origin,) or tc.redemption_context:
            raise ChallengeMismatchError("challenge does not match the expected issuer and origin")
        if published is None:
            published = await self.published_keys()
        if (tc.token_type, challenge.token_key) not in published:
            raise KeyConsistencyError("token key is not the one the issuer publishes")
        if self.transparency is not None:
            assert self.proofs_url is not None
            key_id = pp.token_key_id(challenge.token_key)
            proof = await fetch_proof(
                self._session, self.proofs_url, token_key_proof_name(key_id), "issuer key"
            )
            verified = await self.transparency.verify_proof(proof)
            entry = verified.entry
            if (
                not isinstance(entry, TokenIssuerKeyEntry)
                or entry.sha256 != key_id.hex()
                or entry.token_type != tc.token_type
            ):
                raise EntryMismatchError("logged entry is not this token key")
            check_validity(entry, time.time())
            self.logged[key_id] = verified

    async def _fetch(self, challenge: pp.Challenge, count: int) -> list[pp.Token]:
        token_type = challenge.challenge.token_type
        key_id = pp.token_key_id(challenge.token_key)
        digest = challenge.challenge.digest()
        inputs = [
            pp.token_authenticator_input(token_type, secrets.token_bytes(pp.NONCE_LEN), digest, key_id)
            for _ in range(count)
        ]
        states: list[Any] = []
        requests: list[bytes] = []
        if token_type == pp.TOKEN_TYPE_BLIND_RSA:
            public = blindrsa.public_key_from_spki_pss(challenge.token_key)
            for token_input in inputs:
                blinded, state = blindrsa.blind(public, token_input, TOKEN_VARIANT)
                states.append(state)
                requests.append(pp.TokenRequest(token_type, pp.truncated_key_id(key_id), blinded).encode())
        elif token_type == pp.TOKEN_TYPE_VOPRF:
            for token_input in inputs:
                blinded, vstate = voprf.blind(token_input)
                states.append(vstate)
                requests.append(pp.TokenRequest(token_type, pp.truncated_key_id(key_id), blinded).encode())
        else:
            raise ChallengeMismatchError("unsupported token type")
        # A channel per purchase: no connection to the issuer stays open between purchases.
        async with aio.insecure_channel(self._acs_target, options=channel_options()) as channel:
            try:
                reply = await acs_pb2_grpc.AcsStub(channel).IssueTokens(
                    acs_pb2.IssueTokensRequest(token_type=token_type, token_requests=requests),
                    metadata=(("authorization", f"Bearer {self._credential}"),),
                    timeout=30.0,
                )
            except aio.AioRpcError as err:
                raise _as_error(err) from None
        if len(reply.token_responses) != count:
            raise UpstreamError("issuer answered with the wrong number of tokens")
        tokens = []
        for token_input, state, response in zip(inputs, states, reply.token_responses, strict=True):
            pp.decode_token_response(token_type, response)
            if token_type == pp.TOKEN_TYPE_BLIND_RSA:
                authenticator = blindrsa.finalize(public, token_input, response, state, TOKEN_VARIANT)
            else:
                authenticator = voprf.finalize(state, response, challenge.token_key)
            tokens.append(pp.Token.decode(token_input + authenticator))
        return tokens


def _as_error(err: aio.AioRpcError) -> PrivprocError:
    return error_from_rpc(err)
