"""Attack: spend one token twice because the gateway forgot it before its key stopped redeeming.

The gateway remembered spent tokens for a fixed 2 days + 600 s, while an
issuer key redeems for two epochs: with ``--epoch-seconds 100000`` a token
spent early in its key's life was forgotten ~27,000 s before the key retired,
and then spent again. Now the gateway bounds each key's redemption life
itself (from its ``not-before``) and keeps a spent token until that deadline
plus the skew allowance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from privproc.acs.accounts import AccountStore, SignedCredentialAuthenticator
from privproc.acs.issuer import Issuer
from privproc.acs.keys import IssuerKeyring
from privproc.acs.ratelimit import IssuanceLimiter
from privproc.acs.store import Database
from privproc.crypto import blindrsa
from privproc.errors import TokenRefusedError
from privproc.gateway.redemption import MemorySpentStore
from privproc.gateway.server import GatewayConfig, GatewayService
from privproc.wire import privacypass as pp

EPOCH = 100_000.0  # > 86,700 s: where the fixed memory fell short
START = 20 * EPOCH  # the key's not-before
OLD_FIXED_TTL = 2 * 86400 + 600


def issue_token(
    tmp_path: Path, service: GatewayService, *, epoch: float = EPOCH, start: float = START
) -> tuple[str, pp.IssuerDirectory]:
    """A type 0x0002 token for ``service``'s challenge (its Authorization header), from an issuer
    whose current key began at ``start``, and that issuer's directory (given to ``service``)."""
    db = Database(tmp_path / "acs.sqlite3")
    accounts = AccountStore(db)
    credential = accounts.create("alice")
    keyring = IssuerKeyring(db, epoch_seconds=epoch, token_types=(pp.TOKEN_TYPE_BLIND_RSA,))
    keyring.refresh(now=start + 1)
    issuer = Issuer(
        keyring=keyring,
        limiter=IssuanceLimiter(db, tokens_per_window=10, window_seconds=86400),
        authenticator=SignedCredentialAuthenticator(accounts),
        issuer_name=service.config.issuer_name,
    )
    directory = issuer.directory("/token-request", now=start + 1)
    service.redeemer.update_keys(directory)
    [key] = directory.token_keys
    assert key.not_before == start
    challenge = pp.TokenChallenge(2, service.config.issuer_name, b"", (service.config.origin,))
    key_id = pp.token_key_id(key.token_key)
    token_input = pp.token_authenticator_input(2, bytes(range(32)), challenge.digest(), key_id)
    public = blindrsa.public_key_from_spki_pss(key.token_key)
    variant = blindrsa.Variant.SHA384_PSS_DETERMINISTIC
    blinded, state = blindrsa.blind(public, token_input, variant)
    [response] = issuer.issue(
        credential, [pp.TokenRequest(2, pp.truncated_key_id(key_id), blinded).encode()], now=start + 1
    )
    token = pp.Token.decode(token_input + blindrsa.finalize(public, token_input, response, state, variant))
    return pp.authorization_header(token), directory


def _gateway(config: GatewayConfig, now: list[float]) -> GatewayService:
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731 - one clock for the gateway and its store
    service = GatewayService(config, clock=clock)
    service.redeemer.spent = MemorySpentStore(clock=clock)  # the spent set on the test's clock
    return service


async def test_a_token_spent_early_is_refused_after_the_old_fixed_ttl(tmp_path: Path) -> None:
    """A gateway with default settings in front of an ACS with 100,000-second epochs."""
    now = [START + 5]
    service = _gateway(GatewayConfig(), now)
    header, _ = issue_token(tmp_path, service)
    await service.redeemer.redeem(header)
    now[0] = START + 5 + OLD_FIXED_TTL + 100  # the old memory is gone; the ACS still lists the key
    with pytest.raises(TokenRefusedError):
        await service.redeemer.redeem(header)


async def test_a_gateway_told_the_epoch_remembers_until_the_key_retires(tmp_path: Path) -> None:
    now = [START + 5]
    service = _gateway(GatewayConfig(epoch_seconds=EPOCH), now)
    header, _ = issue_token(tmp_path, service)
    await service.redeemer.redeem(header)
    for later in (OLD_FIXED_TTL + 100, 2 * EPOCH - 10):  # within the key's life here
        now[0] = START + later
        assert service.redeemer.has_keys
        with pytest.raises(TokenRefusedError):
            await service.redeemer.redeem(header)
    now[0] = START + 2 * EPOCH  # the key's deadline: no longer accepted, so forgetting is safe
    assert not service.redeemer.has_keys
