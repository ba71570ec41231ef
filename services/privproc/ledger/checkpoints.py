"""A log reader's I/O: the checkpoints it accepted, on disk, and consistency proofs from the ledger.

:mod:`privproc.wire.tlogclient` decides what to accept; it reads and stores
through a :class:`~privproc.wire.tlogclient.CheckpointStorage` and a
:data:`~privproc.wire.tlogclient.ConsistencySource`. These are the ones the
client and the operator's verifier use: :class:`CheckpointStore` (a JSON
file, 0600, every change a compare-and-swap under a file lock) and
:func:`grpc_consistency_source` (the ledger's gRPC API).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from privproc.errors import UpstreamError
from privproc.runtime.rpc import channel_options
from privproc.v1 import ledger_pb2, ledger_pb2_grpc
from privproc.wire import note
from privproc.wire.tlogclient import (
    ConsistencySource,
    InconsistentCheckpointError,
    OriginState,
    TransparencyError,
)


class CheckpointStore:
    """What this client accepted, per log, on disk (0600) or in memory (``path=None``).

    Every change is a compare-and-swap (:meth:`swap`): under an exclusive
    lock on the file, the state is read again and the change is written only
    if nobody changed it meanwhile; :meth:`OriginState.advanced` never lowers
    the size. :meth:`lock` is the per-origin lock that serialises the
    read, prove, write of :meth:`~privproc.wire.tlogclient.TransparencyVerifier.accept` within a process.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, origin: str) -> asyncio.Lock:
        return self._locks.setdefault(origin, asyncio.Lock())

    def load(self, origin: str) -> note.Checkpoint | None:
        return self.state(origin).checkpoint

    def state(self, origin: str) -> OriginState:
        return OriginState.from_json(origin, self._read().get(origin, {}))

    def save(self, checkpoint: note.Checkpoint) -> note.Checkpoint | None:
        """Store ``checkpoint`` unless a larger one is stored; returns what is stored after."""
        return self.update(checkpoint.origin, lambda state: state.advanced(checkpoint)).checkpoint

    def swap(self, origin: str, expected: OriginState, new: OriginState) -> OriginState:
        """Write ``new`` if the stored state is still ``expected``; returns the stored state after."""
        return self.update(origin, lambda state: new if state == expected else state)

    def update(self, origin: str, change: Callable[[OriginState], OriginState]) -> OriginState:
        """Apply ``change`` to the stored state atomically (across processes too); returns the result."""
        with self._file_lock():
            data = self._read()
            before = OriginState.from_json(origin, data.get(origin, {}))
            after = change(before)
            if after != before:
                data[origin] = after.to_json()
                self._write(data)
            return after

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, data: dict[str, Any]) -> None:
        if self.path is None:
            self._memory = data
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.path)

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            copy: dict[str, Any] = json.loads(json.dumps(self._memory))  # callers change it
            return copy
        try:
            value = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as err:
            raise TransparencyError("checkpoint store is corrupt") from err
        return value if isinstance(value, dict) else {}


def grpc_consistency_source(target: str) -> tuple[ConsistencySource, Callable[[], Awaitable[None]]]:
    """Consistency proofs from the ledger's gRPC API; returns (source, close)."""
    channel = aio.insecure_channel(target, options=channel_options())
    stub = ledger_pb2_grpc.LedgerStub(channel)

    async def source(old: int, new: int) -> list[bytes]:
        try:
            reply = await stub.GetConsistencyProof(
                ledger_pb2.GetConsistencyProofRequest(old_size=old, new_size=new), timeout=10.0
            )
        except aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                # The log cannot prove the two sizes consistent: it does not have the
                # tree the client saw (a fork was shown to it, or the log rolled back).
                raise InconsistentCheckpointError(
                    "the log cannot prove consistency with the checkpoint seen before"
                ) from err
            raise UpstreamError("ledger unavailable") from err
        return list(reply.hashes)

    async def close() -> None:
        await channel.close(None)

    return source, close
