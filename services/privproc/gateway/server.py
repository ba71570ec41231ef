"""The gateway process: OHTTP over HTTP (RFC 9540 resource) and over gRPC.

HTTP: ``GET /.well-known/ohttp-gateway`` serves the key configurations
(``application/ohttp-keys``); ``POST`` to the same path takes
``message/ohttp-req`` and answers ``message/ohttp-res``, or takes
``message/ohttp-chunked-req`` as it arrives and answers
``message/ohttp-chunked-res`` as a stream with ``Incremental: ?1``. gRPC: the
``privproc.v1.Gateway`` service does the same (``HandleChunked`` streams). Inside the encapsulation it
redeems Privacy Pass tokens and relays RA-TLS sessions to the predictors it
admitted (:mod:`privproc.gateway.routes`). Background tasks rotate keys on
schedule and publish the advertised configuration to the CDN, refresh the
token issuer's keys, and admit predictors by their verifier certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio
from opentelemetry import metrics

from privproc import events
from privproc.errors import ConfigError, UnavailableError, WireError
from privproc.gateway.core import DEFAULT_MAX_REQUEST_BYTES, GatewayCore
from privproc.gateway.discovery import parse_service
from privproc.gateway.endpoint_watch import EndpointWatcher
from privproc.gateway.keys import KeySchedule, parse_seed
from privproc.gateway.predictors import GrpcPredictorPool
from privproc.gateway.redemption import (
    DEFAULT_CLOCK_SKEW_SECONDS,
    DEFAULT_KEY_LIFETIME_SECONDS,
    TOKENS_REFUSED,
    MemorySpentStore,
    Redeemer,
    RedisSpentStore,
    SpentTokenStore,
    SqliteSpentStore,
)
from privproc.gateway.routes import (
    DEFAULT_ORIGIN,
    RouteLimits,
    Router,
    health_route,
    session_continue_route,
    sessions_route,
)
from privproc.gateway.sessions import SessionTable
from privproc.ledger.publisher import key_publishers
from privproc.runtime import mtls, settings
from privproc.runtime.cdn_publisher import ohttp_keys_proof_name
from privproc.runtime.http import (
    BodyPieces,
    HttpLimits,
    HttpServer,
    make_app,
    read_body,
    require_media_type,
    stream_answer,
)
from privproc.runtime.lifecycle import start_fronts
from privproc.runtime.rpc import GrpcServer, channel_options
from privproc.runtime.tasks import supervise
from privproc.runtime.telemetry import TelemetryOptions
from privproc.v1 import acs_pb2, acs_pb2_grpc, common_pb2, gateway_pb2_grpc
from privproc.wire import ohttp, ohttp_chunked
from privproc.wire.entries import OhttpKeyConfigEntry
from privproc.wire.privacypass import IssuerDirectory
from privproc.wire.session import SESSIONS_PREFIX

WELL_KNOWN_PATH = "/.well-known/ohttp-gateway"


#: Where ``privproc serve gateway`` keeps its spent-token set when given no Redis and no state dir.
DEFAULT_STATE_DIR = Path(".privproc") / "gateway"


@settings.declared("gateway")
class GatewayConfig:
    """``privproc serve gateway``: the OHTTP gateway."""

    host: str = settings.host_option()
    grpc_port: int = settings.grpc_port_option()
    http_port: int = settings.http_port_option()
    origin: str = settings.option(default=DEFAULT_ORIGIN, help="its inner origin")
    rotation_seconds: float = settings.option(default=3600.0, help="OHTTP key rotation period")
    grace_seconds: float = settings.option(default=600.0, help="a rotated-out key still decrypts this long")
    #: A secret shared by replicas behind one Service: with it their OHTTP keys are derived from
    #: it and the time, so every replica advertises and accepts the same ones (see gateway/keys.py).
    #: Base64 of 32 random bytes or more (``privproc cluster secrets`` makes one); without it,
    #: random keys rotated from the gateway's start (one gateway alone).
    ohttp_seed_file: Path | None = settings.option(
        default=None,
        secret_file=True,
        help="file holding the OHTTP key seed its replicas share (base64, 32+ bytes)",
    )
    max_request_bytes: int = settings.option(
        default=DEFAULT_MAX_REQUEST_BYTES, help="largest encapsulated request accepted"
    )
    #: gRPC address of the key CDN to publish to; ``None``: publish nowhere.
    cdn_target: str | None = settings.option(default=None, flag="--cdn", help="gRPC address of the key CDN")
    #: File holding the CDN publisher credential.
    cdn_credential_file: Path | None = settings.option(
        default=None, secret_file=True, help="file holding its CDN publisher credential"
    )
    #: gRPC address of the ACS (issuer directory, type 0x0001 verification);
    #: ``None``: no tokens can be redeemed and ``/v1/sessions`` answers 503.
    acs_target: str | None = settings.option(
        default=None, flag="--acs", help="gRPC address of the ACS (token redemption)"
    )
    issuer_name: str = settings.option(default="issuer.privproc.local", help="token issuer name")
    #: Redis URL of the spent-token set shared by replicas; ``None``: the local durable store.
    redis_url: str | None = settings.option(
        default=None, help="Redis URL of the spent-token set shared by replicas"
    )
    #: Where the spent-token set lives without Redis (SQLite, survives restarts); with neither,
    #: an in-process set that forgets on restart (embedded tests only; ``serve`` uses
    #: :data:`DEFAULT_STATE_DIR`).
    state_dir: Path | None = settings.option(
        default=None, help=f"directory of its spent-token set without Redis (serve: {DEFAULT_STATE_DIR})"
    )
    #: The issuer's key epoch: an issuer key redeems for two from its ``not-before``; a spent
    #: token is remembered until its key's deadline plus ``clock_skew_seconds``.
    epoch_seconds: float = settings.option(
        default=DEFAULT_KEY_LIFETIME_SECONDS / 2, help="the ACS's issuer key epoch (give it the ACS's value)"
    )
    clock_skew_seconds: float = settings.option(
        default=DEFAULT_CLOCK_SKEW_SECONDS, help="clock skew tolerated on token key deadlines"
    )
    #: Session routes: absolute deadlines from creation, sessions per predictor (fair admission).
    handshake_seconds: float = settings.option(default=10.0, help="a session's handshake deadline")
    session_seconds: float = settings.option(default=120.0, help="a session's deadline")
    #: A private request's deadline travels in its ``privproc-timeout-ms`` header; this caps it
    #: (and stands in for a request that names none). The predictor calls' gRPC deadlines follow.
    max_request_seconds: float = settings.option(
        default=120.0, help="the longest deadline a private request may ask for"
    )
    #: A predictor's stream of records silent this long is cancelled (a live one sends a padding
    #: frame every second); streams have no total timeout but the request's deadline.
    idle_seconds: float = settings.option(
        default=30.0, help="seconds a predictor's stream may go without records"
    )
    sessions_per_predictor: int = settings.option(default=64, help="sessions open per predictor")
    max_sessions: int = settings.option(default=10_000, help="sessions open in all")
    issuer_refresh_seconds: float = settings.option(default=30.0, help="how often issuer keys are read")
    #: gRPC address of the transparency ledger; key configurations are logged there first.
    ledger_target: str | None = settings.option(
        default=None, flag="--ledger", help="gRPC address of the ledger (its keys are logged first)"
    )
    #: This gateway's ledger publisher key (PRIVATE+KEY string), in a file.
    ledger_key_file: Path | None = settings.option(
        default=None, secret_file=True, help="file holding its ledger publisher key"
    )
    #: Predictors to route sessions to, reached over mutual TLS under the verifier's CA.
    predictor_targets: tuple[str, ...] = settings.option(
        default=(), flag="--predictor", metavar="TARGET", help="gRPC address of a predictor"
    )
    #: Or learnt from the Kubernetes API: the predictor Service's ready endpoints, watched with the
    #: pod's service account (get/list/watch on endpointslices and endpoints in that namespace).
    predictor_service: str | None = settings.option(
        default=None,
        parse=parse_service,
        metavar="NAMESPACE/NAME",
        help="find predictors as this Kubernetes Service's ready endpoints (instead of --predictor)",
    )
    predictor_port_name: str = settings.option(
        default="grpc", help="with --predictor-service: the name of the Service's predictor port"
    )
    #: The gateway's service certificate and key from the verifier's CA, read again on each
    #: admission check so that a renewed pair is taken.
    mtls_cert_file: Path | None = settings.option(
        default=None, help="its service certificate (PEM; a renewed one is taken)"
    )
    mtls_key_file: Path | None = settings.option(default=None, secret_file=True, help="its service key (PEM)")
    verifier_ca_file: Path | None = settings.option(default=None, help="the verifier's CA (PEM)")
    admission_seconds: float = settings.option(default=5.0, help="how often predictors are admitted again")
    #: Read deadlines and connection caps of the HTTP front (slowloris). Relays concentrate every
    #: client on one address, so the cap is global rather than per relay.
    http_limits: HttpLimits = settings.group(
        help="the HTTP front's limits",
        default_factory=lambda: HttpLimits(max_connections_per_address=1024),
    )
    telemetry: TelemetryOptions = settings.group(
        help="where its metrics and traces go", default_factory=TelemetryOptions
    )

    @property
    def token_key_lifetime_seconds(self) -> float:
        """How long an issuer key redeems from its ``not-before``: two epochs (see acs/keys.py)."""
        return 2 * self.epoch_seconds


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def key_configs_message(schedule: KeySchedule) -> common_pb2.KeyConfigs:
    ad = schedule.advertisement()
    return common_pb2.KeyConfigs(
        ohttp_keys=ad.body, not_before=timestamp(ad.not_before), not_after=timestamp(ad.not_after)
    )


_METER = metrics.get_meter("privproc.gateway")
#: OHTTP keys that became current or left their grace period.
_KEY_CHANGES = _METER.create_counter("privproc.gateway.key.rotations", unit="{key}")


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, core: GatewayCore) -> None:
        self._core = core

    async def GetKeyConfigs(
        self, request: common_pb2.GetKeyConfigsRequest, context: aio.ServicerContext[Any, Any]
    ) -> common_pb2.KeyConfigs:
        return key_configs_message(self._core.schedule)

    async def Handle(
        self, request: common_pb2.EncapsulatedRequest, context: aio.ServicerContext[Any, Any]
    ) -> common_pb2.EncapsulatedResponse:
        return common_pb2.EncapsulatedResponse(payload=await self._core.handle(request.payload))

    async def HandleChunked(
        self,
        request_iterator: AsyncIterator[common_pb2.EncapsulatedRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[common_pb2.EncapsulatedResponse]:
        async def pieces() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                yield message.payload

        answer = await self._core.handle_chunked(pieces())
        async with contextlib.aclosing(answer):
            async for piece in answer:
                yield common_pb2.EncapsulatedResponse(payload=piece)


def build_http_app(core: GatewayCore, extra_middlewares: Sequence[Middleware] = ()) -> web.Application:
    app = make_app("gateway", core.max_request_bytes, extra_middlewares)

    async def keys(_: web.Request) -> web.Response:
        ad = core.schedule.advertisement()
        max_age = int(min(core.schedule.seconds_until_rotation(time.time()), 3600))
        return web.Response(
            body=ad.body,
            content_type=ohttp.MEDIA_TYPE_KEYS,
            headers={"Cache-Control": f"public, max-age={max_age}"},
        )

    async def gateway(request: web.Request) -> web.StreamResponse:
        if request.content_type == ohttp_chunked.MEDIA_TYPE_REQUEST:
            return await chunked(request)
        require_media_type(request, ohttp.MEDIA_TYPE_REQUEST)
        body = await read_body(request, core.max_request_bytes)
        answer = await core.handle(body)
        return web.Response(
            body=answer, content_type=ohttp.MEDIA_TYPE_RESPONSE, headers={"Cache-Control": "no-store"}
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        # Refusals up to here are answered in the clear by the app's error middleware.
        answer = await core.handle_chunked(BodyPieces(request, core.max_request_bytes))
        async with contextlib.aclosing(answer):
            first = await anext(answer)
            return await stream_answer(request, "gateway", ohttp_chunked.MEDIA_TYPE_RESPONSE, first, answer)

    app.router.add_get(WELL_KNOWN_PATH, keys)
    app.router.add_post(WELL_KNOWN_PATH, gateway)
    return app


class GatewayService:
    """The gateway as a process: both transports and the rotation task."""

    name = "gateway"

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.time,
        grpc_interceptors: Sequence[aio.ServerInterceptor] = (),
        http_middlewares: Sequence[Middleware] = (),
    ) -> None:
        """``grpc_interceptors`` / ``http_middlewares`` run before the gateway's own handlers
        (deployments add auth or metrics here; tests record what the gateway receives)."""
        self.config = config
        self._clock = clock
        seed = (
            parse_seed(settings.read_secret_file(config.ohttp_seed_file))
            if config.ohttp_seed_file is not None
            else None
        )
        try:
            schedule = KeySchedule(
                rotation=config.rotation_seconds, grace=config.grace_seconds, now=clock(), seed=seed
            )
        except ValueError as err:
            raise ConfigError(f"bad OHTTP key schedule: {err}") from None
        router = Router(origin=config.origin)
        try:
            limits = RouteLimits(
                max_request_seconds=config.max_request_seconds, idle_seconds=config.idle_seconds
            )
        except ValueError as err:
            raise ConfigError(f"bad request limits: {err}") from None
        router.add("GET", "/v1/health", health_route("privproc-gateway"))
        spent: SpentTokenStore
        if config.redis_url is not None:
            spent = RedisSpentStore(config.redis_url)
        elif config.state_dir is not None:
            spent = SqliteSpentStore(config.state_dir / "spent-tokens.sqlite3", clock=clock)
        else:
            spent = MemorySpentStore()
        self._acs_channel = (
            aio.insecure_channel(config.acs_target, options=channel_options()) if config.acs_target else None
        )
        self.redeemer = Redeemer(
            issuer_name=config.issuer_name,
            origin=config.origin,
            spent=spent,
            private_verifier=self._verify_with_acs if self._acs_channel is not None else None,
            key_lifetime_seconds=config.token_key_lifetime_seconds,
            clock_skew_seconds=config.clock_skew_seconds,
            clock=clock,
        )
        self.pool: GrpcPredictorPool | None = None
        self.sessions = SessionTable(
            handshake_seconds=config.handshake_seconds,
            session_seconds=config.session_seconds,
            max_per_predictor=config.sessions_per_predictor,
            max_sessions=config.max_sessions,
        )
        sessions = self.sessions
        _METER.create_observable_gauge(
            "privproc.gateway.sessions.active",
            callbacks=[lambda _: [metrics.Observation(len(sessions))]],
            unit="{session}",
            description="Sessions to predictors in flight (a count: never a handle)",
        )
        self._watcher: EndpointWatcher | None = None
        if config.predictor_targets and config.predictor_service is not None:
            raise ConfigError("give --predictor or --predictor-service, not both")
        if config.predictor_targets or config.predictor_service is not None:
            if not (config.verifier_ca_file and config.mtls_cert_file and config.mtls_key_file):
                raise ConfigError(
                    "predictors need the verifier's CA and the gateway's mTLS certificate and key"
                )
            identity = mtls.file_identity(config.mtls_cert_file, config.mtls_key_file)
            self.pool = GrpcPredictorPool(
                config.predictor_targets,
                identity(),
                config.verifier_ca_file.read_bytes(),
                identity_source=identity,  # read again on each admission check: renewals are taken
            )
            if config.predictor_service is not None:
                namespace, name = config.predictor_service.split("/")
                self._watcher = EndpointWatcher(
                    namespace, name, config.predictor_port_name, self.pool.set_targets
                )
            router.add_prefix(
                "POST", SESSIONS_PREFIX, session_continue_route(self.pool, self.sessions, limits)
            )
        router.add("POST", "/v1/sessions", sessions_route(self.redeemer, self.pool, self.sessions, limits))
        self.core = GatewayCore(schedule, router, max_request_bytes=config.max_request_bytes)
        self.grpc = GrpcServer(
            "gateway", max_message_bytes=config.max_request_bytes + 4096, interceptors=grpc_interceptors
        )
        self.grpc.add(
            gateway_pb2_grpc.add_GatewayServicer_to_server, GatewayServicer(self.core), "privproc.v1.Gateway"
        )
        self.http = HttpServer(build_http_app(self.core, http_middlewares), config.http_limits)
        self._tasks: list[asyncio.Task[None]] = []
        self._cdn, self._ledger = key_publishers(config, service="gateway")
        self.published = asyncio.Event()
        self._publish_pending = False
        self._logged_entry: tuple[bytes, bytes] | None = None

    async def start(self) -> dict[str, object]:
        grpc_port, http_port = await start_fronts("gateway", self.config, self.grpc, self.http)
        if self.config.cdn_target is not None:
            await self._publish()
        # Supervised: a failure is logged (task.failed) and the loop starts again after a backoff.
        self._tasks.append(supervise("gateway.rotation", self._rotate_forever))
        if self._acs_channel is not None:
            await self._refresh_issuer_keys()
            self._tasks.append(supervise("gateway.issuer_keys", self._refresh_issuer_keys_forever))
        if self.pool is not None:
            await self.pool.refresh()
            self._tasks.append(supervise("gateway.admission", self._admit_forever))
        if self._watcher is not None:
            self._tasks.append(supervise("gateway.discovery", self._watcher.run, max_backoff_seconds=30.0))
        base = f"http://{self.config.host}:{http_port}"
        return {
            "grpc": f"{self.config.host}:{grpc_port}",
            "origin": self.config.origin,
            "ohttp_url": base + WELL_KNOWN_PATH,
            "keys_url": base + WELL_KNOWN_PATH,
        }

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.grpc.stop(grace=5.0)
        await self.http.stop()
        await self.redeemer.spent.close()
        if self._acs_channel is not None:
            await self._acs_channel.close(None)
        if self._ledger is not None:
            await self._ledger.close()
        if self.pool is not None:
            await self.pool.close()

    async def _admit_forever(self) -> None:
        assert self.pool is not None
        while True:
            # Every period, and at once when discovery changed the targets.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pool.changed.wait(), self.config.admission_seconds)
            await self.pool.refresh()

    async def _verify_with_acs(self, token: bytes) -> bool:
        assert self._acs_channel is not None
        try:
            reply = await acs_pb2_grpc.AcsStub(self._acs_channel).VerifyToken(
                acs_pb2.VerifyTokenRequest(token=token), timeout=5.0
            )
        except aio.AioRpcError as err:
            raise UnavailableError("issuer unavailable") from err
        return bool(reply.valid)

    async def _refresh_issuer_keys(self) -> None:
        assert self._acs_channel is not None
        try:
            reply = await acs_pb2_grpc.AcsStub(self._acs_channel).GetIssuerDirectory(
                acs_pb2.GetAcsIssuerDirectoryRequest(), timeout=5.0
            )
            self.redeemer.update_keys(IssuerDirectory.decode(reply.directory))
        except (aio.AioRpcError, WireError):
            # Keep the last good keys; a retired key still disappears at the next success.
            events.emit(events.GatewayTokenRefused(reason="unavailable"))
            TOKENS_REFUSED.add(1, {"privproc.reason": "unavailable"})

    async def _refresh_issuer_keys_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.issuer_refresh_seconds)
            await self._refresh_issuer_keys()

    async def _rotate_forever(self) -> None:
        schedule = self.core.schedule
        while True:
            await asyncio.sleep(min(1.0, max(0.05, schedule.seconds_until_rotation(self._clock()))))
            added, retired = schedule.tick(self._clock())
            for key_id in added:
                events.emit(
                    events.GatewayKeyRotated(key_id=key_id, accepted_keys=len(schedule.keyring.key_ids()))
                )
                _KEY_CHANGES.add(1, {"privproc.change": "rotated"})
            for key_id in retired:
                events.emit(events.GatewayKeyRetired(key_id=key_id))
                _KEY_CHANGES.add(1, {"privproc.change": "retired"})
            if added and self.config.cdn_target is not None:
                # Remembered across a failure: the restarted loop publishes what this one could not.
                self._publish_pending = True
            if self._publish_pending:
                await self._publish()
                self._publish_pending = False

    async def _publish(self) -> None:
        """Log the advertised keys (if a ledger is configured), then publish keys and proof to the CDN.

        The key configuration is logged before it is served: a client that
        finds it at the CDN can also find its proof there.
        """
        assert self._cdn is not None
        message = key_configs_message(self.core.schedule)
        if self._ledger is not None:
            ad = self.core.schedule.advertisement()
            entry = OhttpKeyConfigEntry.describing(
                ad.body, ad.key_id, int(ad.not_before), int(ad.not_after)
            ).encode()
            # A retry after a CDN failure republishes the proof it has, not a second log entry.
            if self._logged_entry is None or self._logged_entry[0] != entry:
                self._logged_entry = (entry, (await self._ledger.publish(entry)).encode())
            await self._cdn.proof(ohttp_keys_proof_name(ad.body), self._logged_entry[1])
        await self._cdn.key_configs(message)
        events.emit(events.GatewayKeysPublished(key_id=self.core.schedule.current.key.config.key_id))
        self.published.set()


def build(config: GatewayConfig) -> GatewayService:
    """The service ``privproc serve gateway`` runs.

    Without Redis its spent-token set is a local file (:data:`DEFAULT_STATE_DIR` unless given),
    never in memory: a restart forgets no spent token.
    """
    if config.redis_url is None and config.state_dir is None:
        config = dataclasses.replace(config, state_dir=DEFAULT_STATE_DIR)
    return GatewayService(config)
