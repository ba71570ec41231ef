"""Attack (issue 11, item 13): several valid key configurations are accepted silently.

After a rotation the gateway's previous OHTTP key configuration stays
logged and valid for its grace period. A gateway (or the CDN in front of
it) that keeps serving that older configuration to one client can tell that
client's requests apart from everyone else's (key partitioning). The device
now accepts only the newest logged configuration valid now, and
``privproc ledger monitor`` flags more than one live configuration beyond a
rotation's grace.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from privproc.client.ohttp_client import OhttpClient
from privproc.client.private import Chat, ChatMessage, PrivateProcessingClient
from privproc.ledger import tool
from privproc.ledger.checkpoints import CheckpointStore, grpc_consistency_source
from privproc.ledger.follower import LogFollower, http_fetcher
from privproc.ledger.keyconsistency import KeyConfigHistory, StaleKeyConfigError
from privproc.ledger.publisher import LedgerPublisher
from privproc.v1 import predictor_pb2
from privproc.wire import ohttp
from privproc.wire.entries import OhttpKeyConfigEntry, parse_entry
from privproc.wire.tlogclient import LogPolicy, TransparencyVerifier
from tests.livestack import LOG_ORIGIN, Stack, start_stack, stop_stack

CHAT = Chat("c1", "Team", (ChatMessage("ana", "2026-11-25T09:00:00Z", "The release moves to Thursday."),))


@pytest.fixture
async def rotating(tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack whose gateway rotates its key every few seconds (grace: the default 600 s)."""
    stack = await start_stack(tmp_path, gateway_config={"rotation_seconds": 2.0})
    try:
        yield stack
    finally:
        await stop_stack(stack)


async def _cdn_keys(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.read()


async def _history(stack: Stack) -> KeyConfigHistory:
    """The log's key configurations, read from its tiles (a device does this outside any session)."""
    assert stack.file.ledger is not None and stack.file.witness is not None
    policy = LogPolicy(LOG_ORIGIN, stack.keys.log_vkey, (stack.file.witness.vkey,), 1)
    source, close = grpc_consistency_source(stack.file.ledger.grpc)
    try:
        verifier = TransparencyVerifier(policy, CheckpointStore(None), source)
        synced = await LogFollower(verifier, http_fetcher(stack.file.ledger.tiles_url)).sync()
    finally:
        await close()
    history = KeyConfigHistory()
    for index, raw in synced.new_entries:
        history.observe(index, parse_entry(raw))
    return history


async def _serve_keys(body: bytes) -> tuple[web.AppRunner, str]:
    """A CDN edge that hands this one client an older configuration."""

    async def keys(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": ohttp.MEDIA_TYPE_KEYS})

    app = web.Application()
    app.router.add_get("/ohttp-keys", keys)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/ohttp-keys"


async def test_an_older_still_valid_key_configuration_is_refused(rotating: Stack) -> None:
    stack = rotating
    old = await _cdn_keys(stack.file.cdn.keys_url)
    for _ in range(100):  # the gateway rotates: a new configuration is logged, then served
        await asyncio.sleep(0.1)
        if await _cdn_keys(stack.file.cdn.keys_url) != old:
            break
    else:
        pytest.fail("the gateway did not rotate")
    history = await _history(stack)
    runner, partitioned_url = await _serve_keys(old)
    client = OhttpClient.from_stack(stack.file)
    try:
        client.keys_url = partitioned_url
        # The older configuration is logged and still inside its validity window (its grace)...
        unaware = await client.keys(refresh=True)
        assert unaware.logged is not None and unaware.sha256 == hashlib.sha256(old).hexdigest()
        # ...but a device that follows the log knows a newer one is valid: it refuses the old one.
        client.key_history = history
        with pytest.raises(StaleKeyConfigError):
            await client.keys(refresh=True)
        # From the real CDN it gets the newest one and goes through.
        client.keys_url = stack.file.cdn.keys_url
        response, _ = await client.health()
        assert response.status == 200
    finally:
        await client.close()
        await runner.cleanup()


async def test_monitor_flags_overlapping_live_key_configurations(rotating: Stack, tmp_path: Path) -> None:
    stack = rotating
    assert stack.file.ledger is not None
    stack_path = tmp_path / "stack.json"
    stack_path.write_text(json.dumps(stack.file.raw))
    state = tmp_path / "monitor" / "checkpoints.json"
    # Rotations with their grace period: several configurations live, none flagged.
    for _ in range(50):
        report = await tool.monitor(stack_path, state)
        if len(report["live_key_configs"]) >= 2:
            break
        await asyncio.sleep(0.2)
    assert len(report["live_key_configs"]) >= 2 and report["alerts"] == []
    # The gateway's key logs two configurations live side by side for an hour: flagged.
    now = int(time.time())
    publisher = LedgerPublisher(stack.file.ledger.grpc, stack.keys.gateway)
    try:
        first = await publisher.publish(
            OhttpKeyConfigEntry.describing(b"\x01partition-a", 201, now - 5, now + 3600).encode()
        )
        second = await publisher.publish(
            OhttpKeyConfigEntry.describing(b"\x01partition-b", 202, now - 5, now + 3600).encode()
        )
    finally:
        await publisher.close()
    report = await tool.monitor(stack_path, state)
    flagged = [a for a in report["alerts"] if a["alert"] == "multiple_live_key_configs"]
    assert any(a["indexes"] == [first.index, second.index] for a in flagged)


class _Model:
    """The CVM's model: counts what reached it."""

    def __init__(self) -> None:
        self.requests: list[predictor_pb2.ProcessRequest] = []

    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        self.requests.append(request)
        return predictor_pb2.ProcessResponse(text="answer", model_id="test-model")


async def test_the_private_processing_client_refuses_a_partitioned_key(tmp_path: Path) -> None:
    """The whole device: its background log refresh teaches it the newest key; an edge that keeps
    serving it the previous one (still in its grace period) gets nothing."""
    model = _Model()
    stack = await start_stack(tmp_path, processor=model, gateway_config={"rotation_seconds": 2.0})
    runner: web.AppRunner | None = None
    try:
        old = await _cdn_keys(stack.file.cdn.keys_url)
        for _ in range(100):
            await asyncio.sleep(0.1)
            if await _cdn_keys(stack.file.cdn.keys_url) != old:
                break
        runner, partitioned_url = await _serve_keys(old)
        async with PrivateProcessingClient.from_stack(stack.file) as client:
            await client.wallet.refill(wait_quiet=False)
            assert client.refresher is not None
            await client.refresher.refresh()
            client.ohttp.keys_url = partitioned_url
            with pytest.raises(StaleKeyConfigError):
                await client.summarize(CHAT)
            assert model.requests == []
            client.ohttp.keys_url = stack.file.cdn.keys_url
            response, _ = await client.summarize(CHAT)
            assert response.text == "answer"
    finally:
        if runner is not None:
            await runner.cleanup()
        await stop_stack(stack)
