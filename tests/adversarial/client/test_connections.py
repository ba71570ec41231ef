"""Issue 11, item 1: while a private session is open the client talks to nothing but the relay.

The attack: the log and CDN operators, holding the gateway's timestamps, link the client's
address to its session if the client fetches a release proof (CDN) and a consistency proof
(ledger) between ``POST /v1/sessions`` and ``POST /v1/sessions/{handle}`` — which it did for
the first request of every process. Every service the client may reach is put behind a
recording TCP forwarder on loopback (the livestack binds each to its own port), so every
connection and every chunk the client sends is recorded, whatever library sends it (aiohttp,
gRPC's C core, urllib in a thread). Between the token-bearing ``POST /v1/sessions`` and the
answer, only the relay may appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from privproc.client.ohttp_client import OhttpClient
from privproc.client.private import Chat, ChatMessage, PrivateProcessingClient
from privproc.stackfile import StackFile
from privproc.v1 import predictor_pb2
from tests.livestack import Stack, start_stack, stop_stack

CHAT = Chat("c1", "Team", (ChatMessage("ana", "2026-11-25T09:00:00Z", "The release moves to Thursday."),))
#: The services a client could contact directly (the predictor is reached by mTLS from the gateway only).
SECTIONS = ("relay", "gateway", "cdn", "ledger", "witness", "acs", "verifier")


@dataclass
class Wire:
    """What the forwarders saw, in order: (service, "connect" | "data"), and the client's marks."""

    events: list[tuple[str, str]] = field(default_factory=list)

    def inside(self) -> list[tuple[str, str]]:
        """Every event while at least one session was open (sessions may overlap)."""
        depth, found = 0, []
        for event in self.events:
            if event == ("client", "open"):
                depth += 1
            elif event == ("client", "close"):
                depth -= 1
            elif depth:
                found.append(event)
        assert depth == 0
        return found

    def windows(self) -> list[list[tuple[str, str]]]:
        """The events between each session's open mark and its close mark."""
        found: list[list[tuple[str, str]]] = []
        current: list[tuple[str, str]] | None = None
        for event in self.events:
            if event == ("client", "open"):
                current = []
            elif event == ("client", "close"):
                assert current is not None
                found.append(current)
                current = None
            elif current is not None:
                current.append(event)
        return found


class Forwarder:
    """A loopback TCP forwarder to one service port that records what the client sends."""

    def __init__(self, name: str, host: str, port: int, wire: Wire) -> None:
        self.name, self.host, self.port, self.wire = name, host, port, wire
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.wire.events.append((self.name, "connect"))
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(1 << 16):
                    if record:
                        self.wire.events.append((self.name, "data"))
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)


@contextlib.asynccontextmanager
async def recorded(stack: Stack) -> AsyncIterator[tuple[StackFile, Wire]]:
    """The stack's document with every service address replaced by a recording forwarder."""
    wire = Wire()
    text = json.dumps(stack.file.raw)
    forwarders: list[Forwarder] = []
    for section in SECTIONS:
        value = json.dumps(stack.file.raw.get(section, {}))
        for port in sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", value))):
            forwarder = Forwarder(section, "127.0.0.1", int(port), wire)
            forwarders.append(forwarder)
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{await forwarder.start()}")
    document: dict[str, Any] = json.loads(text)
    document.pop("_path", None)
    try:
        yield StackFile.from_json(document), wire
    finally:
        for forwarder in forwarders:
            await forwarder.stop()


def mark_sessions(monkeypatch: pytest.MonkeyPatch, wire: Wire) -> None:
    """Mark the moment the client sends its token-bearing ``POST /v1/sessions`` (the session opens)."""
    original = OhttpClient.request

    async def request(self: OhttpClient, request: Any, **options: Any) -> Any:
        if request.path == "/v1/sessions" and request.header("authorization"):
            wire.events.append(("client", "open"))
        return await original(self, request, **options)

    monkeypatch.setattr(OhttpClient, "request", request)


class Answer:
    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        return predictor_pb2.ProcessResponse(text="summary", model_id="test-model")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    running = await start_stack(tmp_path, processor=Answer())
    try:
        yield running
    finally:
        await stop_stack(running)


async def _fresh_client(file: StackFile) -> PrivateProcessingClient:
    """A client with an empty proof cache and checkpoint store, its wallet filled beforehand."""
    client = PrivateProcessingClient.from_stack(file)
    wallet: Any = client.wallet
    if hasattr(wallet, "refill"):  # a wallet never buys inside a request (item 2): fill it first
        wallet.refill_policy = None
        await wallet.refill(wait_quiet=False)
    return client


async def _request(client: PrivateProcessingClient, wire: Wire) -> None:
    response, _ = await client.summarize(CHAT)
    wire.events.append(("client", "close"))
    assert response.text == "summary"


async def test_first_request_of_a_fresh_client_meets_no_ledger_or_cdn_in_session(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: a fresh process (no cached release proof). Old main fetched the release proof
    from the CDN and a consistency proof from the ledger inside the session."""
    async with recorded(stack) as (file, wire):
        mark_sessions(monkeypatch, wire)
        client = await _fresh_client(file)
        try:
            await _request(client, wire)
        finally:
            await client.close()
    (window,) = wire.windows()
    assert {service for service, _ in window} == {"relay"}, window


async def test_only_the_relay_appears_between_session_open_and_close(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every connection and every chunk the client sends, over several requests of one client and
    a second fresh client: inside each session window, the relay only; outside, anything."""
    async with recorded(stack) as (file, wire):
        mark_sessions(monkeypatch, wire)
        for _ in range(2):
            client = await _fresh_client(file)
            try:
                for _ in range(3):
                    await _request(client, wire)
            finally:
                await client.close()
    windows = wire.windows()
    assert len(windows) == 6
    for window in windows:
        assert window and {service for service, _ in window} == {"relay"}, window
    # The recording works: outside the windows the client did reach the CDN and the ledger.
    outside = {service for service, _ in wire.events}
    assert {"cdn", "ledger", "relay"} <= outside


async def test_a_request_needing_a_fetch_waits_for_the_open_session(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one request's session is open, a second request on the same client finds its key
    configuration expired: its fetches wait until the first session closed (they do not fail, and
    they do not run inside it), then it runs its own session."""
    async with recorded(stack) as (file, wire):
        mark_sessions(monkeypatch, wire)
        client = await _fresh_client(file)
        second: list[asyncio.Task[None]] = []
        original = OhttpClient.request

        async def request(self: OhttpClient, request: Any, **options: Any) -> Any:
            answer = await original(self, request, **options)
            if not second and request.path == "/v1/sessions" and request.header("authorization"):
                keys: Any = client.ohttp._keys
                keys.expires = 0.0  # the next request must fetch the keys (and their proof) again
                second.append(asyncio.create_task(_request(client, wire)))
                for _ in range(50):  # let it run as far as it can while this session is open
                    await asyncio.sleep(0)
            return answer

        monkeypatch.setattr(OhttpClient, "request", request)
        mark_sessions(monkeypatch, wire)
        try:
            await _request(client, wire)
            await second[0]
        finally:
            await client.close()
    windows = wire.windows()
    assert len(windows) == 2
    for window in windows:
        assert window and {service for service, _ in window} == {"relay"}, window
    between = wire.events[wire.events.index(("client", "close")) :]
    assert ("cdn", "data") in between  # the second request did fetch, once the first had closed
