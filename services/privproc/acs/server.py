"""The ACS process: gRPC ``privproc.v1.Acs`` and the RFC 9578 HTTP issuance binding.

HTTP: ``GET /.well-known/private-token-issuer-directory`` and
``POST /token-request`` (``application/private-token-request`` →
``application/private-token-response``), authenticated with
``Authorization: Bearer <account credential>``. gRPC: ``IssueTokens``
(batched, credential in the ``authorization`` metadata),
``GetIssuerDirectory`` and the internal ``VerifyToken``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from grpc import aio
from opentelemetry import metrics

from privproc import events
from privproc.acs.accounts import (
    AccountStore,
    Authenticator,
    SignedCredentialAuthenticator,
    bearer_credential,
)
from privproc.acs.issuer import Issuer
from privproc.acs.keys import IssuerKeyring
from privproc.acs.ratelimit import IssuanceLimiter
from privproc.acs.store import Database
from privproc.errors import ConfigError
from privproc.ledger.publisher import key_publishers
from privproc.runtime import settings
from privproc.runtime.cdn_publisher import token_key_proof_name
from privproc.runtime.http import HttpLimits, HttpServer, make_app, read_body, require_media_type
from privproc.runtime.lifecycle import start_fronts
from privproc.runtime.rpc import GrpcServer, metadata_value
from privproc.runtime.tasks import supervise
from privproc.runtime.telemetry import TelemetryOptions
from privproc.v1 import acs_pb2, acs_pb2_grpc
from privproc.wire import privacypass as pp
from privproc.wire.entries import TokenIssuerKeyEntry

TOKEN_REQUEST_PATH = "/token-request"  # noqa: S105 - a path, not a secret
DEFAULT_ISSUER_NAME = "issuer.privproc.local"


#: Issuer keys created or retired, by token type.
_KEY_CHANGES = metrics.get_meter("privproc.acs").create_counter("privproc.acs.key.rotations", unit="{key}")


@settings.declared("acs")
class AcsConfig:
    """``privproc serve acs``: the token issuer (ACS)."""

    state_dir: Path = settings.option(help="directory of its database")
    host: str = settings.host_option()
    grpc_port: int = settings.grpc_port_option()
    http_port: int = settings.http_port_option()
    issuer_name: str = settings.option(default=DEFAULT_ISSUER_NAME, help="token issuer name")
    epoch_seconds: float = settings.option(
        default=86400.0, help="issuer key epoch (a key redeems for two; give the gateway the same value)"
    )
    tokens_per_window: int = settings.option(default=1000, help="tokens per account per window")
    window_seconds: float = settings.option(default=86400.0, help="rate-limit window")
    token_types: tuple[int, ...] = settings.option(
        default=(pp.TOKEN_TYPE_BLIND_RSA, pp.TOKEN_TYPE_VOPRF),
        flag="--token-type",
        parse=lambda text: int(text, 0),
        format=lambda value: f"0x{value:04x}",
        help="a Privacy Pass token type it issues (0x0002 blind RSA, 0x0001 VOPRF)",
    )
    cdn_target: str | None = settings.option(
        default=None, flag="--cdn", help="gRPC address of the key CDN (its issuer directory goes there)"
    )
    cdn_credential_file: Path | None = settings.option(
        default=None, secret_file=True, help="file holding its CDN publisher credential"
    )
    #: Create (or re-enable) this account at start; its credential goes on the ready line,
    #: unless the operator gave it one (then only its SHA-256 is kept, and nothing is printed).
    demo_account: str | None = settings.option(
        default=None, help="create this account at start (local stack, a cluster's test account)"
    )
    demo_account_credential_file: Path | None = settings.option(
        default=None,
        secret_file=True,
        help="file holding the demo account's credential, pp1.<id>.<secret> (not printed)",
    )
    #: gRPC address of the transparency ledger; every issuer key is logged there first.
    ledger_target: str | None = settings.option(
        default=None, flag="--ledger", help="gRPC address of the ledger (its keys are logged first)"
    )
    ledger_key_file: Path | None = settings.option(
        default=None, secret_file=True, help="file holding its ledger publisher key"
    )
    #: Read deadlines and connection caps of the HTTP front (slowloris).
    http_limits: HttpLimits = settings.group(help="the HTTP front's limits", default_factory=HttpLimits)
    telemetry: TelemetryOptions = settings.group(
        help="where its metrics and traces go", default_factory=TelemetryOptions
    )


class AcsServicer(acs_pb2_grpc.AcsServicer):
    def __init__(self, service: AcsService) -> None:
        self._service = service

    async def GetIssuerDirectory(
        self, request: acs_pb2.GetAcsIssuerDirectoryRequest, context: aio.ServicerContext[Any, Any]
    ) -> acs_pb2.AcsIssuerDirectory:
        return acs_pb2.AcsIssuerDirectory(directory=self._service.directory_body())

    async def IssueTokens(
        self, request: acs_pb2.IssueTokensRequest, context: aio.ServicerContext[Any, Any]
    ) -> acs_pb2.IssueTokensResponse:
        credential = bearer_credential(metadata_value(context, "authorization"))
        responses = await self._service.issue(credential, list(request.token_requests))
        return acs_pb2.IssueTokensResponse(token_responses=responses)

    async def VerifyToken(
        self, request: acs_pb2.VerifyTokenRequest, context: aio.ServicerContext[Any, Any]
    ) -> acs_pb2.VerifyTokenResponse:
        return acs_pb2.VerifyTokenResponse(
            valid=self._service.issuer.verify(request.token, self._service.clock())
        )


class AcsService:
    name = "acs"

    def __init__(
        self,
        config: AcsConfig,
        *,
        authenticator: Authenticator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.db = Database(config.state_dir / "acs.sqlite3")
        self.accounts = AccountStore(self.db)
        self.keyring = IssuerKeyring(
            self.db, epoch_seconds=config.epoch_seconds, token_types=config.token_types
        )
        self.issuer = Issuer(
            keyring=self.keyring,
            limiter=IssuanceLimiter(
                self.db, tokens_per_window=config.tokens_per_window, window_seconds=config.window_seconds
            ),
            authenticator=authenticator or SignedCredentialAuthenticator(self.accounts),
            issuer_name=config.issuer_name,
        )
        self.grpc = GrpcServer("acs")
        self.grpc.add(acs_pb2_grpc.add_AcsServicer_to_server, AcsServicer(self), "privproc.v1.Acs")
        self.http = HttpServer(self._http_app(), config.http_limits)
        self.request_uri = ""
        self._task: asyncio.Task[None] | None = None
        self._cdn, self._ledger = key_publishers(config, service="acs")
        self._logged: set[bytes] = set()
        self._proofs: dict[bytes, bytes] = {}
        self._publish_pending = False

    def directory_body(self) -> bytes:
        return self.issuer.directory(self.request_uri, self.clock()).encode()

    async def issue(self, credential: str, token_requests: list[bytes]) -> list[bytes]:
        # Signing is CPU work in native code that releases the GIL: keep the loop free.
        return await asyncio.to_thread(self.issuer.issue, credential, token_requests, self.clock())

    def _http_app(self) -> web.Application:
        app = make_app("acs", 64 << 10)

        async def directory(_: web.Request) -> web.Response:
            max_age = int(min(300, self.config.epoch_seconds / 10))
            return web.Response(
                body=self.directory_body(),
                headers={
                    "Content-Type": pp.MEDIA_TYPE_ISSUER_DIRECTORY,
                    "Cache-Control": f"public, max-age={max_age}",
                },
            )

        async def token_request(request: web.Request) -> web.Response:
            credential = bearer_credential(request.headers.get("Authorization"))
            require_media_type(request, pp.MEDIA_TYPE_TOKEN_REQUEST)
            body = await read_body(request, 4096)
            [response] = await self.issue(credential, [body])
            return web.Response(
                body=response,
                headers={"Content-Type": pp.MEDIA_TYPE_TOKEN_RESPONSE, "Cache-Control": "no-store"},
            )

        app.router.add_get(pp.ISSUER_DIRECTORY_PATH, directory)
        app.router.add_post(TOKEN_REQUEST_PATH, token_request)
        return app

    async def start(self) -> dict[str, object]:
        self._refresh()
        grpc_port, http_port = await start_fronts("acs", self.config, self.grpc, self.http)
        base = f"http://{self.config.host}:{http_port}"
        self.request_uri = base + TOKEN_REQUEST_PATH
        if self.config.cdn_target is not None:
            await self._publish()
        # Supervised: a failure is logged (task.failed) and the loop starts again after a backoff.
        self._task = supervise("acs.rotation", self._rotate_forever)
        endpoints: dict[str, object] = {
            "grpc": f"{self.config.host}:{grpc_port}",
            "http_url": base,
            "issuer_directory_url": base + pp.ISSUER_DIRECTORY_PATH,
            "token_request_url": self.request_uri,
            "issuer_name": self.config.issuer_name,
        }
        if self.config.demo_account is not None:
            endpoints["demo_account"] = self._demo_account(self.config.demo_account)
        return endpoints

    def _demo_account(self, account_id: str) -> dict[str, object]:
        """Create the demo account: with the operator's credential (kept hashed, not printed) or ours."""
        credential_file = self.config.demo_account_credential_file
        if credential_file is None:
            return {"id": account_id, "credential": self.accounts.create(account_id)}
        try:
            self.accounts.create(account_id, settings.read_secret_file(credential_file))
        except ValueError:
            raise ConfigError("the demo account's credential is pp1.<account id>.<secret>") from None
        return {"id": account_id}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.grpc.stop(grace=5.0)
        await self.http.stop()
        self.db.close()
        if self._ledger is not None:
            await self._ledger.close()

    def _refresh(self) -> bool:
        created, retired = self.keyring.refresh(self.clock())
        for key in created:
            events.emit(events.AcsKeyCreated(token_type=key.token_type, epoch=key.epoch))
            _KEY_CHANGES.add(1, {"privproc.token_type": key.token_type, "privproc.change": "created"})
        for key in retired:
            events.emit(events.AcsKeyRetired(token_type=key.token_type, epoch=key.epoch))
            _KEY_CHANGES.add(1, {"privproc.token_type": key.token_type, "privproc.change": "retired"})
        return bool(created or retired)

    async def _rotate_forever(self) -> None:
        period = max(0.05, min(30.0, self.config.epoch_seconds / 20))
        while True:
            await asyncio.sleep(period)
            changed = await asyncio.to_thread(self._refresh)  # RSA key generation takes a while
            if changed and self.config.cdn_target is not None:
                # Remembered across a failure: the restarted loop publishes what this one could not.
                self._publish_pending = True
            if self._publish_pending:
                await self._publish()
                self._publish_pending = False

    async def _publish(self) -> None:
        """Log every key not yet logged, publish its proof, then the directory, to the CDN."""
        assert self._cdn is not None
        if self._ledger is not None:
            for key in self.keyring.redeemable(self.clock()) + self.keyring.upcoming(self.clock()):
                if key.key_id in self._logged:
                    continue
                entry = TokenIssuerKeyEntry.describing(
                    key.token_type, key.public_key, int(key.not_before), int(key.redeem_until)
                ).encode()
                # A retry after a CDN failure republishes the proof it has, not a second log entry.
                if key.key_id not in self._proofs:
                    self._proofs[key.key_id] = (await self._ledger.publish(entry)).encode()
                await self._cdn.proof(token_key_proof_name(key.key_id), self._proofs[key.key_id])
                del self._proofs[key.key_id]
                self._logged.add(key.key_id)
        await self._cdn.issuer_directory(self.directory_body())
        events.emit(events.AcsDirectoryPublished(keys=len(self.keyring.directory_keys(self.clock()))))


def build(config: AcsConfig) -> AcsService:
    """The service ``privproc serve acs`` runs."""
    return AcsService(config)
