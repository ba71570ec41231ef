"""Must show (issue 11, item 5): with 64 held sessions, a new client still gets a summary.

The attack as it was played: 64 tokens open 64 sessions on the one predictor
(its whole table), and the attacker keeps each alive by sending empty and
handshake-only continuations. Both the gateway and the predictor used to
push the session's expiry on each of them, so the predictor answered "busy"
to everyone else, for as long as the attacker kept talking. Now empty
continuations are refused at the gateway before anything is looked up,
nothing extends a deadline, and a full table gives up its oldest idle
handshake (older than a second — a real client finishes in one round trip).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from privproc.client.private import PrivateProcessingClient
from tests.adversarial.gateway.live import (
    client_hello,
    continue_request,
    handle_of,
    mint,
    open_request,
    send,
    type2_challenge,
)
from tests.e2e.test_private_processing import CHAT, Recorder
from tests.livestack import Stack, start_stack, stop_stack

#: The attacker spreads its requests over many addresses: the relay's per-address limit is not
#: what stops this attack (and must not hide whether the gateway does).
MANY_ADDRESSES = {"rate_per_second": 10_000.0, "burst": 10_000}

HELD = 64  # the predictor's whole session table
#: The first bytes of a TLS record header, and no more: the handshake goes nowhere, and nothing fails.
HANDSHAKE_ONLY = b"\x16\x03"


async def _fill_wallet(client: PrivateProcessingClient) -> None:
    """Tokens bought ahead of the request, as a device does (a wallet that buys on the spot,
    without ``refill``, needs nothing)."""
    refill = getattr(client.wallet, "refill", None)
    if refill is not None:
        await refill(wait_quiet=False)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Stack, Recorder]]:
    recorder = Recorder()
    stack = await start_stack(tmp_path, relay_config=MANY_ADDRESSES, processor=recorder)
    try:
        yield stack, recorder
    finally:
        await stop_stack(stack)


async def test_a_new_client_gets_a_summary_while_64_sessions_are_held(world: tuple[Stack, Recorder]) -> None:
    stack, recorder = world
    tokens = mint(stack, await type2_challenge(stack), HELD)
    handles = [handle_of(await send(stack, open_request(stack, client_hello(stack), t))) for t in tokens]
    empty_statuses: set[int] = set()
    for handle in handles:
        partial = await send(stack, continue_request(stack, handle, HANDSHAKE_ONLY))
        assert partial.inner is not None and partial.inner.status == 200  # relayed; still handshaking
    for _ in range(2):  # keep every session "alive", the way the attacker did
        for handle in handles:
            empty = await send(stack, continue_request(stack, handle, b""))
            assert empty.inner is not None
            empty_statuses.add(empty.inner.status)
    await asyncio.sleep(1.1)  # every held handshake is now older than a real client's round trip
    async with PrivateProcessingClient.from_stack(stack.file) as client:
        await _fill_wallet(client)
        summary, receipt = await client.summarize(CHAT)
    assert summary.text == "2 messages" and receipt.model_id == "test-model"
    assert empty_statuses == {400}  # refused at the gateway: nothing looked up, nothing relayed
    assert len(recorder.requests) == 1  # the attacker's sessions never ran the model
