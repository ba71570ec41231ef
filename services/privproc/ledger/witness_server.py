"""The witness process: C2SP tlog-witness over HTTP (``POST /add-checkpoint``), gRPC health."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from privproc.ledger.witness import MAX_BODY_BYTES, Witness, WitnessState
from privproc.runtime import settings
from privproc.runtime.http import HttpLimits, HttpServer, make_app, read_body
from privproc.runtime.lifecycle import start_fronts
from privproc.runtime.rpc import GrpcServer
from privproc.runtime.telemetry import TelemetryOptions
from privproc.wire import note


@settings.declared("witness")
class WitnessConfig:
    """``privproc serve witness``: a C2SP tlog-witness."""

    state_dir: Path = settings.option(help="directory of its database")
    #: The witness's private key (cosignature/v1, PRIVATE+KEY+<name>+...).
    signer_key_file: Path = settings.option(
        secret_file=True, help="file holding its cosignature/v1 private key"
    )
    #: The verifier keys of the logs it witnesses (each names its log's origin).
    logs: tuple[str, ...] = settings.option(
        default=(), flag="--log", metavar="VKEY", help="a log's verifier key"
    )
    host: str = settings.host_option()
    grpc_port: int = settings.grpc_port_option()
    http_port: int = settings.http_port_option()
    http_limits: HttpLimits = settings.group(help="the HTTP front's limits", default_factory=HttpLimits)
    telemetry: TelemetryOptions = settings.group(
        help="where its metrics and traces go", default_factory=TelemetryOptions
    )


def _logs_by_origin(vkeys: tuple[str, ...]) -> dict[str, Sequence[note.Verifier]]:
    """Each log's verifier keys, by the origin each key names."""
    logs: dict[str, list[note.Verifier]] = {}
    for vkey in vkeys:
        verifier = note.parse_verifier_key(vkey)
        logs.setdefault(verifier.name, []).append(verifier)
    return dict(logs)


class WitnessService:
    name = "witness"

    def __init__(self, config: WitnessConfig) -> None:
        self.config = config
        signer = note.parse_signer_key(settings.read_secret_file(config.signer_key_file))
        if not isinstance(signer, note.CosignatureV1Signer):
            raise ValueError("a witness key is a cosignature/v1 key")
        self.state = WitnessState(config.state_dir / "witness.sqlite3")
        self.witness = Witness(
            self.state,
            signer,
            _logs_by_origin(config.logs),
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
        self.http = HttpServer(app, config.http_limits)

    async def start(self) -> dict[str, object]:
        grpc_port, http_port = await start_fronts("witness", self.config, self.grpc, self.http)
        return {
            "grpc": f"{self.config.host}:{grpc_port}",
            "url": f"http://{self.config.host}:{http_port}",
            "vkey": self.witness.signer.verifier().key_string(),
        }

    async def stop(self) -> None:
        await self.grpc.stop(grace=5.0)
        await self.http.stop()
        self.state.close()


def build(config: WitnessConfig) -> WitnessService:
    """The service ``privproc serve witness`` runs."""
    return WitnessService(config)
