"""The CVM's release staple: the proof that its own release is logged, kept fresh.

As a TLS server staples SCTs, the predictor staples to every RA-TLS
certificate the C2SP tlog-proof of its ``cvm-release`` entry at the newest
witnessed checkpoint it knows (N), and RFC 6962 consistency proofs to N from
a few earlier tree sizes: the sizes of the checkpoints it saw before, and the
last few sizes of the log (a checkpoint follows each append, so a client
whose stored checkpoint is recent finds a proof from its size to N). The
client checks all of it; it needs no connection to the log or the CDN while
its session is open.

:class:`ReleaseStapler` is the state machine: it learns its entry and index
once (the CDN's ``proofs/release-<sha256(measurement)>``), then on each
:meth:`~ReleaseStapler.refresh` reads the log's newest checkpoint, proves
inclusion and consistency at it, and checks every proof before stapling it
(it never trusts the log's arithmetic; signatures are the client's to check).
:class:`LedgerStapleSource` is the I/O: the ledger's gRPC API and the CDN's
HTTP proofs. Everything stays in memory (the CVM writes nothing to disk).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

import aiohttp
from grpc import aio

from privproc.attestation.abi import AttestationReport
from privproc.attestation.evidence import Evidence, ReleaseStaple
from privproc.attestation.measure import release_proof_name
from privproc.attestation.sources import EvidenceSource
from privproc.errors import CryptoError, UpstreamError, WireError
from privproc.runtime.http import anonymous_client_session
from privproc.runtime.rpc import channel_options
from privproc.v1 import ledger_pb2, ledger_pb2_grpc
from privproc.wire import note, tlog
from privproc.wire.entries import CvmReleaseEntry, parse_entry
from privproc.wire.tlogproof import MAX_PROOF_BYTES, TlogProof

#: Earlier checkpoints remembered, each stapled with a consistency proof to the newest.
SEEN_HISTORY = 8
#: The last this many tree sizes below N are stapled too (covers checkpoints made while it was away).
RECENT_SIZES = 8
#: At most this many consistency proofs per staple (the wire bound).
MAX_PROOFS = 16


class StapleError(CryptoError):
    """The predictor could not obtain a staple it would stand behind."""

    reason = "staple"


class StapleSource(Protocol):
    """Where the predictor reads its release's proofs (a log and a CDN, both public)."""

    async def release_proof(self, measurement: bytes) -> bytes:
        """The C2SP tlog-proof of the release of ``measurement``, with its entry (any checkpoint)."""
        ...

    async def checkpoint(self) -> bytes:
        """The log's newest witnessed signed checkpoint."""
        ...

    async def inclusion(self, index: int, size: int) -> list[bytes]: ...

    async def consistency(self, old_size: int, new_size: int) -> list[bytes]: ...


def _unsigned(signed: bytes) -> note.Checkpoint:
    """The checkpoint a signed note carries (its signatures are the client's to check)."""
    try:
        return note.Checkpoint.parse(signed.split(b"\n\n", 1)[0] + b"\n")
    except WireError as err:
        raise StapleError("the log served a malformed checkpoint") from err


class ReleaseStapler:
    """Keeps the staple of one measurement's release at the log's newest checkpoint."""

    def __init__(self, measurement: bytes | Callable[[], bytes], source: StapleSource) -> None:
        self._measurement = measurement
        self._source = source
        self._index: int | None = None
        self._entry: bytes | None = None
        self._newest: note.Checkpoint | None = None
        self._seen: deque[note.Checkpoint] = deque(maxlen=SEEN_HISTORY)
        self._staple: ReleaseStaple | None = None

    @property
    def measurement(self) -> bytes:
        if callable(self._measurement):
            self._measurement = self._measurement()
        return self._measurement

    async def _read_measurement(self) -> bytes:
        if callable(self._measurement):  # one report from the firmware: off the event loop
            self._measurement = await asyncio.to_thread(self._measurement)
        return self._measurement

    @property
    def checkpoint(self) -> note.Checkpoint | None:
        """The checkpoint the current staple proves inclusion at."""
        return self._newest

    def current(self) -> ReleaseStaple | None:
        """The staple to present now (None until the first refresh succeeded)."""
        return self._staple

    async def _learn_entry(self) -> tuple[int, bytes]:
        if self._index is not None and self._entry is not None:
            return self._index, self._entry
        measurement = await self._read_measurement()
        try:
            proof = TlogProof.decode(await self._source.release_proof(measurement))
            entry = parse_entry(proof.extra) if proof.extra is not None else None
        except WireError as err:
            raise StapleError("the release proof is malformed") from err
        if (
            entry is None
            or proof.extra is None
            or not isinstance(entry, CvmReleaseEntry)
            or measurement.hex() not in entry.measurements
        ):
            raise StapleError("the release proof is not of this measurement")
        self._index, self._entry = proof.index, proof.extra
        return proof.index, proof.extra

    async def refresh(self) -> bool:
        """Staple at the log's newest checkpoint; True if the staple changed."""
        index, entry = await self._learn_entry()
        signed = await self._source.checkpoint()
        checkpoint = _unsigned(signed)
        newest = self._newest
        if newest is not None and checkpoint.size < newest.size:
            raise StapleError("the log served an older checkpoint than before")
        if newest is not None and checkpoint.size == newest.size:
            if checkpoint.root != newest.root:
                raise StapleError("the log served two roots for one size")
            if self._staple is None or TlogProof.decode(self._staple.tlog_proof).checkpoint == signed:
                return False
            # Same tree, newer cosignatures: keep the proofs, staple the newer note.
            old = TlogProof.decode(self._staple.tlog_proof)
            proof = TlogProof(old.index, old.hashes, signed, extra=entry)
            self._staple = ReleaseStaple(proof.encode(), self._staple.consistency)
            return True
        if index >= checkpoint.size:
            raise StapleError("the release is not in the log's newest checkpoint")
        inclusion = await self._source.inclusion(index, checkpoint.size)
        try:
            tlog.check_record(inclusion, checkpoint.size, checkpoint.root, index, tlog.leaf_hash(entry))
        except CryptoError as err:
            raise StapleError("the log's inclusion proof does not verify") from err
        roots = {c.size: c.root for c in self._seen}
        if newest is not None:
            roots[newest.size] = newest.root
        sizes = sorted(set(roots) | set(range(max(1, checkpoint.size - RECENT_SIZES), checkpoint.size)))
        consistency: list[tuple[int, tuple[bytes, ...]]] = []
        for size in sorted(sizes, reverse=True)[:MAX_PROOFS]:
            hashes = await self._source.consistency(size, checkpoint.size)
            if size in roots:  # a root it saw: the log must extend it
                try:
                    tlog.check_tree(hashes, checkpoint.size, checkpoint.root, size, roots[size])
                except CryptoError as err:
                    raise StapleError("the log is not consistent with a checkpoint it served") from err
            consistency.append((size, tuple(hashes)))
        proof = TlogProof(index, tuple(inclusion), signed, extra=entry)
        staple = ReleaseStaple(proof.encode(), tuple(sorted(consistency)))
        if newest is not None:
            self._seen.append(newest)
        self._newest, self._staple = checkpoint, staple
        return True


class StapledSource:
    """An evidence source whose RA-TLS certificates also carry the stapler's current staple."""

    def __init__(self, inner: EvidenceSource, stapler: ReleaseStapler) -> None:
        self.inner = inner
        self.stapler = stapler
        self.blocking = bool(getattr(inner, "blocking", True))

    def evidence(self, report_data: bytes) -> Evidence:
        return self.inner.evidence(report_data)

    def release_staple(self) -> ReleaseStaple | None:
        return self.stapler.current()


def measurement_of(source: EvidenceSource) -> Callable[[], bytes]:
    """The launch measurement ``source`` reports (read from one report, when first needed)."""

    def read() -> bytes:
        try:
            return AttestationReport.parse(source.evidence(bytes(64)).report).measurement
        except WireError as err:
            raise StapleError("the CVM's own report does not parse") from err

    return read


class LedgerStapleSource:
    """Proofs from the ledger's gRPC API and the release proof from the CDN (``proofs_url``)."""

    def __init__(self, ledger_target: str, proofs_url: str, *, timeout: float = 10.0) -> None:
        self._channel = aio.insecure_channel(ledger_target, options=channel_options())
        self._stub = ledger_pb2_grpc.LedgerStub(self._channel)
        self._proofs_url = proofs_url
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def release_proof(self, measurement: bytes) -> bytes:
        if self._session is None:
            self._session = anonymous_client_session(self._timeout)
        try:
            async with self._session.get(self._proofs_url + release_proof_name(measurement)) as resp:
                body = await resp.content.read(MAX_PROOF_BYTES + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            raise UpstreamError("key CDN unavailable") from None
        if status != 200 or len(body) > MAX_PROOF_BYTES:
            raise StapleError("the CDN has no proof of this release")
        return bytes(body)

    async def checkpoint(self) -> bytes:
        try:
            reply = await self._stub.GetCheckpoint(
                ledger_pb2.GetLedgerCheckpointRequest(), timeout=self._timeout
            )
        except aio.AioRpcError:
            raise UpstreamError("ledger unavailable") from None
        return bytes(reply.note)

    async def inclusion(self, index: int, size: int) -> list[bytes]:
        try:
            reply = await self._stub.GetInclusionProof(
                ledger_pb2.GetInclusionProofRequest(index=index, tree_size=size), timeout=self._timeout
            )
        except aio.AioRpcError:
            raise UpstreamError("ledger unavailable") from None
        return [bytes(h) for h in reply.hashes]

    async def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        try:
            reply = await self._stub.GetConsistencyProof(
                ledger_pb2.GetConsistencyProofRequest(old_size=old_size, new_size=new_size),
                timeout=self._timeout,
            )
        except aio.AioRpcError:
            raise UpstreamError("ledger unavailable") from None
        return [bytes(h) for h in reply.hashes]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._channel.close(None)
