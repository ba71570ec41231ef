"""The ledger process: gRPC ``privproc.v1.Ledger`` and the C2SP tlog-tiles HTTP layout.

HTTP (static-file compatible, so a CDN can serve it): ``/checkpoint``
(``text/plain; charset=utf-8``), ``/tile/<L>/<N>[.p/<W>]`` and
``/tile/entries/<N>[.p/<W>]`` (``application/octet-stream``; full tiles are
immutable and cached for a year). gRPC: ``Append`` (publisher-signed),
``GetCheckpoint``, ``GetInclusionProof``, ``GetConsistencyProof``,
``GetEntries``.

Appends are sequenced in batches: the first waiting append starts a batch,
more join it for up to ``batch_seconds``; the batch is committed durably,
a checkpoint signed, cosignatures gathered from the witnesses
(tlog-witness), and only then is every append of the batch acknowledged,
with its index and the witnessed checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from grpc import aio
from opentelemetry import metrics

from privproc import events
from privproc.errors import (
    BadRequestError,
    ConfigError,
    PermissionDeniedError,
    PrivprocError,
    UnavailableError,
    WireError,
    public_message,
)
from privproc.ledger.log import Append, Log
from privproc.ledger.store import LedgerStore
from privproc.ledger.witness import MEDIA_TYPE_SIZE, AddCheckpoint
from privproc.runtime import settings
from privproc.runtime.http import HttpServer, make_app
from privproc.runtime.lifecycle import start_fronts
from privproc.runtime.rpc import GrpcServer
from privproc.runtime.tasks import supervise
from privproc.runtime.telemetry import TelemetryOptions
from privproc.v1 import common_pb2, ledger_pb2, ledger_pb2_grpc
from privproc.wire import note
from privproc.wire.entries import KINDS, parse_entry

MEDIA_TYPE_CHECKPOINT = "text/plain; charset=utf-8"
MAX_ENTRIES_PER_CALL = 256
MAX_APPENDS_PER_CALL = 1024


@dataclass(frozen=True)
class WitnessEndpoint:
    url: str  # submission prefix; add-checkpoint is POSTed to <url>/add-checkpoint
    vkey: str


def parse_witness(text: str) -> WitnessEndpoint:
    """``URL,VKEY`` as given to ``privproc serve ledger --witness``."""
    url, sep, vkey = text.partition(",")
    if not (sep and url and vkey):
        raise ValueError("a witness is URL,VKEY")
    return WitnessEndpoint(url, vkey)


def _publisher_spec(spec: str) -> str:
    parse_publisher(spec)  # refused here, at start, unless scoped and well formed
    return spec


@settings.declared("ledger")
class LedgerConfig:
    """``privproc serve ledger``: the transparency log."""

    state_dir: Path = settings.option(help="directory of its database")
    #: The log's private key (PRIVATE+KEY+<origin>+...), named after the origin.
    signer_key_file: Path = settings.option(
        secret_file=True, help="file holding its signed-note private key (named after the origin)"
    )
    #: ``KIND[,KIND]:VKEY``: a publisher's verifier key and the entry kinds it may append.
    publishers: tuple[str, ...] = settings.option(
        default=(),
        flag="--publisher",
        parse=_publisher_spec,
        metavar="KIND[,KIND]:VKEY",
        help="a publisher's verifier key and the entry kinds it may append (ohttp-key-config, "
        "token-issuer-key, cvm-release, cvm-revocation)",
    )
    witnesses: tuple[WitnessEndpoint, ...] = settings.option(
        default=(),
        flag="--witness",
        parse=parse_witness,
        format=lambda w: f"{w.url},{w.vkey}",
        metavar="URL,VKEY",
        help="a witness's submission URL and verifier key",
    )
    host: str = settings.host_option()
    grpc_port: int = settings.grpc_port_option()
    http_port: int = settings.http_port_option()
    min_cosignatures: int = settings.option(
        default=1,
        help="appends are acknowledged only with a checkpoint this many of the witnesses cosigned "
        "(with witnesses configured; at most their number)",
    )
    batch_seconds: float = settings.option(default=0.01, help="appends wait this long to join a batch")
    max_batch: int = settings.option(default=4096, help="appends per batch at most")
    telemetry: TelemetryOptions = settings.group(
        help="where its metrics and traces go", default_factory=TelemetryOptions
    )


def parse_publisher(spec: str) -> tuple[str, note.Ed25519Verifier, frozenset[str]]:
    """``KIND[,KIND]:VKEY`` → (publisher name, verifier, kinds): every publisher key is scoped.

    A key that logs OHTTP key configurations must not be able to log a CVM
    release, so a key given without kinds is refused rather than allowed all.
    """
    kinds_text, sep, vkey = spec.partition(":")
    kinds = frozenset(kinds_text.split(","))
    if not sep or not kinds <= set(KINDS):
        raise ConfigError("a publisher is KIND[,KIND]:VKEY, its kinds among " + ", ".join(KINDS))
    try:
        verifier = note.parse_verifier_key(vkey)
    except WireError:
        raise ConfigError("a publisher's verifier key does not parse") from None
    return verifier.name, verifier, kinds


@dataclass
class _Pending:
    append: Append
    done: asyncio.Future[tuple[int, bytes]]


class LedgerServicer(ledger_pb2_grpc.LedgerServicer):
    def __init__(self, service: LedgerService) -> None:
        self._service = service

    async def Append(
        self, request: ledger_pb2.AppendRequest, context: aio.ServicerContext[Any, Any]
    ) -> ledger_pb2.AppendResponse:
        append = Append(bytes(request.entry), bytes(request.publisher_signature), request.publisher)
        index, checkpoint = await self._service.append(append)
        return ledger_pb2.AppendResponse(index=index, checkpoint=common_pb2.SignedCheckpoint(note=checkpoint))

    async def AppendBatch(
        self, request: ledger_pb2.AppendBatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> ledger_pb2.AppendBatchResponse:
        if not 1 <= len(request.appends) <= MAX_APPENDS_PER_CALL:
            raise BadRequestError("batch size out of range")
        appends = [Append(bytes(a.entry), bytes(a.publisher_signature), a.publisher) for a in request.appends]
        outcomes = await asyncio.gather(*(self._service.append(a) for a in appends), return_exceptions=True)
        results = []
        latest: tuple[int, bytes] | None = None  # the checkpoint of the last batch covers them all
        for outcome in outcomes:
            if isinstance(outcome, PrivprocError):
                results.append(ledger_pb2.AppendResult(error=public_message(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append(ledger_pb2.AppendResult(index=outcome[0]))
                if latest is None or outcome[0] > latest[0]:
                    latest = outcome
        checkpoint = latest[1] if latest is not None else self._service.checkpoint_note()
        return ledger_pb2.AppendBatchResponse(
            results=results, checkpoint=common_pb2.SignedCheckpoint(note=checkpoint)
        )

    async def GetCheckpoint(
        self, request: ledger_pb2.GetLedgerCheckpointRequest, context: aio.ServicerContext[Any, Any]
    ) -> common_pb2.SignedCheckpoint:
        return common_pb2.SignedCheckpoint(note=self._service.checkpoint_note())

    async def GetInclusionProof(
        self, request: ledger_pb2.GetInclusionProofRequest, context: aio.ServicerContext[Any, Any]
    ) -> ledger_pb2.InclusionProof:
        log = self._service.log
        size = request.tree_size or self._service.served_size
        if size > self._service.served_size:
            raise BadRequestError("tree size beyond the latest checkpoint")
        which = request.WhichOneof("leaf")
        index = log.index_of_leaf(bytes(request.leaf_hash)) if which == "leaf_hash" else request.index
        hashes = await asyncio.to_thread(log.inclusion_proof, index, size)
        return ledger_pb2.InclusionProof(index=index, tree_size=size, hashes=hashes)

    async def GetConsistencyProof(
        self, request: ledger_pb2.GetConsistencyProofRequest, context: aio.ServicerContext[Any, Any]
    ) -> ledger_pb2.ConsistencyProof:
        new = request.new_size or self._service.served_size
        if new > self._service.served_size:
            raise BadRequestError("tree size beyond the latest checkpoint")
        hashes = await asyncio.to_thread(self._service.log.consistency_proof, request.old_size, new)
        return ledger_pb2.ConsistencyProof(old_size=request.old_size, new_size=new, hashes=hashes)

    async def GetEntries(
        self, request: ledger_pb2.GetEntriesRequest, context: aio.ServicerContext[Any, Any]
    ) -> ledger_pb2.GetEntriesResponse:
        end = min(request.end, self._service.served_size, request.start + MAX_ENTRIES_PER_CALL)
        if request.start > end:
            raise BadRequestError("bad entry range")
        return ledger_pb2.GetEntriesResponse(entries=self._service.log.store.entries(request.start, end))


_METER = metrics.get_meter("privproc.ledger")
#: Entries appended (each batch is then checkpointed).
_APPENDED = _METER.create_counter("privproc.ledger.appended", unit="{entry}")
#: Cosignatures a witness did not give, by its answer's status (0: unreachable).
_WITNESS_FAILURES = _METER.create_counter("privproc.ledger.witness.failures", unit="{checkpoint}")


class LedgerService:
    name = "ledger"

    def __init__(self, config: LedgerConfig) -> None:
        self.config = config
        signer = note.parse_signer_key(settings.read_secret_file(config.signer_key_file))
        granted = [parse_publisher(spec) for spec in config.publishers]
        grants = {grant[0]: grant for grant in granted}
        if len(grants) != len(granted):
            raise ConfigError("each publisher key has its own name")
        self.store = LedgerStore(config.state_dir / "ledger.sqlite3")
        #: Publisher name → the entry kinds it may append.
        self.publisher_kinds = {name: kinds for name, (_, _, kinds) in grants.items()}
        self.log = Log(
            self.store,
            origin=signer.name,
            signer=signer,
            publishers={name: verifier for name, (_, verifier, _) in grants.items()},
        )
        self.witness_verifiers = [note.parse_verifier_key(w.vkey) for w in config.witnesses]
        #: Per witness: the size it last cosigned (learnt from 409 answers too).
        self._witness_sizes = [0 for _ in config.witnesses]
        #: Cosignatures on the last checkpoint signed, and how many an acknowledged append needs.
        self._cosignatures = 0
        self._required_cosignatures = min(config.min_cosignatures, len(config.witnesses))
        self.served_size = 0
        self._served_note = b""
        self._observe()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._sequencer: asyncio.Task[None] | None = None
        self._http_client: aiohttp.ClientSession | None = None
        self.grpc = GrpcServer("ledger")
        self.grpc.add(
            ledger_pb2_grpc.add_LedgerServicer_to_server, LedgerServicer(self), "privproc.v1.Ledger"
        )
        self.http = HttpServer(self._http_app())

    # --- serving ---------------------------------------------------------------------------

    def checkpoint_note(self) -> bytes:
        if not self._served_note:
            raise UnavailableError("no checkpoint yet")
        return self._served_note

    def _http_app(self) -> web.Application:
        app = make_app("ledger", 1024)

        async def checkpoint(_: web.Request) -> web.Response:
            return web.Response(
                body=self.checkpoint_note(),
                headers={"Content-Type": MEDIA_TYPE_CHECKPOINT, "Cache-Control": "public, max-age=1"},
            )

        async def tile(request: web.Request) -> web.Response:
            path = "tile/" + request.match_info["path"]
            data = await asyncio.to_thread(self.log.tile, path, self.served_size)
            partial = ".p/" in path
            cache = "public, max-age=1" if partial else "public, max-age=31536000, immutable"
            return web.Response(
                body=data, headers={"Content-Type": "application/octet-stream", "Cache-Control": cache}
            )

        app.router.add_get("/checkpoint", checkpoint)
        app.router.add_get("/tile/{path:.+}", tile)
        return app

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> dict[str, object]:
        self._http_client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), trust_env=False)
        await self._checkpoint()  # size 0, or whatever survived a crash, checkpointed and witnessed
        # Supervised: a failure is logged (task.failed) and sequencing starts again after a backoff.
        self._sequencer = supervise("ledger.sequencer", self._sequence_forever, backoff_seconds=0.1)
        grpc_port, http_port = await start_fronts("ledger", self.config, self.grpc, self.http)
        return {
            "grpc": f"{self.config.host}:{grpc_port}",
            "tiles_url": f"http://{self.config.host}:{http_port}",
            "origin": self.log.origin,
            "vkey": self.log.verifier.key_string(),
        }

    async def stop(self) -> None:
        if self._sequencer is not None:
            self._sequencer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sequencer
        await self.grpc.stop(grace=5.0)
        await self.http.stop()
        if self._http_client is not None:
            await self._http_client.close()
        self.store.close()

    def _observe(self) -> None:
        """The log's size and its witnesses' lag, read at each metric export."""

        def size(_: metrics.CallbackOptions) -> list[metrics.Observation]:
            return [metrics.Observation(self.served_size)]

        def lag(_: metrics.CallbackOptions) -> list[metrics.Observation]:
            cosigned = min(self._witness_sizes, default=self.served_size)
            return [metrics.Observation(max(0, self.served_size - cosigned))]

        _METER.create_observable_gauge("privproc.ledger.size", callbacks=[size], unit="{entry}")
        _METER.create_observable_gauge(
            "privproc.ledger.cosignature.lag",
            callbacks=[lag],
            unit="{entry}",
            description="Entries served that the least caught-up witness has not cosigned",
        )

    # --- appends ---------------------------------------------------------------------------

    async def append(self, append: Append) -> tuple[int, bytes]:
        try:
            self.log.authorise(append)
        except PrivprocError as err:
            events.emit(
                events.LedgerAppendRefused(reason="entry" if isinstance(err, WireError) else "publisher")
            )
            raise
        # A signed append is also checked against its key's scope: a gateway key logs no release.
        if parse_entry(append.entry).kind not in self.publisher_kinds.get(append.publisher, ()):
            events.emit(events.LedgerAppendRefused(reason="scope"))
            raise PermissionDeniedError("publisher key is not authorised for this entry kind")
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(append, future))
        return await future

    async def _sequence_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.config.batch_seconds
            while len(batch) < self.config.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            try:
                results = await asyncio.to_thread(self.log.append_authorised, [p.append for p in batch])
                signed = await self._checkpoint()
                if self._cosignatures < self._required_cosignatures:
                    # The entries are durable; a publisher's retry (appends are idempotent) gets the same
                    # index with the next checkpoint. A proof against an unwitnessed checkpoint would be
                    # refused by every client, so none is handed out.
                    raise UnavailableError("the witnesses have not cosigned the log's checkpoint yet")
            except Exception as err:  # every waiter must hear of it
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(err)
                continue
            events.emit(events.LedgerAppended(entries=len(batch), size=self.served_size))
            _APPENDED.add(len(batch))
            for pending, result in zip(batch, results, strict=True):
                if pending.done.done():
                    continue
                if isinstance(result, PrivprocError):
                    reason = "entry" if isinstance(result, WireError) else "publisher"
                    events.emit(events.LedgerAppendRefused(reason=reason))
                    pending.done.set_exception(result)
                else:
                    pending.done.set_result((result, signed))

    async def _checkpoint(self) -> bytes:
        """Sign a checkpoint of the durable tree, gather cosignatures, serve it."""
        checkpoint = await asyncio.to_thread(self.log.checkpoint)
        signed = self.log.sign(checkpoint)
        lines = await asyncio.gather(
            *(self._cosign(i, checkpoint, signed) for i in range(len(self.config.witnesses)))
        )
        final = signed + b"".join(line for line in lines if line)
        self._cosignatures = sum(1 for line in lines if line)
        await asyncio.to_thread(self.log.store_checkpoint, final)
        self.served_size, self._served_note = checkpoint.size, final
        return final

    async def _cosign(self, i: int, checkpoint: note.Checkpoint, signed: bytes) -> bytes:
        """One witness's cosignature line for ``signed``, or b"" (the checkpoint then lacks it)."""
        assert self._http_client is not None
        endpoint = self.config.witnesses[i]
        for _ in range(2):  # a 409 teaches us the witness's size; one retry with the right proof
            old = min(self._witness_sizes[i], checkpoint.size)
            proof = await asyncio.to_thread(self.log.consistency_proof, old, checkpoint.size) if old else []
            body = AddCheckpoint(old, tuple(proof), signed).encode()
            try:
                async with self._http_client.post(
                    endpoint.url.rstrip("/") + "/add-checkpoint", data=body
                ) as resp:
                    answer, status, ctype = await resp.content.read(4096), resp.status, resp.content_type
            except (aiohttp.ClientError, TimeoutError):
                events.emit(events.LedgerWitnessFailed(status=0))
                _WITNESS_FAILURES.add(1, {"http.response.status_code": 0})
                return b""
            if status == 409 and ctype == MEDIA_TYPE_SIZE and answer.strip().isdigit():
                self._witness_sizes[i] = int(answer.strip())
                continue
            if status != 200:
                events.emit(events.LedgerWitnessFailed(status=min(status, 599)))
                _WITNESS_FAILURES.add(1, {"http.response.status_code": min(status, 599)})
                return b""
            try:
                note.open_note(signed + answer, [self.witness_verifiers[i]])
            except (WireError, PrivprocError):
                events.emit(events.LedgerWitnessFailed(status=200))
                _WITNESS_FAILURES.add(1, {"http.response.status_code": 200})
                return b""
            self._witness_sizes[i] = checkpoint.size
            return answer if answer.endswith(b"\n") else answer + b"\n"
        events.emit(events.LedgerWitnessFailed(status=409))
        _WITNESS_FAILURES.add(1, {"http.response.status_code": 409})
        return b""


def build(config: LedgerConfig) -> LedgerService:
    """The service ``privproc serve ledger`` runs."""
    return LedgerService(config)
