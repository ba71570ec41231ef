"""Gateway replicas behind one Service share one OHTTP key schedule (a seed file): real processes.

Two ``privproc serve gateway`` processes and the stack's own gateway, started at different times,
share a seed file and Redis, and publish to the same CDN and ledger, with a short rotation so the
test crosses several epochs: a key configuration fetched from any of them (or from the CDN, whoever
published it last) opens at every other; the ledger holds one entry per epoch however many
replicas published it; a full client (proofs, key consistency) still gets through the relay.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import aiohttp

from privproc.client import OhttpClient
from privproc.gateway.keys import new_seed
from privproc.gateway.server import GatewayConfig
from privproc.stack import Child, _spawn, _stop
from privproc.wire import bhttp, ohttp
from privproc.wire.entries import OhttpKeyConfigEntry, parse_entry
from tests.livestack import secret_file, start_stack, stop_stack
from tests.redis_server import redis_server

ROTATION = 4.0
GRACE = 3.0
HEALTH = bhttp.Request("GET", "https", "privproc.local", "/v1/health")


async def _config(session: aiohttp.ClientSession, url: str) -> ohttp.KeyConfig:
    async with session.get(url) as resp:
        assert resp.status == 200
        return ohttp.select_key_config(ohttp.decode_key_config_list(await resp.read()))[0]


async def _health(session: aiohttp.ClientSession, url: str, config: ohttp.KeyConfig) -> int:
    """The inner status of a health request encapsulated to ``config`` and sent to ``url``."""
    payload, context = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
    headers = {"Content-Type": ohttp.MEDIA_TYPE_REQUEST}
    async with session.post(url, data=payload, headers=headers) as resp:
        assert resp.status == 200, (resp.status, await resp.text())  # 400 ohttp_key: another schedule
        answer = await resp.read()
    return bhttp.decode_response(context.decapsulate_response(answer)).status


async def _off_a_boundary() -> None:
    """Wait until the epoch is at least 0.5 s old and has 1.5 s left (publishing settled)."""
    into = time.time() % ROTATION
    if not 0.5 <= into <= ROTATION - 1.5:
        await asyncio.sleep((ROTATION - into + 0.5) % ROTATION)


async def test_gateway_processes_sharing_a_seed_open_each_others_key_configs(tmp_path: Path) -> None:
    seed_file = secret_file(tmp_path / "keys", "ohttp.seed", new_seed())
    schedule = {"ohttp_seed_file": seed_file, "rotation_seconds": ROTATION, "grace_seconds": GRACE}
    stack = await start_stack(tmp_path, gateway_config=schedule)
    children: list[Child] = []
    try:
        with redis_server(tmp_path) as redis_url:
            assert stack.file.ledger is not None and stack.ledger is not None
            for i in range(2):
                await asyncio.sleep(1.3)  # started apart: schedules must not depend on the start
                config = GatewayConfig(
                    redis_url=redis_url,
                    cdn_target=stack.file.cdn.grpc,
                    cdn_credential_file=stack.credentials["gateway"],
                    ledger_target=stack.file.ledger.grpc,
                    ledger_key_file=tmp_path / "keys" / "gateway-publisher.key",
                    **schedule,  # type: ignore[arg-type]
                )
                children.append(await _spawn(config, stderr_file=tmp_path / f"gateway-{i}.stderr"))
            one, other = (str(child.endpoints["ohttp_url"]) for child in children)
            in_process = str(stack.file.gateway.ohttp_url)
            pairs = [(one, other), (other, one), (in_process, one), (stack.file.cdn.keys_url, other)]
            key_ids: set[int] = set()
            async with aiohttp.ClientSession() as session:
                deadline = time.monotonic() + 2.5 * ROTATION
                while time.monotonic() < deadline:
                    for source, target in pairs:
                        config_seen = await _config(session, source)
                        key_ids.add(config_seen.key_id)
                        assert await _health(session, target, config_seen) == 200
                    await asyncio.sleep(0.2)
                # Off a boundary every replica advertises the very same bytes.
                await _off_a_boundary()
                bodies = set()
                for url in (one, other, in_process):
                    async with session.get(url) as resp:
                        bodies.add(await resp.read())
                assert len(bodies) == 1
            assert len(key_ids) >= 2  # the test crossed a rotation
            # Every replica logged every epoch's configuration: the ledger holds each once.
            store = stack.ledger.log.store
            logged = [parse_entry(e) for e in store.entries(0, store.size)]
            configs = [e for e in logged if isinstance(e, OhttpKeyConfigEntry)]
            assert len(configs) >= 3  # the epoch the stack started in, and two rotations at least
            assert len({c.not_before for c in configs}) == len(configs)
            assert all(c.not_before % ROTATION == 0 for c in configs)
            assert all(c.not_after == c.not_before + ROTATION + GRACE for c in configs)
            # A full client checks the CDN's configuration against the log, as published by any.
            await _off_a_boundary()
            async with OhttpClient.from_stack(stack.file) as client:
                response, receipt = await client.health()
            assert response.status == 200
            assert receipt.ohttp_key_id == int(time.time() // ROTATION) % 256
    finally:
        await _stop(children)
        await stop_stack(stack)
    # The seed is a secret: the replicas' events name key ids, never the seed or a key.
    seed_text = seed_file.read_text().strip()
    for i in range(2):
        log = (tmp_path / f"gateway-{i}.stderr").read_text()
        assert '"event":"gateway.keys_published"' in log
        assert seed_text not in log and base64.b64decode(seed_text).hex() not in log
