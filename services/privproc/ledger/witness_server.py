"""The witness process: C2SP tlog-witness over HTTP (``POST /add-checkpoint``), gRPC health."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from privproc import events
from privproc.ledger.witness import MAX_BODY_BYTES, Witness, WitnessState
from privproc.runtime.http import HttpServer, make_app, read_body
from privproc.runtime.rpc import GrpcServer
from privproc.wire import note


@dataclass
class WitnessConfig:
    state_dir: Path
    #: The witness's private key string (cosignature/v1, PRIVATE+KEY+<name>+...).
    signer_key: str
    #: Log origin → the log's verifier key strings.
    logs: dict[str, list[str]] = field(default_factory=dict)
    host: str = "127.0.0.1"
    grpc_port: int = 0
    http_port: int = 0


class WitnessService:
    name = "witness"

    def __init__(self, config: WitnessConfig) -> None:
        self.config = config
        signer = note.parse_signer_key(config.signer_key)
        if not isinstance(signer, note.CosignatureV1Signer):
            raise ValueError("a witness key is a cosignature/v1 key")
        self.state = WitnessState(config.state_dir / "witness.sqlite3")
        self.witness = Witness(
            self.state,
            signer,
            {origin: [note.parse_verifier_key(v) for v in vkeys] for origin, vkeys in config.logs.items()},
        )
        self.grpc = GrpcServer("witness")
        app = make_app("witness", MAX_BODY_BYTES)

        async def add_checkpoint(request: web.Request) -> web.Response:
            body = await read_body(request, MAX_BODY_BYTES)
            answer = await asyncio.to_thread(self.witness.add_checkpoint, body)
            return web.Response(
                status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type}
            )

        app.router.add_post("/add-checkpoint", add_checkpoint)
        self.http = HttpServer(app)

    async def start(self) -> dict[str, object]:
        grpc_port = await self.grpc.start(self.config.host, self.config.grpc_port)
        http_port = await self.http.start(self.config.host, self.config.http_port)
        events.emit(events.ServiceStarted(service="witness", transport="grpc", port=grpc_port))
        events.emit(events.ServiceStarted(service="witness", transport="http", port=http_port))
        return {
            "grpc": f"{self.config.host}:{grpc_port}",
            "url": f"http://{self.config.host}:{http_port}",
            "vkey": self.witness.signer.verifier().key_string(),
        }

    async def stop(self) -> None:
        await self.grpc.stop(grace=5.0)
        await self.http.stop()
        self.state.close()
