"""Attack: make the gateway spend victims' tokens for nothing, and read its errors in the clear.

The gateway redeemed (spent) the token first and only then looked for a
predictor and a slot in its session table: with the predictor busy or the
table full, the victim's token was gone and the answer was a 503 — for a full
table, a 503 the relay could read. Now the token is checked, a slot reserved,
the predictor opens, and only then is the token spent; every answer after
decapsulation travels encapsulated (200 ``message/ohttp-res`` at the relay).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from privproc.errors import UnavailableError
from privproc.gateway.redemption import MemorySpentStore
from privproc.wire import ohttp
from tests.adversarial.gateway.live import (
    client_hello,
    handle_of,
    mint,
    open_request,
    send,
    type2_challenge,
)
from tests.e2e.test_private_processing import Recorder
from tests.livestack import Stack, start_stack, stop_stack

#: The attacker spreads its requests over many addresses: the relay's per-address limit is not
#: what stops this attack (and must not hide whether the gateway does).
MANY_ADDRESSES = {"rate_per_second": 10_000.0, "burst": 10_000}


@pytest.fixture
async def with_predictor(tmp_path: Path) -> AsyncIterator[Stack]:
    stack = await start_stack(tmp_path, relay_config=MANY_ADDRESSES, processor=Recorder())
    try:
        yield stack
    finally:
        await stop_stack(stack)


def _spent(stack: Stack) -> int:
    store = stack.gateway.redeemer.spent
    assert isinstance(store, MemorySpentStore)
    return len(store)


async def test_no_predictor_answers_encapsulated_and_keeps_the_token(stack: Stack) -> None:
    [token] = mint(stack, await type2_challenge(stack), 1)
    for _ in range(2):  # the same token, twice: it was never spent
        answer = await send(stack, open_request(stack, b"\x16\x03\x01", token))
        assert (answer.relay_status, answer.relay_media_type) == (200, ohttp.MEDIA_TYPE_RESPONSE)
        assert answer.inner is not None and answer.inner.status == 503
    assert _spent(stack) == 0


async def test_full_session_table_answers_encapsulated_and_the_token_then_works(
    with_predictor: Stack,
) -> None:
    stack = with_predictor
    table = stack.gateway.sessions
    table.max_sessions = 1  # one slot: the first session fills it
    table.evict_after_seconds = 3600.0  # and nothing here is old enough to give it up
    first, second = mint(stack, await type2_challenge(stack), 2)
    held = handle_of(await send(stack, open_request(stack, client_hello(stack), first)))
    assert _spent(stack) == 1
    answer = await send(stack, open_request(stack, client_hello(stack), second))
    # The relay sees what it sees for any answer; inside, 503 — and the token is not spent.
    assert (answer.relay_status, answer.relay_media_type) == (200, ohttp.MEDIA_TYPE_RESPONSE)
    assert answer.inner is not None and answer.inner.status == 503
    assert _spent(stack) == 1
    table.drop(held)  # the slot frees up
    handle_of(await send(stack, open_request(stack, client_hello(stack), second)))  # the same token
    assert _spent(stack) == 2
    # And now it is spent: refused with a challenge.
    again = await send(stack, open_request(stack, client_hello(stack), second))
    assert again.inner is not None and again.inner.status == 401
    assert again.inner.header("www-authenticate")


async def test_a_busy_predictor_does_not_spend_the_token(with_predictor: Stack) -> None:
    stack = with_predictor
    assert stack.cvm is not None
    engine = stack.cvm.predictor.engine
    while True:  # fill the predictor with fresh sessions (too young for anything to evict)
        try:
            await engine.open(client_hello(stack))
        except UnavailableError:
            break
    [token] = mint(stack, await type2_challenge(stack), 1)
    answer = await send(stack, open_request(stack, client_hello(stack), token))
    assert (answer.relay_status, answer.relay_media_type) == (200, ohttp.MEDIA_TYPE_RESPONSE)
    assert answer.inner is not None and answer.inner.status == 503
    assert _spent(stack) == 0
    for session_id in list(engine._sessions):  # those sessions end
        engine._drop(session_id)
    handle_of(await send(stack, open_request(stack, client_hello(stack), token)))  # the same token
    assert _spent(stack) == 1


async def test_one_token_sent_many_times_at_once_opens_one_predictor_session(
    with_predictor: Stack,
) -> None:
    """Since the spend waits for the predictor, copies of one token in flight together would
    each make a CVM attest and open a session (only one could pay): the amplification is refused."""
    stack = with_predictor
    assert stack.cvm is not None
    engine = stack.cvm.predictor.engine
    [token] = mint(stack, await type2_challenge(stack), 1)
    copies = 8
    answers = await asyncio.gather(
        *(send(stack, open_request(stack, client_hello(stack), token)) for _ in range(copies))
    )
    statuses = sorted(a.inner.status for a in answers if a.inner is not None)
    assert statuses == [201] + [401] * (copies - 1)
    assert len(engine) == 1  # one CVM session opened, not one per copy
    assert _spent(stack) == 1
