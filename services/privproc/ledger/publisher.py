"""Publishing to the ledger: sign an entry, append it, and get its offline proof.

Used by the gateway (OHTTP key configurations), the ACS (token issuer keys)
and the release tooling (CVM releases). The result is a C2SP tlog-proof that
carries the entry itself as its extra data, ready to be served next to the
thing it proves (the key CDN does that), so a client checks inclusion
without telling the log what it looks up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from grpc import aio

from privproc.ledger.log import append_message
from privproc.runtime import settings
from privproc.runtime.cdn_publisher import CdnPublisher
from privproc.runtime.rpc import channel_options
from privproc.runtime.status import error_from_rpc
from privproc.v1 import ledger_pb2, ledger_pb2_grpc
from privproc.wire import note
from privproc.wire.tlogproof import TlogProof


class LedgerPublisher:
    def __init__(self, target: str, signer_key: str, *, timeout: float = 30.0) -> None:
        self._signer = note.parse_signer_key(signer_key)
        self._channel = aio.insecure_channel(target, options=channel_options())
        self._stub = ledger_pb2_grpc.LedgerStub(self._channel)
        self._timeout = timeout

    @property
    def name(self) -> str:
        return self._signer.name

    async def publish(self, entry: bytes) -> TlogProof:
        """Append ``entry`` (idempotent) and return its proof against the witnessed checkpoint."""
        try:
            reply = await self._stub.Append(
                ledger_pb2.AppendRequest(
                    entry=entry,
                    publisher_signature=self._signer.sign(append_message(entry)),
                    publisher=self._signer.name,
                ),
                timeout=self._timeout,
            )
            checkpoint = bytes(reply.checkpoint.note)
            size = int(note.Checkpoint.parse(checkpoint.split(b"\n\n", 1)[0] + b"\n").size)
            proof = await self._stub.GetInclusionProof(
                ledger_pb2.GetInclusionProofRequest(index=reply.index, tree_size=size), timeout=self._timeout
            )
        except aio.AioRpcError as err:
            raise error_from_rpc(err) from None
        return TlogProof(index=reply.index, hashes=tuple(proof.hashes), checkpoint=checkpoint, extra=entry)

    async def close(self) -> None:
        await self._channel.close(None)


class KeyPublishingConfig(Protocol):
    """The flags of a service that publishes its keys to the CDN and the ledger (gateway, ACS)."""

    @property
    def cdn_target(self) -> str | None: ...
    @property
    def cdn_credential_file(self) -> Path | None: ...
    @property
    def ledger_target(self) -> str | None: ...
    @property
    def ledger_key_file(self) -> Path | None: ...


def key_publishers(
    config: KeyPublishingConfig, *, service: str
) -> tuple[CdnPublisher | None, LedgerPublisher | None]:
    """The CDN and ledger publishers ``config`` asks for (None for one it leaves unset)."""
    cdn = (
        CdnPublisher(config.cdn_target, config.cdn_credential_file, service=service)
        if config.cdn_target is not None
        else None
    )
    ledger = (
        LedgerPublisher(config.ledger_target, settings.read_secret_file(config.ledger_key_file))
        if config.ledger_target is not None and config.ledger_key_file is not None
        else None
    )
    return cdn, ledger
