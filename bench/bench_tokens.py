"""Privacy Pass: issuance against the native RSA private operation, and redemption rate.

* Issuance: ``Issuer.issue`` on batches of 32 pre-blinded type 0x0002 token
  requests (parse, key lookup, durable SQLite rate-limit count, native blind
  signature with its fault check) — on one thread and on two (the native
  operation releases the GIL) — against the bare native RSA private
  operation (``NativeRsaPrivateKey.rsasp1``) on the same number of threads.
* Redemption: ``Redeemer.redeem`` of distinct valid tokens (header parse,
  key lookup, challenge binding, RSA-PSS verify, spent-set insert) against a
  bare ``cryptography`` RSA-PSS verify of the same tokens.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench._common import Report, Result, Settings
from privproc.acs.accounts import AccountStore, SignedCredentialAuthenticator
from privproc.acs.issuer import Issuer
from privproc.acs.keys import IssuerKeyring
from privproc.acs.ratelimit import IssuanceLimiter
from privproc.acs.store import Database
from privproc.crypto import blindrsa
from privproc.crypto.rsa_raw import NativeRsaPrivateKey
from privproc.gateway.redemption import MemorySpentStore, Redeemer
from privproc.wire import privacypass as pp

GROUP = "tokens"
BATCH = 32
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _threaded_rate(fn: Callable[[], int], threads: int, seconds: float) -> float:
    """Items/s with ``threads`` threads calling ``fn`` (which returns items done) for ``seconds``."""
    deadline = time.perf_counter() + seconds

    def worker() -> int:
        done = 0
        while time.perf_counter() < deadline:
            done += fn()
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: worker(), range(threads)))
    return total / (time.perf_counter() - start)


def run(settings: Settings) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="privproc-bench-"))
    db = Database(workdir / "acs.sqlite3")
    accounts = AccountStore(db)
    credential = accounts.create("bench")
    keyring = IssuerKeyring(db, epoch_seconds=10**9, token_types=(pp.TOKEN_TYPE_BLIND_RSA,))
    now = time.time()
    keyring.refresh(now)
    issuer = Issuer(
        keyring=keyring,
        limiter=IssuanceLimiter(db, tokens_per_window=10**12, window_seconds=10**9),
        authenticator=SignedCredentialAuthenticator(accounts),
        issuer_name="issuer.bench",
    )
    key = keyring.current(pp.TOKEN_TYPE_BLIND_RSA, now)
    assert key is not None
    public = blindrsa.public_key_from_spki_pss(key.public_key)
    challenge = pp.TokenChallenge(2, "issuer.bench", b"", ("origin.bench",))
    variant = blindrsa.Variant.SHA384_PSS_DETERMINISTIC

    batch: list[bytes] = []
    for _ in range(BATCH):
        token_input = pp.token_authenticator_input(2, secrets.token_bytes(32), challenge.digest(), key.key_id)
        blinded, _ = blindrsa.blind(public, token_input, variant)
        batch.append(pp.TokenRequest(2, key.truncated_id, blinded).encode())
    raw_key = NativeRsaPrivateKey(_private_key(db))
    blinded_msgs = [pp.TokenRequest.decode(r).blinded_msg for r in batch]

    def issue_batch() -> int:
        issuer.issue(credential, batch, time.time())
        return BATCH

    def native_batch() -> int:
        for m in blinded_msgs:
            raw_key.rsasp1(m)
        return BATCH

    results: list[Result] = []
    for threads in (1, 2):
        samples, baseline = [], []
        _threaded_rate(issue_batch, threads, settings.micro_warmup)
        for repeat in range(settings.micro_repeats):
            pair = [
                lambda t=threads: _threaded_rate(issue_batch, t, settings.micro_seconds * 2),
                lambda t=threads: _threaded_rate(native_batch, t, settings.micro_seconds * 2),
            ]
            if repeat % 2:
                pair.reverse()
            a, b = (fn() for fn in pair)
            samples.append(a if repeat % 2 == 0 else b)
            baseline.append(b if repeat % 2 == 0 else a)
        results.append(
            Result(
                GROUP,
                f"issuance tokens/s, {threads} thread{'s' if threads > 1 else ''} (batch {BATCH})",
                samples,
                f"native RSA private op, {threads} thread{'s' if threads > 1 else ''}",
                baseline,
                note="goal: ratio >= 0.7",
            )
        )

    # Redemption: distinct valid tokens, signed directly: a blind signature
    # finalizes to exactly this PSS signature.
    private = _private_key(db)
    count = 600 if settings.quick else 10_000
    headers, tokens = [], []
    for _ in range(count):
        token_input = pp.token_authenticator_input(2, secrets.token_bytes(32), challenge.digest(), key.key_id)
        token = pp.Token.decode(token_input + private.sign(token_input, PSS, hashes.SHA384()))
        tokens.append(token)
        headers.append(pp.authorization_header(token))
    redeemer = Redeemer(
        issuer_name="issuer.bench",
        origin="origin.bench",
        spent=MemorySpentStore(),
        private_verifier=None,
        key_lifetime_seconds=2 * 10**9,  # two of the keyring's epochs: the key redeems throughout
    )
    redeemer.update_keys(pp.IssuerDirectory("/token-request", keyring.directory_keys(now)))
    loop = asyncio.new_event_loop()
    chunk = count // settings.micro_repeats
    samples, baseline = [], []
    for repeat in range(settings.micro_repeats):
        part = range(repeat * chunk, (repeat + 1) * chunk)
        start = time.perf_counter()
        for i in part:
            loop.run_until_complete(redeemer.redeem(headers[i]))
        samples.append(chunk / (time.perf_counter() - start))
        start = time.perf_counter()
        for i in part:
            public.verify(tokens[i].authenticator, tokens[i].authenticator_input(), PSS, hashes.SHA384())
        baseline.append(chunk / (time.perf_counter() - start))
    loop.close()
    results.append(
        Result(
            GROUP,
            "redemptions/s (verify + spend once), 1 thread",
            samples,
            "bare RSA-PSS verify",
            baseline[: len(samples)],
            note="goal: >= 10,000/s",
        )
    )
    db.close()
    notes = [
        "tokens: issuance includes parse, key lookup, the durable SQLite count and the native "
        "blind signature with its OpenSSL public-operation fault check",
        f"tokens: redemption measured on {count} distinct valid tokens, each spent once "
        "(in-process spent set)",
    ]
    return Report(results, notes)


def _private_key(db: Database) -> rsa.RSAPrivateKey:
    (secret,) = db.conn.execute("SELECT secret FROM issuer_keys WHERE token_type = 2").fetchone()
    key = serialization.load_der_private_key(bytes(secret), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key
