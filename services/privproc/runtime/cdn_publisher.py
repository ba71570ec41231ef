"""Publishing to the key CDN, shared by the gateway, the ACS and the ledger tooling.

Every call retries with exponential backoff while the CDN is unreachable
and gives up at once when the credential is refused (a configuration error
that retrying cannot fix).
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
from privproc.runtime.rpc import channel_options
from privproc.v1 import cdn_pb2, cdn_pb2_grpc, common_pb2

T = TypeVar("T")
MAX_ATTEMPTS = 1_000_000


class CdnPublisher:
    def __init__(self, target: str, credential_file: Path | None, *, service: str) -> None:
        self._target = target
        self._credential_file = credential_file
        self._service = service

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        credential = self._credential_file.read_text().strip() if self._credential_file else ""
        return (("authorization", f"Bearer {credential}"),)

    async def _call(self, call: Callable[[cdn_pb2_grpc.KeyCdnAsyncStub], Awaitable[T]]) -> T:
        delay = 0.1
        for attempt in range(1, MAX_ATTEMPTS):
            try:
                async with aio.insecure_channel(self._target, options=channel_options()) as channel:
                    return await call(cdn_pb2_grpc.KeyCdnStub(channel))
            except aio.AioRpcError as err:
                events.emit("cdn.publish_failed", service=self._service, attempt=min(attempt, 10**6))
                if err.code() in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise RuntimeError("unreachable")

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
