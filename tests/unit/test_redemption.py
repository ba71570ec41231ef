"""Gateway redemption: challenge binding, key lookup, verification, spend once (memory and Redis)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from privproc.acs.accounts import AccountStore, SignedCredentialAuthenticator
from privproc.acs.issuer import Issuer
from privproc.acs.keys import IssuerKeyring
from privproc.acs.ratelimit import IssuanceLimiter
from privproc.acs.store import Database
from privproc.crypto import blindrsa, voprf
from privproc.errors import TokenRefusedError, UnavailableError
from privproc.gateway.redemption import (
    MemorySpentStore,
    Redeemer,
    RedisSpentStore,
    SpentTokenStore,
    SqliteSpentStore,
)
from privproc.wire import privacypass as pp
from tests.redis_server import redis_server

ISSUER, ORIGIN = "issuer.test", "origin.test"


class World:
    def __init__(self, tmp_path: Path, spent: SpentTokenStore | None = None) -> None:
        self.now = 1.0  # the gateway's wall clock; keys start at 0 and redeem until 200
        db = Database(tmp_path / "acs.sqlite3")
        accounts = AccountStore(db)
        self.credential = accounts.create("alice")
        keyring = IssuerKeyring(db, epoch_seconds=100)
        keyring.refresh(now=0)
        self.issuer = Issuer(
            keyring=keyring,
            limiter=IssuanceLimiter(db, tokens_per_window=1000, window_seconds=1000),
            authenticator=SignedCredentialAuthenticator(accounts),
            issuer_name=ISSUER,
        )

        async def verify(token: bytes) -> bool:
            return self.issuer.verify(token, now=1)

        self.redeemer = Redeemer(
            issuer_name=ISSUER,
            origin=ORIGIN,
            spent=spent if spent is not None else MemorySpentStore(),
            private_verifier=verify,
            key_lifetime_seconds=200,
            clock=lambda: self.now,
        )
        self.redeemer.update_keys(self.issuer.directory("/token-request", now=1))

    def token(self, challenge: pp.Challenge) -> pp.Token:
        tc = challenge.challenge
        key_id = pp.token_key_id(challenge.token_key)
        token_input = pp.token_authenticator_input(tc.token_type, bytes(range(32)), tc.digest(), key_id)
        if tc.token_type == 2:
            public = blindrsa.public_key_from_spki_pss(challenge.token_key)
            variant = blindrsa.Variant.SHA384_PSS_DETERMINISTIC
            blinded, state = blindrsa.blind(public, token_input, variant)
            [resp] = self.issuer.issue(
                self.credential, [pp.TokenRequest(2, pp.truncated_key_id(key_id), blinded).encode()], now=1
            )
            return pp.Token.decode(token_input + blindrsa.finalize(public, token_input, resp, state, variant))
        blinded, vstate = voprf.blind(token_input)
        [resp] = self.issuer.issue(
            self.credential, [pp.TokenRequest(1, pp.truncated_key_id(key_id), blinded).encode()], now=1
        )
        return pp.Token.decode(token_input + voprf.finalize(vstate, resp, challenge.token_key))


def _challenge(world: World, token_type: int) -> pp.Challenge:
    [challenge] = [
        c
        for c in pp.parse_www_authenticate(world.redeemer.www_authenticate())
        if c.challenge.token_type == token_type
    ]
    return challenge


@pytest.mark.parametrize("token_type", [2, 1])
async def test_valid_token_once_then_double_spend(tmp_path: Path, token_type: int) -> None:
    world = World(tmp_path)
    token = world.token(_challenge(world, token_type))
    header = pp.authorization_header(token)
    assert await world.redeemer.redeem(header) == token
    with pytest.raises(TokenRefusedError):
        await world.redeemer.redeem(header)


async def test_refusals(tmp_path: Path) -> None:
    world = World(tmp_path)
    challenge = _challenge(world, 2)
    good = world.token(challenge)
    other_origin = pp.Challenge(pp.TokenChallenge(2, ISSUER, b"", ("elsewhere.test",)), challenge.token_key)
    cases = [
        None,
        "",
        "PrivateToken token=garbage",
        pp.authorization_header(
            pp.Token(2, good.nonce, good.challenge_digest, bytes(32), good.authenticator)
        ),
        pp.authorization_header(world.token(other_origin)),
        pp.authorization_header(
            pp.Token(2, bytes(32), good.challenge_digest, good.token_key_id, good.authenticator)
        ),
    ]
    for header in cases:
        with pytest.raises(TokenRefusedError):
            await world.redeemer.redeem(header)
    await world.redeemer.redeem(pp.authorization_header(good))  # still unspent after all that


async def test_retired_key_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path)
    token = world.token(_challenge(world, 2))
    world.issuer.keyring.refresh(now=250)  # two epochs on: retired
    world.redeemer.update_keys(world.issuer.directory("/token-request", now=250))
    with pytest.raises(TokenRefusedError):
        await world.redeemer.redeem(pp.authorization_header(token))


async def test_memory_store_expires_and_fails_closed_when_full() -> None:
    now = [0.0]
    store = MemorySpentStore(max_entries=2, clock=lambda: now[0])
    assert await store.mark_spent(b"a", 10) and not await store.mark_spent(b"a", 10)
    assert await store.mark_spent(b"b", 10)
    with pytest.raises(UnavailableError):
        await store.mark_spent(b"c", 10)
    now[0] = 11
    assert await store.mark_spent(b"a", 10)  # expired, pruned


async def test_redis_store_shares_spends_and_fails_closed(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        first, second = RedisSpentStore(url), RedisSpentStore(url)
        try:
            world_a = World(tmp_path / "a", spent=first)
            token = world_a.token(_challenge(world_a, 2))
            # A second gateway replica, same issuer keys, its own store client.
            world_b = Redeemer(
                issuer_name=ISSUER,
                origin=ORIGIN,
                spent=second,
                private_verifier=None,
                key_lifetime_seconds=200,
                clock=lambda: 1.0,
            )
            world_b.update_keys(world_a.issuer.directory("/token-request", now=1))
            header = pp.authorization_header(token)
            results = await asyncio.gather(
                world_a.redeemer.redeem(header), world_b.redeem(header), return_exceptions=True
            )
            assert sum(isinstance(r, pp.Token) for r in results) == 1
            assert sum(isinstance(r, TokenRefusedError) for r in results) == 1
        finally:
            await first.close()
            await second.close()
    dead = RedisSpentStore(url)  # the server is gone now
    with pytest.raises(UnavailableError):
        await dead.mark_spent(b"x", 10)
    await dead.close()


async def test_check_spends_nothing_and_spend_is_once(tmp_path: Path) -> None:
    world = World(tmp_path)
    header = pp.authorization_header(world.token(_challenge(world, 2)))
    first = await world.redeemer.check(header)
    with pytest.raises(TokenRefusedError):
        await world.redeemer.check(header)  # in flight: one request at a time per token
    world.redeemer.release(first)
    again = await world.redeemer.check(header)  # released unspent: it checks out again
    assert again == first
    await world.redeemer.spend(again)
    with pytest.raises(TokenRefusedError):
        await world.redeemer.check(header)


async def test_two_gateways_racing_with_one_token_spend_it_once(tmp_path: Path) -> None:
    store = MemorySpentStore()
    world = World(tmp_path, spent=store)
    other = World(tmp_path / "other", spent=store)  # a replica: its own in-flight set, one store
    other.redeemer.update_keys(world.issuer.directory("/token-request", now=1))
    header = pp.authorization_header(world.token(_challenge(world, 2)))
    first, second = await world.redeemer.check(header), await other.redeemer.check(header)
    await world.redeemer.spend(first)
    with pytest.raises(TokenRefusedError):
        await other.redeemer.spend(second)  # the race's loser
    other.redeemer.release(second)
    with pytest.raises(TokenRefusedError):
        await other.redeemer.check(header)


async def test_spent_entry_lasts_until_the_key_deadline_plus_skew(tmp_path: Path) -> None:
    now = [1.0]
    store = MemorySpentStore(clock=lambda: now[0])
    world = World(tmp_path, spent=store)
    world.redeemer._clock = lambda: now[0]
    header = pp.authorization_header(world.token(_challenge(world, 2)))
    await world.redeemer.redeem(header)
    assert world.redeemer.clock_skew == 600
    now[0] = 199.0  # the key (not-before 0, lifetime 200) still redeems: the entry must be there
    with pytest.raises(TokenRefusedError):
        await world.redeemer.redeem(header)
    assert await store.is_spent(next(iter(store._expiry)))
    now[0] = 200.0  # past the key's deadline here: refused whatever the store says
    with pytest.raises(TokenRefusedError):
        await world.redeemer.check(header)
    assert not world.redeemer.has_keys and world.redeemer.challenges() == []
    now[0] = 200.0 + 600.0 + 1.0
    assert not await store.is_spent(next(iter(store._expiry)))


async def test_keys_without_not_before_are_not_accepted(tmp_path: Path) -> None:
    world = World(tmp_path)
    directory = world.issuer.directory("/token-request", now=1)
    bare = pp.IssuerDirectory(
        directory.issuer_request_uri,
        tuple(pp.DirectoryKey(k.token_type, k.token_key, None) for k in directory.token_keys),
    )
    world.redeemer.update_keys(bare)
    assert not world.redeemer.has_keys


async def test_sqlite_store_is_durable_expires_and_fails_closed(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "gateway" / "spent.sqlite3"
    store = SqliteSpentStore(path, max_entries=2, clock=lambda: now[0])
    assert await store.mark_spent(b"a", 10) and not await store.mark_spent(b"a", 10)
    assert await store.is_spent(b"a") and not await store.is_spent(b"b")
    await store.close()
    assert path.stat().st_mode & 0o777 == 0o600
    reopened = SqliteSpentStore(path, max_entries=2, clock=lambda: now[0])
    assert not await reopened.mark_spent(b"a", 10)  # a restart forgets nothing
    assert await reopened.mark_spent(b"b", 10)
    with pytest.raises(UnavailableError):
        await reopened.mark_spent(b"c", 10)
    now[0] = 1011.0
    assert await reopened.mark_spent(b"c", 10)  # expired entries pruned to make room
    assert await reopened.mark_spent(b"a", 10) and len(reopened) == 2
    await reopened.close()
