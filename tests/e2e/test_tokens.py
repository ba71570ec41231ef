"""Tokens end to end: ACS issuance, the 401 challenge flow, redemption, and attacks on each step."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio

from privproc.acs.server import AcsConfig, AcsService
from privproc.client import OhttpClient, TokenWallet
from privproc.client.tokens import KeyConsistencyError
from privproc.errors import RateLimitedError, UnauthenticatedError
from privproc.gateway.redemption import MemorySpentStore, RedisSpentStore
from privproc.v1 import acs_pb2, acs_pb2_grpc
from privproc.wire import bhttp, ohttp
from privproc.wire import privacypass as pp
from tests.livestack import Stack, start_stack, stop_stack
from tests.redis_server import redis_server


def wallet_for(stack: Stack, **kw: Any) -> TokenWallet:
    """A wallet that buys on the spot: these tests are about issuance and redemption themselves."""
    assert stack.file.acs is not None and stack.file.demo_account is not None
    kw.setdefault("allow_linkable_purchase", True)
    return TokenWallet(
        acs_target=stack.file.acs.grpc,
        credential=kw.pop("credential", stack.file.demo_account.credential),
        directory_url=stack.file.cdn.issuer_directory_url,
        issuer_name=stack.file.acs.issuer_name,
        origin=stack.file.gateway.origin,
        **kw,
    )


async def _session(stack: Stack, wallet: TokenWallet) -> tuple[bhttp.Response, Any]:
    async with OhttpClient.from_stack(stack.file) as client:
        return await client.session_request(wallet)


async def test_session_with_type2_token_reaches_the_gateway(stack: Stack) -> None:
    wallet = wallet_for(stack, batch_size=4)
    try:
        async with OhttpClient.from_stack(stack.file) as client:
            for _ in range(3):
                response, receipt = await client.session_request(wallet)
                assert response.status == 503  # token checked; no predictor yet
                assert json.loads(response.content)["title"] == "no predictor available"
                assert receipt.token_type == 2
    finally:
        await wallet.close()
    assert stack.acs is not None
    # One batch of 4 bought ahead of need; 3 used; one left in the wallet.
    assert (
        stack.acs.issuer.limiter.remaining("demo", stack.acs.clock())
        == stack.acs.config.tokens_per_window - 4
    )
    # None spent: a token is spent only once a predictor has opened the session it pays for.
    assert (
        isinstance(stack.gateway.redeemer.spent, MemorySpentStore) and len(stack.gateway.redeemer.spent) == 0
    )


async def test_session_with_type1_token(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path, acs_config={"token_types": (pp.TOKEN_TYPE_VOPRF,)})
    wallet = wallet_for(stack, batch_size=2)
    try:
        response, receipt = await _session(stack, wallet)
        assert response.status == 503 and receipt.token_type == 1
    finally:
        await wallet.close()
        await stop_stack(stack)


async def test_spent_token_is_refused_with_a_fresh_challenge(stack: Stack) -> None:
    wallet = wallet_for(stack, batch_size=1)
    try:
        async with OhttpClient.from_stack(stack.file) as client:
            await client.session_request(wallet)
            assert client._challenge is not None
            spent = await wallet.spend(client._challenge)
            first, _ = await client.request(client._session_request(b"", spent.header))
            await stack.gateway.redeemer.redeem(spent.header)  # spent, as when a predictor opens
            again, _ = await client.request(client._session_request(b"", spent.header))
    finally:
        await wallet.close()
    assert first.status == 503
    assert again.status == 401
    assert pp.parse_www_authenticate(again.header("www-authenticate") or "")


async def test_requests_without_or_with_bad_tokens_get_401_challenges(stack: Stack) -> None:
    async with OhttpClient.from_stack(stack.file) as client:
        for header in (None, "PrivateToken token=AAAA", 'PrivateToken token="' + "A" * 400 + '"'):
            response, _ = await client.request(client._session_request(b"", header))
            assert response.status == 401
            challenges = pp.parse_www_authenticate(response.header("www-authenticate") or "")
            assert {c.challenge.token_type for c in challenges} == {1, 2}
            for challenge in challenges:
                assert challenge.challenge.issuer_name == "issuer.privproc.local"
                assert challenge.challenge.origin_info == ("privproc.local",)


async def test_issuance_needs_a_valid_account_credential(stack: Stack) -> None:
    assert stack.file.acs is not None
    async with aiohttp.ClientSession() as session:
        for headers in (
            {},
            {"Authorization": "Bearer pp1.demo.AAAA"},
            {"Authorization": "Basic ZGVtbzp4"},
        ):
            async with session.post(
                stack.file.acs.token_request_url,
                data=b"\x00\x02\x00" + bytes(256),
                headers={"Content-Type": pp.MEDIA_TYPE_TOKEN_REQUEST, **headers},
            ) as resp:
                assert resp.status == 401
    async with aio.insecure_channel(stack.file.acs.grpc) as channel:
        with pytest.raises(aio.AioRpcError) as info:
            await acs_pb2_grpc.AcsStub(channel).IssueTokens(
                acs_pb2.IssueTokensRequest(token_type=2, token_requests=[b"\x00\x02\x00" + bytes(256)]),
                metadata=(("authorization", "Bearer nope"),),
                timeout=5,
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    wallet = wallet_for(stack, credential="pp1.demo.forged")
    try:
        with pytest.raises(UnauthenticatedError):
            await _session(stack, wallet)
    finally:
        await wallet.close()


async def test_rate_limit_holds_across_an_acs_restart(tmp_path: Path) -> None:
    config = {"tokens_per_window": 6}
    stack = await start_stack(tmp_path, acs_config=config)
    try:
        wallet = wallet_for(stack, batch_size=4)
        try:
            await _session(stack, wallet)  # buys 4
        finally:
            await wallet.close()
        # Restart the ACS on the same state directory (and the same port).
        assert stack.acs is not None and stack.file.acs is not None
        port = int(stack.file.acs.grpc.rsplit(":", 1)[1])
        await stack.acs.stop()
        stack.acs = AcsService(
            AcsConfig(state_dir=tmp_path / "acs", grpc_port=port, demo_account="demo", **config)
        )
        await stack.acs.start()
        wallet = wallet_for(stack, batch_size=4)
        try:
            with pytest.raises(RateLimitedError):
                await _session(stack, wallet)  # 4 + 4 > 6: refused, nothing counted
        finally:
            await wallet.close()
        wallet = wallet_for(stack, batch_size=2)
        try:
            response, _ = await _session(stack, wallet)  # 4 + 2 = 6: fine
            assert response.status == 503
        finally:
            await wallet.close()
    finally:
        await stop_stack(stack)


async def test_rotated_out_issuer_key_is_refused(tmp_path: Path) -> None:
    stack = await start_stack(
        tmp_path, acs_config={"epoch_seconds": 1.0}, gateway_config={"issuer_refresh_seconds": 0.1}
    )
    wallet = wallet_for(stack, batch_size=2)
    try:
        async with OhttpClient.from_stack(stack.file) as client:
            await client.session_request(wallet)
            assert client._challenge is not None
            stale = await wallet.spend(client._challenge)
            await asyncio.sleep(2.6)  # two epochs: the key that signed it is retired
            response, _ = await client.request(client._session_request(b"", stale.header))
            assert response.status == 401
            # The client recovers by itself with the new key.
            response, receipt = await client.session_request(wallet)
            assert response.status == 503 and receipt.token_type == 2
    finally:
        await wallet.close()
        await stop_stack(stack)


async def test_wallet_refuses_a_challenge_key_the_issuer_does_not_publish(stack: Stack) -> None:
    """A gateway that tags one user with its own token key is caught before any token is bought."""
    from privproc.acs.keys import IssuerKeyring
    from privproc.acs.store import Database

    now = time.time()
    rogue = IssuerKeyring(Database(":memory:"), epoch_seconds=3600)
    rogue.refresh(now=now)
    stack.gateway.redeemer.update_keys(pp.IssuerDirectory("/x", rogue.directory_keys(now=now)))
    assert stack.acs is not None
    before = stack.acs.issuer.limiter.remaining("demo", stack.acs.clock())
    wallet = wallet_for(stack)
    try:
        with pytest.raises(KeyConsistencyError):
            await _session(stack, wallet)
    finally:
        await wallet.close()
    assert stack.acs.issuer.limiter.remaining("demo", stack.acs.clock()) == before


async def test_gateway_without_an_issuer_fails_closed(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path, with_acs=False)
    try:
        async with OhttpClient.from_stack(stack.file) as client:
            response, _ = await client.request(client._session_request(b"", None))
        assert response.status == 503
    finally:
        await stop_stack(stack)


async def test_nothing_stored_or_logged_at_issuance_is_shared_with_redemption(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        wallet = wallet_for(stack, batch_size=3)
        try:
            async with OhttpClient.from_stack(stack.file) as client:
                await client.session_request(wallet)  # learns the challenge; that token is kept
                assert client._challenge is not None
                for _ in range(3):
                    spent = await wallet.spend(client._challenge)
                    await client.request(client._session_request(b"", spent.header))
                    await stack.gateway.redeemer.redeem(spent.header)  # as when a predictor opens
        finally:
            await wallet.close()
    assert stack.acs is not None
    acs_values: set[bytes] = set()
    for table in ("accounts", "issuance", "issuer_keys", "secrets"):
        for row in stack.acs.db.conn.execute(f"SELECT * FROM {table}").fetchall():
            acs_values |= {v if isinstance(v, bytes) else str(v).encode() for v in row}
    gateway_store = stack.gateway.redeemer.spent
    assert isinstance(gateway_store, MemorySpentStore)
    gateway_values = set(gateway_store._expiry)
    assert len(gateway_values) == 3
    acs_log = [r.getMessage() for r in caplog.records if '"event":"acs.' in r.getMessage()]
    gateway_log = [r.getMessage() for r in caplog.records if '"event":"gateway.' in r.getMessage()]
    assert acs_log and gateway_log
    gateway_blob = b"\n".join(gateway_values) + "\n".join(gateway_log).encode()
    acs_blob = b"\n".join(acs_values) + "\n".join(acs_log).encode()
    for value in acs_values:
        if len(value) >= 8:
            assert value not in gateway_blob and value.hex().encode() not in gateway_blob
    for value in gateway_values:
        assert value not in acs_blob and value.hex().encode() not in acs_blob
    # The account appears on the issuance side only, and never in any log line.
    assert b"demo" in acs_values and b"demo" not in gateway_blob
    assert not any("demo" in line for line in acs_log + gateway_log)


async def test_double_spend_across_two_gateway_processes_sharing_redis(tmp_path: Path) -> None:
    from privproc.gateway.server import GatewayConfig
    from privproc.stack import _spawn, _stop

    stack = await start_stack(tmp_path)
    children = []
    wallet = wallet_for(stack, batch_size=1)
    try:
        with redis_server(tmp_path) as redis_url:
            assert stack.file.acs is not None
            for _ in range(2):
                children.append(
                    await _spawn(GatewayConfig(acs_target=stack.file.acs.grpc, redis_url=redis_url))
                )
            async with OhttpClient.from_stack(stack.file) as client:
                await client.session_request(wallet)  # learn the challenge (via the in-process gateway)
                assert client._challenge is not None
                spent = await wallet.spend(client._challenge)
            # The token is spent at one replica (the in-process gateway, on the same Redis), as
            # when a predictor opens the session it pays for; the other processes must refuse it.
            replica_store = stack.gateway.redeemer.spent
            stack.gateway.redeemer.spent = RedisSpentStore(redis_url)
            try:
                await stack.gateway.redeemer.redeem(spent.header)
            finally:
                await stack.gateway.redeemer.spent.close()
                stack.gateway.redeemer.spent = replica_store
            request = bhttp.encode_request(client._session_request(b"", spent.header))
            statuses = []
            for child in children:
                url = str(child.endpoints["ohttp_url"])
                async with aiohttp.ClientSession() as session:
                    async with session.get(url) as resp:
                        config, _ = ohttp.select_key_config(ohttp.decode_key_config_list(await resp.read()))
                    payload, context = ohttp.encapsulate_request(config, request)
                    async with session.post(
                        url, data=payload, headers={"Content-Type": ohttp.MEDIA_TYPE_REQUEST}
                    ) as resp:
                        answer = await resp.read()
                statuses.append(bhttp.decode_response(context.decapsulate_response(answer)).status)
            assert statuses == [401, 401]  # spent at one replica, refused by every other
    finally:
        await _stop(children)
        await wallet.close()
        await stop_stack(stack)
