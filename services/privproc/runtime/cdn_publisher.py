"""Publishing to the key CDN, shared by the gateway, the ACS and the ledger tooling.

Every call retries with exponential backoff while the CDN is unreachable,
up to ``attempts`` times, then raises :class:`~privproc.errors.UpstreamError`
so that the caller's supervised loop logs it and tries again later (it is
never stuck inside one call). A refused credential, or a document outside
the credential's scope, raises :class:`~privproc.errors.ConfigError` at
once: retrying cannot fix it. A document the CDN refuses as invalid raises
:class:`~privproc.errors.BadRequestError`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
from grpc import aio

from privproc import events
from privproc.errors import BadRequestError, ConfigError, UpstreamError
from privproc.runtime.rpc import channel_options
from privproc.v1 import cdn_pb2, cdn_pb2_grpc, common_pb2

T = TypeVar("T")
#: Attempts per call by default: about half a minute of backoff before the caller hears of it.
DEFAULT_ATTEMPTS = 8
MAX_DELAY_SECONDS = 10.0


class CdnPublisher:
    def __init__(
        self,
        target: str,
        credential_file: Path | None,
        *,
        service: str,
        attempts: int = DEFAULT_ATTEMPTS,
        first_delay_seconds: float = 0.1,
    ) -> None:
        if attempts < 1:
            raise ValueError("at least one attempt")
        self._target = target
        self._credential_file = credential_file
        self._service = service
        self._attempts = attempts
        self._first_delay = first_delay_seconds

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            credential = self._credential_file.read_text().strip() if self._credential_file else ""
        except OSError as err:
            raise ConfigError("the CDN credential file cannot be read") from err
        return (("authorization", f"Bearer {credential}"),)

    async def _call(self, call: Callable[[cdn_pb2_grpc.KeyCdnAsyncStub], Awaitable[T]]) -> T:
        delay = self._first_delay
        for attempt in range(1, self._attempts + 1):
            try:
                async with aio.insecure_channel(self._target, options=channel_options()) as channel:
                    return await call(cdn_pb2_grpc.KeyCdnStub(channel))
            except aio.AioRpcError as err:
                events.emit(events.CdnPublishFailed(service=self._service, attempt=min(attempt, 10**6)))
                code = err.code()
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise ConfigError("the CDN refused this publisher's credential or scope") from err
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise BadRequestError("the CDN refused the document") from err
                if attempt < self._attempts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_DELAY_SECONDS)
        raise UpstreamError("the CDN did not take the document")

    async def key_configs(self, message: common_pb2.KeyConfigs) -> None:
        request = cdn_pb2.PublishKeyConfigsRequest(key_configs=message)
        await self._call(lambda stub: stub.PublishKeyConfigs(request, metadata=self._metadata(), timeout=5.0))

    async def issuer_directory(self, body: bytes) -> None:
        request = cdn_pb2.PublishIssuerDirectoryRequest(directory=cdn_pb2.IssuerDirectory(directory=body))
        await self._call(
            lambda stub: stub.PublishIssuerDirectory(request, metadata=self._metadata(), timeout=5.0)
        )

    async def proof(self, name: str, proof: bytes) -> None:
        request = cdn_pb2.PublishProofRequest(name=name, proof=proof)
        await self._call(lambda stub: stub.PublishProof(request, metadata=self._metadata(), timeout=5.0))

    async def checkpoint(self, signed: bytes) -> None:
        request = cdn_pb2.PublishCheckpointRequest(checkpoint=common_pb2.SignedCheckpoint(note=signed))
        await self._call(lambda stub: stub.PublishCheckpoint(request, metadata=self._metadata(), timeout=5.0))


def ohttp_keys_proof_name(ohttp_keys: bytes) -> str:
    """The CDN name of the proof for one ``application/ohttp-keys`` body (immutable per body)."""
    return "ohttp-keys-" + hashlib.sha256(ohttp_keys).hexdigest()


def token_key_proof_name(key_id: bytes) -> str:
    """The CDN name of the proof for one token issuer key."""
    return "token-key-" + key_id.hex()
