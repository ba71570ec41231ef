"""Attack: just-in-time token purchase links the account to the request.

An empty wallet used to buy a batch from the ACS (which sees the account and
the address) and redeem one ~10 ms later; the CLI's wallet lived in memory,
so every CLI call did exactly that. The issuer and the gateway, comparing
timestamps, could tell which account made which request.

Played here against a live stack, with every connection to the ACS recorded
by a TCP proxy in front of it (accept and close times):

* a request with an empty wallet raises a typed error and opens no
  connection to the ACS;
* a wallet filled by one process is used by the next one, from a 0600
  file, without contacting the ACS, and the token it sends is already gone
  from the file when it is sent;
* the background refill buys at random times, and never while a private
  request is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from privproc.client import OhttpClient, TokenWallet
from privproc.client.private import Chat, ChatMessage, PrivateProcessingClient
from privproc.errors import PrivprocError
from privproc.stackfile import StackFile
from privproc.v1 import predictor_pb2
from tests.livestack import Stack, start_stack, stop_stack

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class TcpRecorder:
    """A TCP proxy that records when each connection through it opened and closed."""

    target: tuple[str, int]
    connections: list[list[float]] = field(default_factory=list)  # [opened, closed]
    chunks: list[float] = field(default_factory=list)  # when each piece of data went through
    server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        entry = [time.monotonic(), float("inf")]
        self.connections.append(entry)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            entry[1] = time.monotonic()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, client_side: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    self.chunks.append(time.monotonic())
                    dst.write(data)
                    await dst.drain()
            if client_side:  # the client closed: from here on the issuer sees nothing of it
                entry[1] = min(entry[1], time.monotonic())
            with contextlib.suppress(OSError):
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        finally:
            entry[1] = min(entry[1], time.monotonic())


@contextlib.asynccontextmanager
async def acs_recorder(stack: Stack) -> AsyncIterator[TcpRecorder]:
    assert stack.file.acs is not None
    async with recorder_for(stack.file.acs.grpc) as recorder:
        yield recorder


@contextlib.asynccontextmanager
async def recorder_for(address: str) -> AsyncIterator[TcpRecorder]:
    host, port = address.rsplit(":", 1)
    recorder = TcpRecorder((host, int(port)))
    await recorder.start()
    try:
        yield recorder
    finally:
        await recorder.stop()


def _wallet(stack: Stack, acs_target: str, **kw: Any) -> TokenWallet:
    """A wallet of the demo account whose ACS traffic goes through ``acs_target``."""
    assert stack.file.acs is not None and stack.file.demo_account is not None
    return TokenWallet(
        acs_target=acs_target,
        credential=stack.file.demo_account.credential,
        directory_url=stack.file.cdn.issuer_directory_url,
        issuer_name=stack.file.acs.issuer_name,
        origin=stack.file.gateway.origin,
        **kw,
    )


async def test_a_request_with_an_empty_wallet_buys_nothing_and_fails_typed(stack: Stack) -> None:
    assert stack.acs is not None
    before = stack.acs.issuer.limiter.remaining("demo", stack.acs.clock())
    async with acs_recorder(stack) as acs:
        wallet = _wallet(stack, acs.address)
        try:
            async with OhttpClient.from_stack(stack.file) as client:
                with pytest.raises(PrivprocError) as info:
                    await client.session_request(wallet)
        finally:
            await wallet.close()
    assert info.value.reason == "wallet_empty"
    assert acs.connections == []  # the issuer never saw the account around this request
    assert stack.acs.issuer.limiter.remaining("demo", stack.acs.clock()) == before


_NEXT_PROCESS = """
import asyncio, json, sys
from pathlib import Path
from privproc.client import OhttpClient, TokenWallet
from privproc.client import tokens as tokens_module
from privproc.stackfile import StackFile
from privproc.wire import privacypass as pp

async def main() -> dict:
    stack = StackFile.load(Path(sys.argv[1]))
    wallet = TokenWallet.from_stack(stack, refill=None)
    seen = {}
    async with OhttpClient.from_stack(stack) as client:
        send = client.request

        async def spying(request, **kw):
            header = request.header("authorization") if hasattr(request, "header") else None
            header = header or dict(request.headers).get("authorization")
            if header is not None:
                token = pp.parse_authorization(header).encode()
                document = json.loads(wallet.path.read_text())
                held = [pp.b64url_decode(t) for slot in document["slots"] for t in slot["tokens"]]
                seen["sent_while_in_file"] = token in held
                seen["held_when_sent"] = len(held)
            return await send(request, **kw)

        client.request = spying
        before = wallet.held()
        response, receipt = await client.session_request(wallet)
        after = wallet.held()
    await wallet.close()
    return {"status": response.status, "token_type": receipt.token_type,
            "before": before, "after": after, **seen}

print(json.dumps(asyncio.run(main())))
"""


async def test_a_persisted_wallet_serves_the_next_process_without_the_issuer(
    stack: Stack, tmp_path: Path
) -> None:
    async with acs_recorder(stack) as acs:
        # The stack as a CLI sees it: stack.json on disk, its ACS reached through the recorder.
        document = json.loads(json.dumps(stack.file.raw))
        document["acs"]["grpc"] = acs.address
        stack_path = tmp_path / "state" / "stack.json"
        stack_path.parent.mkdir()
        stack_path.write_text(json.dumps(document))
        wallet_path = tmp_path / "state" / "client" / "wallet.json"

        # Process 1: bought ahead of need (the only ACS contact), then gone.
        first = _wallet(stack, acs.address, path=wallet_path, batch_size=3)
        try:
            assert await first.refill(wait_quiet=False) == 3
        finally:
            await first.close()
        assert len(acs.connections) == 1
        assert stat.S_IMODE(wallet_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(wallet_path.parent.stat().st_mode) == 0o700

        # Process 2: a fresh interpreter spends one token from the file.
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _NEXT_PROCESS,
            str(stack_path),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await child.communicate()
        assert child.returncode == 0, err.decode()[-2000:]
        result = json.loads(out)
    assert result["status"] != 401 and result["token_type"] == 2  # the gateway took the token
    assert (result["before"], result["after"]) == (3, 2)
    # No double use: the token was out of the file before it left the device.
    assert result["sent_while_in_file"] is False and result["held_when_sent"] == 2
    assert len(acs.connections) == 1  # the second process never contacted the issuer
    remaining = json.loads(wallet_path.read_text())
    assert sum(len(slot["tokens"]) for slot in remaining["slots"]) == 2
    assert stat.S_IMODE(wallet_path.stat().st_mode) == 0o600


class Answer:
    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        return predictor_pb2.ProcessResponse(text="ok", model_id="test-model")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Stack]:
    stack = await start_stack(tmp_path, processor=Answer())
    try:
        yield stack
    finally:
        await stop_stack(stack)


CHAT = Chat("c", "t", (ChatMessage("ana", "2026-11-25T09:00:00Z", "lunch at noon?"),))


async def test_background_refill_never_talks_to_the_issuer_during_a_request(world: Stack) -> None:
    from privproc.client.tokens import RefillPolicy

    stack = world
    relay_address = stack.file.relay.ohttp_url.split("/")[2]
    async with acs_recorder(stack) as acs, recorder_for(relay_address) as relay:
        document = json.loads(json.dumps(stack.file.raw))
        # Every connection to the ACS and every byte to the relay goes through a recorder.
        document["acs"]["grpc"] = acs.address
        document["relay"]["ohttp_url"] = stack.file.relay.ohttp_url.replace(relay_address, relay.address)
        # Small batches and short random delays so that the refill runs many times in the test.
        client = PrivateProcessingClient.from_stack(
            StackFile.from_json(document),
            batch_size=2,
            refill=RefillPolicy(
                low_water=3, min_delay=0.01, max_delay=0.2, quiet_seconds=0.3, settle_seconds=0.4
            ),
        )
        wallet = client.wallet
        answered = 0
        # The timeout only keeps a broken refill from hanging the suite; nothing asserts on time.
        async with client, asyncio.timeout(300):
            await wallet.refill(wait_quiet=False)  # the first batch, ahead of any request
            prefill = len(acs.connections)
            wallet.start_refill()
            for _ in range(6):
                # The device waits for its background refill: the request is made as soon as a
                # token shows, so some start while the purchase is still under way.
                while wallet.held() == 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                response, _ = await client.summarize(CHAT)
                answered += response.text == "ok"
            while len(acs.connections) < prefill + 2:  # noqa: ASYNC110 - polls the proxy's record
                await asyncio.sleep(0.05)
    assert answered == 6
    assert len(acs.connections) - prefill >= 2  # it did buy in the background, more than once
    assert relay.chunks
    for opened, closed in acs.connections:
        # While a connection to the issuer was open, nothing went to the relay: no request.
        assert not [t for t in relay.chunks if opened <= t <= closed], (opened, closed)
