"""ACS core: credentials, durable rate limit, issuer key rotation, issuance and verification."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.acs.accounts import AccountStore, SignedCredentialAuthenticator, bearer_credential
from privproc.acs.issuer import Issuer
from privproc.acs.keys import IssuerKeyring
from privproc.acs.ratelimit import IssuanceLimiter
from privproc.acs.store import Database
from privproc.crypto import blindrsa, voprf
from privproc.errors import BadRequestError, RateLimitedError, UnauthenticatedError, WireError
from privproc.wire import privacypass as pp

EPOCH = 100.0


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "acs.sqlite3")


def test_database_file_is_private(tmp_path: Path) -> None:
    Database(tmp_path / "x.sqlite3").close()
    assert oct((tmp_path / "x.sqlite3").stat().st_mode & 0o777) == "0o600"


def test_credentials(db: Database) -> None:
    accounts = AccountStore(db)
    auth = SignedCredentialAuthenticator(accounts)
    credential = accounts.create("alice")
    assert auth.authenticate(credential) == "alice"
    other = AccountStore(Database(":memory:")).create("alice")  # another ACS's key
    tampered = credential[:-2] + ("A" if credential[-2] != "A" else "B") + credential[-1]
    for bad in (
        "",
        "pp1.alice.",
        other,
        tampered,
        credential.replace("alice", "bob"),
        "pp2" + credential[3:],
    ):
        with pytest.raises(UnauthenticatedError):
            auth.authenticate(bad)
    accounts.disable("alice")
    with pytest.raises(UnauthenticatedError):
        auth.authenticate(credential)
    assert bearer_credential("Bearer  abc ") == "abc"
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(UnauthenticatedError):
            bearer_credential(header)


def test_credential_key_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "acs.sqlite3"
    credential = AccountStore(Database(path)).create("bob")
    assert AccountStore(Database(path)).verify(credential) == "bob"


def test_rate_limit_is_durable_and_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "acs.sqlite3"
    limiter = IssuanceLimiter(Database(path), tokens_per_window=10, window_seconds=60)
    limiter.consume("alice", 6, now=0)
    with pytest.raises(RateLimitedError):
        limiter.consume("alice", 5, now=1)  # would exceed: nothing counted
    assert limiter.remaining("alice", now=1) == 4
    restarted = IssuanceLimiter(Database(path), tokens_per_window=10, window_seconds=60)
    restarted.consume("alice", 4, now=2)
    with pytest.raises(RateLimitedError):
        restarted.consume("alice", 1, now=3)
    restarted.consume("bob", 10, now=3)  # per account
    with pytest.raises(RateLimitedError):
        restarted.consume("alice", 10, now=61)  # the grant at 2 is still within the last 60 s
    restarted.consume("alice", 10, now=62)  # a full window after the last grant


def test_rate_limit_window_slides(tmp_path: Path) -> None:
    limiter = IssuanceLimiter(Database(tmp_path / "acs.sqlite3"), tokens_per_window=10, window_seconds=100)
    limiter.consume("alice", 4, now=10)
    limiter.consume("alice", 6, now=60)
    assert limiter.remaining("alice", now=109) == 0
    assert limiter.remaining("alice", now=110) == 4  # the grant at 10 left the window
    with pytest.raises(RateLimitedError):
        limiter.consume("alice", 5, now=110)
    limiter.consume("alice", 4, now=110)
    assert limiter.remaining("alice", now=160) == 6  # the grant at 60 left too


def test_fixed_window_counts_are_migrated_conservatively(tmp_path: Path) -> None:
    import sqlite3
    import time

    path = tmp_path / "acs.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE issuance (account TEXT NOT NULL, window INTEGER NOT NULL, count INTEGER NOT NULL,"
        " PRIMARY KEY (account, window));"
        "INSERT INTO issuance VALUES ('alice', 7, 600), ('alice', 8, 300);"
    )
    old.close()
    limiter = IssuanceLimiter(Database(path), tokens_per_window=1000, window_seconds=86400)
    # Both old windows count as granted at the upgrade: never more than the limit within a day of it.
    assert limiter.remaining("alice", now=time.time()) == 100
    with pytest.raises(RateLimitedError):
        limiter.consume("alice", 101, now=time.time())


def _issuer(db: Database, limit: int = 100) -> Issuer:
    accounts = AccountStore(db)
    accounts.create("alice")
    keyring = IssuerKeyring(db, epoch_seconds=EPOCH)
    keyring.refresh(now=0)
    return Issuer(
        keyring=keyring,
        limiter=IssuanceLimiter(db, tokens_per_window=limit, window_seconds=1000),
        authenticator=SignedCredentialAuthenticator(accounts),
        issuer_name="issuer.test",
    )


def _type2_requests(
    key: pp.DirectoryKey, n: int
) -> tuple[list[bytes], list[tuple[bytes, blindrsa.BlindingState]]]:
    public = blindrsa.public_key_from_spki_pss(key.token_key)
    key_id = pp.token_key_id(key.token_key)
    digest = pp.TokenChallenge(2, "issuer.test", b"", ("origin.test",)).digest()
    requests, states = [], []
    for i in range(n):
        token_input = pp.token_authenticator_input(2, bytes([i]) * 32, digest, key_id)
        blinded, state = blindrsa.blind(public, token_input, blindrsa.Variant.SHA384_PSS_DETERMINISTIC)
        requests.append(pp.TokenRequest(2, pp.truncated_key_id(key_id), blinded).encode())
        states.append((token_input, state))
    return requests, states


def test_issue_and_verify_type2(db: Database) -> None:
    issuer = _issuer(db)
    credential = AccountStore(db).credential("alice")
    [key] = [k for k in issuer.keyring.directory_keys(now=1) if k.token_type == 2]
    requests, states = _type2_requests(key, 3)
    responses = issuer.issue(credential, requests, now=1)
    public = blindrsa.public_key_from_spki_pss(key.token_key)
    for (token_input, state), response in zip(states, responses, strict=True):
        sig = blindrsa.finalize(
            public, token_input, response, state, blindrsa.Variant.SHA384_PSS_DETERMINISTIC
        )
        token = pp.Token.decode(token_input + sig)
        assert issuer.verify(token.encode(), now=2)
        forged = pp.Token(
            token.token_type, token.nonce, token.challenge_digest, token.token_key_id, bytes(256)
        )
        assert not issuer.verify(forged.encode(), now=2)


def test_issue_and_verify_type1(db: Database) -> None:
    issuer = _issuer(db)
    credential = AccountStore(db).credential("alice")
    [key] = [k for k in issuer.keyring.directory_keys(now=1) if k.token_type == 1]
    key_id = pp.token_key_id(key.token_key)
    token_input = pp.token_authenticator_input(1, bytes(32), bytes(32), key_id)
    blinded, state = voprf.blind(token_input)
    [response] = issuer.issue(
        credential, [pp.TokenRequest(1, pp.truncated_key_id(key_id), blinded).encode()], now=1
    )
    token = pp.Token.decode(token_input + voprf.finalize(state, response, key.token_key))
    assert issuer.verify(token.encode(), now=2)
    assert not issuer.verify(token.encode()[:-1] + bytes([token.encode()[-1] ^ 1]), now=2)


def test_issue_refusals(db: Database) -> None:
    issuer = _issuer(db, limit=2)
    credential = AccountStore(db).credential("alice")
    [key] = [k for k in issuer.keyring.directory_keys(now=1) if k.token_type == 2]
    requests, _ = _type2_requests(key, 3)
    with pytest.raises(UnauthenticatedError):
        issuer.issue("pp1.alice.AAAA", requests[:1], now=1)
    with pytest.raises(RateLimitedError):
        issuer.issue(credential, requests, now=1)  # 3 > 2: refused whole
    assert len(issuer.issue(credential, requests[:2], now=1)) == 2
    with pytest.raises(BadRequestError):
        issuer.issue(credential, [], now=1)
    with pytest.raises(WireError):
        issuer.issue(credential, [b"\x00\x02\x01"], now=1)
    wrong_key = bytearray(requests[0])
    wrong_key[2] ^= 0xFF
    with pytest.raises(BadRequestError):
        issuer.issue(credential, [bytes(wrong_key)], now=1)


def test_rotation_overlap_retirement_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "acs.sqlite3"
    keyring = IssuerKeyring(Database(path), epoch_seconds=EPOCH)
    created, retired = keyring.refresh(now=10)
    assert {k.token_type for k in created} == {1, 2} and not retired
    first = keyring.current(2, now=10)
    assert first is not None
    # Half way through the epoch the next key is published ahead of use.
    created, _ = keyring.refresh(now=60)
    [upcoming] = [k for k in created if k.token_type == 2]
    assert upcoming.not_before == 100 and upcoming.truncated_id != first.truncated_id
    assert keyring.directory_keys(now=60)[0].not_before == 100
    assert keyring.for_issuance(2, upcoming.truncated_id, now=60) is None  # not yet
    # Next epoch: the new key issues; the old one issues for half an epoch more, then only redeems.
    keyring.refresh(now=110)
    second = keyring.current(2, now=110)
    assert second == upcoming
    assert keyring.for_issuance(2, second.truncated_id, now=110) == second
    assert keyring.for_issuance(2, first.truncated_id, now=110) == first
    assert keyring.for_issuance(2, first.truncated_id, now=151) is None
    assert keyring.for_redemption(2, first.key_id, now=151) is not None
    assert [k.token_key for k in keyring.directory_keys(now=110) if k.token_type == 2] == [
        second.public_key,
        first.public_key,
    ]
    # A restart loads the same keys.
    reloaded = IssuerKeyring(Database(path), epoch_seconds=EPOCH)
    reloaded.refresh(now=151)
    assert reloaded.for_redemption(2, first.key_id, now=151) is not None
    # Two epochs on, the first key is retired: gone from redemption, directory and disk.
    _, retired = reloaded.refresh(now=200)
    assert first.key_id in {k.key_id for k in retired}
    assert reloaded.for_redemption(2, first.key_id, now=200) is None
    assert first.public_key not in {k.token_key for k in reloaded.directory_keys(now=200)}
    rows = Database(path).conn.execute("SELECT epoch FROM issuer_keys WHERE token_type = 2").fetchall()
    assert 0 not in {r[0] for r in rows}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=40, allow_nan=False), st.integers(min_value=0, max_value=6)
        ),
        max_size=60,
    )
)
def test_no_window_long_span_ever_holds_more_than_the_limit(requests: list[tuple[float, int]]) -> None:
    window, limit = 30.0, 10
    limiter = IssuanceLimiter(Database(":memory:"), tokens_per_window=limit, window_seconds=window)
    now, granted = 0.0, []
    for step, count in requests:
        now += step
        try:
            limiter.consume("alice", count, now=now)
        except RateLimitedError:
            continue
        granted.append((now, count))
    for start, _ in granted:  # every span that begins at a grant: the worst ones
        assert sum(c for t, c in granted if start <= t < start + window) <= limit
