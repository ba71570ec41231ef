"""Attacks on the persistent token wallet file: races between processes, corruption, stale keys.

Tokens are secrets that buy a model run each: two processes sharing a wallet
must never take the same token (the second use would be refused and the
first request's linkability would leak to the gateway), a corrupt or hostile
file must give a typed error that echoes none of it, and tokens of keys the
issuer no longer lists are dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privproc.client.tokens import TokenWallet, WalletEmptyError, WalletStoreError
from privproc.wire import privacypass as pp

ROOT = Path(__file__).resolve().parents[3]
ISSUER, ORIGIN = "issuer.example", "origin.example"
KEY_A, KEY_B = b"key-a" * 10, b"key-b" * 10
CHALLENGE = pp.TokenChallenge(pp.TOKEN_TYPE_BLIND_RSA, ISSUER, b"", (ORIGIN,))


def _wallet(path: Path | None) -> TokenWallet:
    # No network in these tests: the ACS and the directory are never reached.
    return TokenWallet(
        acs_target="127.0.0.1:9",
        credential="pp1.x.AAAA",
        directory_url="http://127.0.0.1:9/",
        issuer_name=ISSUER,
        origin=ORIGIN,
        path=path,
    )


def _tokens(key: bytes, count: int) -> list[pp.Token]:
    return [
        pp.Token(
            2, secrets.token_bytes(32), CHALLENGE.digest(), pp.token_key_id(key), secrets.token_bytes(256)
        )
        for _ in range(count)
    ]


async def _filled(path: Path, key: bytes, count: int) -> None:
    wallet = _wallet(path)
    try:
        wallet._add(pp.Challenge(CHALLENGE, key), _tokens(key, count))
    finally:
        await wallet.close()


_SPENDER = """
import asyncio, json, sys
from pathlib import Path
from privproc.client.tokens import TokenWallet, WalletEmptyError
from privproc.wire import privacypass as pp

async def main() -> list[str]:
    wallet = TokenWallet(acs_target="127.0.0.1:9", credential="pp1.x.AAAA",
                         directory_url="http://127.0.0.1:9/", issuer_name=sys.argv[2],
                         origin=sys.argv[3], path=Path(sys.argv[1]))
    issued_for = pp.TokenChallenge(2, sys.argv[2], b"", (sys.argv[3],))
    challenge = pp.Challenge(issued_for, bytes.fromhex(sys.argv[4]))
    taken = []
    try:
        while True:
            try:
                spent = await wallet.spend(challenge)
            except WalletEmptyError:
                return taken
            taken.append(spent.token.nonce.hex())
    finally:
        await wallet.close()

print(json.dumps(asyncio.run(main())))
"""


def test_processes_sharing_a_wallet_never_take_the_same_token(tmp_path: Path) -> None:
    path = tmp_path / "client" / "wallet.json"
    asyncio.run(_filled(path, KEY_A, 60))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _SPENDER, str(path), ISSUER, ORIGIN, KEY_A.hex()],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    taken: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()[-2000:]
        taken += json.loads(out)
    assert len(taken) == 60 and len(set(taken)) == 60  # every token once, none twice
    assert json.loads(path.read_text())["slots"] == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_the_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "state" / "client" / "wallet.json"
        await _filled(path, KEY_A, 2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


async def test_tokens_of_keys_the_issuer_no_longer_lists_are_pruned(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    await _filled(path, KEY_A, 3)
    await _filled(path, KEY_B, 2)
    wallet = _wallet(path)
    try:
        assert wallet.held() == 5
        wallet._prune({(2, KEY_B): None})  # KEY_A rotated out of the directory
        assert wallet.held() == 2
        assert wallet.available(pp.Challenge(CHALLENGE, KEY_A)) == 0
        # A challenge for the rotated-out key is answered with a token of a listed one.
        spent = await wallet.spend(pp.Challenge(CHALLENGE, KEY_A))
        assert spent.token.token_key_id == pp.token_key_id(KEY_B)
    finally:
        await wallet.close()


async def test_an_empty_wallet_is_a_typed_error_without_a_purchase(tmp_path: Path) -> None:
    wallet = _wallet(tmp_path / "wallet.json")
    try:
        with pytest.raises(WalletEmptyError) as info:
            await wallet.spend(pp.Challenge(CHALLENGE, KEY_A))
    finally:
        await wallet.close()
    assert info.value.reason == "wallet_empty" and wallet.linkable_purchases == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "version": st.just(1),
                "slots": st.lists(
                    st.fixed_dictionaries(
                        {
                            "challenge": st.text(max_size=12),
                            "token_key": st.text(max_size=12),
                            "tokens": st.lists(st.text(max_size=12), max_size=2),
                            "log_index": st.none() | st.integers() | st.text(max_size=3),
                        }
                    ),
                    max_size=2,
                ),
            }
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_file_content_is_read_or_refused_typed(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "wallet.json"
    path.write_bytes(content)

    async def read() -> None:
        wallet = _wallet(path)
        try:
            wallet.held()
        except WalletStoreError as err:
            # The message is fixed: nothing of the file (secrets) is echoed.
            assert str(err) in {
                "the token wallet is corrupt",
                "unknown token wallet version",
                "the token wallet is too large",
            }
        finally:
            await wallet.close()

    asyncio.run(read())
