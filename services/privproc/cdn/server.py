"""The CDN process: gRPC ``privproc.v1.KeyCdn`` and plain cacheable HTTP.

HTTP paths: ``/ohttp-keys`` (``application/ohttp-keys``),
``/.well-known/private-token-issuer-directory``
(``application/private-token-issuer-directory``) and ``/checkpoint`` (the
ledger's signed note, ``text/plain``), each with ETag, ``If-None-Match``
and ``Cache-Control``.

Publishing is gRPC only, and each publisher presents its own credential,
scoped to the documents it may write (``--publisher NAME:SCOPE:FILE``, see
:func:`parse_publisher`): a wrong credential is ``UNAUTHENTICATED``, a right
one outside its scope ``PERMISSION_DENIED``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from grpc import aio
from opentelemetry import metrics

from privproc import events
from privproc.cdn.store import (
    CHECKPOINT,
    ISSUER_DIRECTORY,
    OHTTP_KEYS,
    PROOF_PREFIX,
    Document,
    DocumentStore,
    Publisher,
    parse_scope,
)
from privproc.errors import ConfigError, PermissionDeniedError
from privproc.runtime import settings
from privproc.runtime.http import HttpLimits, HttpServer, make_app
from privproc.runtime.lifecycle import start_fronts
from privproc.runtime.rpc import GrpcServer, metadata_value
from privproc.runtime.telemetry import TelemetryOptions
from privproc.v1 import cdn_pb2, cdn_pb2_grpc, common_pb2
from privproc.wire.ohttp import MEDIA_TYPE_KEYS

KEYS_PATH = "/ohttp-keys"
ISSUER_DIRECTORY_PATH = "/.well-known/private-token-issuer-directory"
MEDIA_TYPE_ISSUER_DIRECTORY = "application/private-token-issuer-directory"
CHECKPOINT_PATH = "/checkpoint"
PROOFS_PATH = "/proofs/"
MEDIA_TYPE_PROOF = "text/plain; charset=utf-8"
MEDIA_TYPE_CHECKPOINT = "text/plain; charset=utf-8"
#: How long the CDN serves a directory or checkpoint before it counts as stale.
DOCUMENT_TTL = 3600.0


@dataclass(frozen=True)
class PublisherSpec:
    """A publisher as configured: its name, scope patterns and the file holding its credential."""

    name: str
    scope: tuple[str, ...]
    credential_file: Path

    def load(self) -> Publisher:
        try:
            credential = self.credential_file.read_text().strip().encode()
            return Publisher(self.name, self.scope, credential)
        except (OSError, ValueError) as err:
            raise ConfigError("unusable publisher credential") from err


def parse_publisher(text: str) -> PublisherSpec:
    """``NAME:SCOPE:CREDENTIAL_FILE`` as given to ``privproc serve cdn --publisher``.

    ``SCOPE`` is a preset (``gateway``, ``acs``, ``release``, ``ledger``) or
    patterns joined by ``+``: ``ohttp_keys``, ``issuer_directory``,
    ``checkpoint``, ``proofs/PREFIX*``.
    """
    name, sep, rest = text.partition(":")
    scope, sep2, path = rest.partition(":")
    if not (sep and sep2 and name and path):
        raise ValueError("a publisher is NAME:SCOPE:CREDENTIAL_FILE")
    return PublisherSpec(name, parse_scope(scope), Path(path))


def format_publisher(spec: PublisherSpec) -> str:
    """The ``--publisher`` text of ``spec`` (its scope as patterns): :func:`parse_publisher` reads it."""
    return f"{spec.name}:{'+'.join(spec.scope)}:{spec.credential_file}"


#: Documents published, by kind.
_PUBLISHED = metrics.get_meter("privproc.cdn").create_counter("privproc.cdn.published", unit="{document}")


@settings.declared("cdn")
class CdnConfig:
    """``privproc serve cdn``: the key CDN."""

    publishers: tuple[PublisherSpec, ...] = settings.option(
        flag="--publisher",
        parse=parse_publisher,
        format=format_publisher,
        secret_file=True,
        metavar="NAME:SCOPE:CREDENTIAL_FILE",
        help="a publisher and its credential file; SCOPE is gateway|acs|release|ledger or patterns "
        "joined by '+' (ohttp_keys, issuer_directory, checkpoint, proofs/PREFIX*)",
    )
    host: str = settings.host_option()
    grpc_port: int = settings.grpc_port_option()
    http_port: int = settings.http_port_option()
    http_limits: HttpLimits = settings.group(help="the HTTP front's limits", default_factory=HttpLimits)
    telemetry: TelemetryOptions = settings.group(
        help="where its metrics and traces go", default_factory=TelemetryOptions
    )


class CdnServicer(cdn_pb2_grpc.KeyCdnServicer):
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def GetKeyConfigs(
        self, request: common_pb2.GetKeyConfigsRequest, context: aio.ServicerContext[Any, Any]
    ) -> common_pb2.KeyConfigs:
        doc = self._store.get(OHTTP_KEYS)
        message = common_pb2.KeyConfigs(ohttp_keys=doc.body)
        message.not_before.FromNanoseconds(int(doc.not_before * 1e9))
        message.not_after.FromNanoseconds(int(doc.not_after * 1e9))
        return message

    async def PublishKeyConfigs(
        self, request: cdn_pb2.PublishKeyConfigsRequest, context: aio.ServicerContext[Any, Any]
    ) -> cdn_pb2.PublishKeyConfigsResponse:
        configs = request.key_configs
        document = Document(
            body=configs.ohttp_keys,
            media_type=MEDIA_TYPE_KEYS,
            not_before=configs.not_before.ToNanoseconds() / 1e9,
            not_after=configs.not_after.ToNanoseconds() / 1e9,
        )
        return cdn_pb2.PublishKeyConfigsResponse(sha256=self._publish(context, OHTTP_KEYS, document))

    async def GetIssuerDirectory(
        self, request: cdn_pb2.GetIssuerDirectoryRequest, context: aio.ServicerContext[Any, Any]
    ) -> cdn_pb2.IssuerDirectory:
        return cdn_pb2.IssuerDirectory(directory=self._store.get(ISSUER_DIRECTORY).body)

    async def PublishIssuerDirectory(
        self, request: cdn_pb2.PublishIssuerDirectoryRequest, context: aio.ServicerContext[Any, Any]
    ) -> cdn_pb2.PublishIssuerDirectoryResponse:
        document = _for_ttl(self._store, request.directory.directory, MEDIA_TYPE_ISSUER_DIRECTORY)
        return cdn_pb2.PublishIssuerDirectoryResponse(
            sha256=self._publish(context, ISSUER_DIRECTORY, document)
        )

    async def GetCheckpoint(
        self, request: cdn_pb2.GetCheckpointRequest, context: aio.ServicerContext[Any, Any]
    ) -> common_pb2.SignedCheckpoint:
        return common_pb2.SignedCheckpoint(note=self._store.get(CHECKPOINT).body)

    async def PublishCheckpoint(
        self, request: cdn_pb2.PublishCheckpointRequest, context: aio.ServicerContext[Any, Any]
    ) -> cdn_pb2.PublishCheckpointResponse:
        document = _for_ttl(self._store, request.checkpoint.note, MEDIA_TYPE_CHECKPOINT)
        return cdn_pb2.PublishCheckpointResponse(sha256=self._publish(context, CHECKPOINT, document))

    async def PublishProof(
        self, request: cdn_pb2.PublishProofRequest, context: aio.ServicerContext[Any, Any]
    ) -> cdn_pb2.PublishProofResponse:
        document = _for_ttl(self._store, request.proof, MEDIA_TYPE_PROOF)
        return cdn_pb2.PublishProofResponse(
            sha256=self._publish(context, PROOF_PREFIX + request.name, document)
        )

    async def GetProof(
        self, request: cdn_pb2.GetProofRequest, context: aio.ServicerContext[Any, Any]
    ) -> cdn_pb2.Proof:
        return cdn_pb2.Proof(proof=self._store.get(PROOF_PREFIX + request.name).body)

    def _publish(self, context: aio.ServicerContext[Any, Any], name: str, document: Document) -> bytes:
        """Authenticate the publisher, store ``document`` under ``name``; its SHA-256."""
        self._check(context, name)
        stored = self._store.publish(name, document)
        kind = "proof" if name.startswith(PROOF_PREFIX) else name
        events.emit(events.CdnPublished(document=kind))
        _PUBLISHED.add(1, {"privproc.document": kind})
        return stored.sha256

    def _check(self, context: aio.ServicerContext[Any, Any], name: str) -> None:
        authorization = metadata_value(context, "authorization")
        try:
            publisher = self._store.authenticate(authorization)
        except Exception:
            events.emit(events.CdnPublishRefused())
            raise
        if not publisher.may_write(name):
            events.emit(events.CdnPublishOutOfScope(publisher=publisher.name))
            raise PermissionDeniedError("document outside the publisher's scope")


def _for_ttl(store: DocumentStore, body: bytes, media_type: str) -> Document:
    """A document valid from now for :data:`DOCUMENT_TTL` seconds."""
    now = store.clock()
    return Document(body=body, media_type=media_type, not_before=now, not_after=now + DOCUMENT_TTL)


def build_http_app(store: DocumentStore, clock: Callable[[], float] = time.time) -> web.Application:
    app = make_app("cdn", 4096)

    def serve(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            doc = store.get(name)
            headers = {
                "ETag": doc.etag,
                "Cache-Control": f"public, max-age={doc.max_age(clock())}",
            }
            if request.headers.get("If-None-Match") == doc.etag:
                return web.Response(status=304, headers=headers)
            return web.Response(body=doc.body, headers={**headers, "Content-Type": doc.media_type})

        return handler

    app.router.add_get(KEYS_PATH, serve(OHTTP_KEYS))
    app.router.add_get(ISSUER_DIRECTORY_PATH, serve(ISSUER_DIRECTORY))
    app.router.add_get(CHECKPOINT_PATH, serve(CHECKPOINT))

    async def proof(request: web.Request) -> web.StreamResponse:
        return await serve(PROOF_PREFIX + request.match_info["name"])(request)

    app.router.add_get(PROOFS_PATH + "{name}", proof)
    return app


class CdnService:
    name = "cdn"

    def __init__(self, config: CdnConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        if not config.publishers:
            raise ConfigError("the CDN needs at least one publisher (--publisher NAME:SCOPE:CREDENTIAL_FILE)")
        try:
            self.store = DocumentStore([spec.load() for spec in config.publishers], clock=clock)
        except ValueError as err:
            raise ConfigError("the CDN needs distinct, named publisher credentials") from err
        self.grpc = GrpcServer("cdn")
        self.grpc.add(
            cdn_pb2_grpc.add_KeyCdnServicer_to_server, CdnServicer(self.store), "privproc.v1.KeyCdn"
        )
        self.http = HttpServer(build_http_app(self.store, clock), config.http_limits)

    async def start(self) -> dict[str, object]:
        grpc_port, http_port = await start_fronts("cdn", self.config, self.grpc, self.http)
        base = f"http://{self.config.host}:{http_port}"
        return {
            "grpc": f"{self.config.host}:{grpc_port}",
            "http_url": base,
            "keys_url": base + KEYS_PATH,
            "issuer_directory_url": base + ISSUER_DIRECTORY_PATH,
            "checkpoint_url": base + CHECKPOINT_PATH,
            "proofs_url": base + PROOFS_PATH,
        }

    async def stop(self) -> None:
        await self.grpc.stop(grace=5.0)
        await self.http.stop()


def build(config: CdnConfig) -> CdnService:
    """The service ``privproc serve cdn`` runs."""
    return CdnService(config)
