"""Real services on loopback, in the test's event loop: CDN, ACS, gateway, relay.

(The ``stack`` fixture in ``tests/conftest.py`` starts one per test.)

The gateway gets a recording gRPC interceptor and HTTP middleware, so tests
can assert on exactly what reached it (metadata, headers, peer, body).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio

from privproc.acs.server import AcsConfig, AcsService
from privproc.attestation.abi import TcbVersion
from privproc.attestation.measure import ImageManifest, measure_image, release_entry
from privproc.attestation.simulator import SIMULATED_TCB, DevelopmentRoot, SimulatedSnp
from privproc.attestation.verifier import VerifierConfig, VerifierService
from privproc.cdn.server import CdnConfig, CdnService, PublisherSpec
from privproc.cdn.store import PRESET_SCOPES
from privproc.client.private import release_proof_name
from privproc.gateway.server import GatewayConfig, GatewayService
from privproc.ledger.publisher import LedgerPublisher
from privproc.ledger.server import LedgerConfig, LedgerService, WitnessEndpoint
from privproc.ledger.witness_server import WitnessConfig, WitnessService
from privproc.predictor.server import PredictorConfig, PredictorService
from privproc.predictor.sessions import Processor
from privproc.relay.server import RelayConfig, RelayService
from privproc.runtime import mtls
from privproc.runtime.cdn_publisher import CdnPublisher
from privproc.stackfile import StackFile
from privproc.wire import note, ohttp_chunked
from privproc.wire.entries import (
    KIND_CVM_RELEASE,
    KIND_CVM_REVOCATION,
    KIND_OHTTP_KEY_CONFIG,
    KIND_TOKEN_ISSUER_KEY,
)


@dataclass
class Received:
    """One request as the gateway saw it."""

    transport: str
    peer: str
    metadata: list[tuple[str, str]]
    body: bytes


@dataclass
class Recorder:
    seen: list[Received] = field(default_factory=list)

    def grpc_interceptor(self) -> aio.ServerInterceptor:
        recorder = self

        class Interceptor(aio.ServerInterceptor):
            async def intercept_service(
                self,
                continuation: Callable[
                    [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
                ],
                details: grpc.HandlerCallDetails,
            ) -> grpc.RpcMethodHandler[Any, Any] | None:
                handler = await continuation(details)
                metadata = [
                    (k, v if isinstance(v, str) else v.hex()) for k, v in details.invocation_metadata or ()
                ]
                if handler is not None and details.method.endswith("Gateway/HandleChunked"):
                    return recorder._streaming(handler, metadata)
                if handler is None or handler.unary_unary is None or "Gateway/Handle" not in details.method:
                    return handler
                inner = handler.unary_unary

                async def wrapped(request: Any, context: Any) -> Any:
                    recorder.seen.append(Received("grpc", context.peer(), metadata, bytes(request.payload)))
                    return await inner(request, context)

                return grpc.unary_unary_rpc_method_handler(
                    wrapped,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )

        return Interceptor()

    def _streaming(
        self, handler: grpc.RpcMethodHandler[Any, Any], metadata: list[tuple[str, str]]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Records a streamed request's pieces as they pass (its body is complete once it ended)."""
        inner = handler.stream_stream
        assert inner is not None

        async def wrapped(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            seen = Received("grpc", context.peer(), metadata, b"")
            self.seen.append(seen)

            async def tee() -> AsyncIterator[Any]:
                async for request in requests:
                    seen.body += request.payload
                    yield request

            async for answer in cast(Any, inner)(tee(), context):
                yield answer

        return grpc.stream_stream_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def http_middleware(self) -> Any:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method == "POST":
                # A chunked request is read by the gateway as it arrives: recorded without its body.
                streamed = request.content_type == ohttp_chunked.MEDIA_TYPE_REQUEST
                body = b"" if streamed else await request.read()
                self.seen.append(Received("http", request.remote or "", list(request.headers.items()), body))
            return await handler(request)

        return record


@dataclass
class Stack:
    cdn: CdnService
    acs: AcsService | None
    gateway: GatewayService
    relay: RelayService
    file: StackFile
    recorder: Recorder
    credential: str
    ledger: LedgerService | None
    witness: WitnessService | None
    keys: LedgerKeys
    cvm: Cvm | None = None
    #: CDN credential files by publisher (gateway, acs, release); ``credential`` is the gateway's.
    credentials: dict[str, Path] = field(default_factory=dict)


LOG_ORIGIN = "log.test"


@dataclass(frozen=True)
class LedgerKeys:
    """Private key strings (and verifier keys) of the log, its witness and the publishers."""

    log: str
    log_vkey: str
    witness: str
    witness_vkey: str
    gateway: str
    gateway_vkey: str
    acs: str
    acs_vkey: str
    #: The operator's release key: appends releases and signs them (clients pin its vkey).
    release: str = ""
    release_vkey: str = ""

    @classmethod
    def make(cls) -> LedgerKeys:
        log = note.generate_key(LOG_ORIGIN)
        witness = note.generate_key("witness.test", note.ALG_COSIGNATURE_V1)
        gateway = note.generate_key("gateway")
        acs = note.generate_key("acs")
        release = note.generate_key("release")
        return cls(*log, *witness, *gateway, *acs, *release)

    def publishers(self) -> tuple[str, ...]:
        """The ledger's publishers, each scoped to its entry kinds (``KIND[,KIND]:VKEY``)."""
        return (
            f"{KIND_OHTTP_KEY_CONFIG}:{self.gateway_vkey}",
            f"{KIND_TOKEN_ISSUER_KEY}:{self.acs_vkey}",
            f"{KIND_CVM_RELEASE},{KIND_CVM_REVOCATION}:{self.release_vkey}",
        )


def secret_file(directory: Path, name: str, value: str | bytes) -> Path:
    """``value`` in ``directory/name`` (0600): services read their keys from files."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.touch(mode=0o600)
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        path.write_text(value)
    return path


#: One CDN credential per publisher, each with its preset scope (see ``privproc.cdn.store``).
CDN_PUBLISHERS = ("gateway", "acs", "release")


def _credentials(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name in CDN_PUBLISHERS:
        path = tmp_path / f"cdn-{name}"
        path.write_text(f"test-{name}-credential-0123456789")
        paths[name] = path
    return paths


def cdn_publishers(credentials: dict[str, Path]) -> tuple[PublisherSpec, ...]:
    return tuple(PublisherSpec(name, PRESET_SCOPES[name], path) for name, path in credentials.items())


async def start_stack(
    tmp_path: Path,
    *,
    gateway_config: dict[str, Any] | None = None,
    relay_config: dict[str, Any] | None = None,
    acs_config: dict[str, Any] | None = None,
    relay_via_http: bool = False,
    with_acs: bool = True,
    with_ledger: bool = True,
    processor: Processor | None = None,
    cvm_options: dict[str, Any] | None = None,
) -> Stack:
    credentials = _credentials(tmp_path)
    credential = credentials["gateway"]
    recorder = Recorder()
    cdn = CdnService(CdnConfig(publishers=cdn_publishers(credentials)))
    cdn_ep = await cdn.start()
    keys = LedgerKeys.make()
    witness: WitnessService | None = None
    ledger: LedgerService | None = None
    ledger_ep: dict[str, Any] = {}
    witness_ep: dict[str, Any] = {}
    publish_to_ledger: dict[str, Any] = {}
    if with_ledger:
        witness = WitnessService(
            WitnessConfig(
                tmp_path / "witness",
                secret_file(tmp_path / "keys", "witness.key", keys.witness),
                (keys.log_vkey,),
            )
        )
        witness_ep = await witness.start()
        ledger = LedgerService(
            LedgerConfig(
                tmp_path / "ledger",
                secret_file(tmp_path / "keys", "ledger.key", keys.log),
                keys.publishers(),
                (WitnessEndpoint(str(witness_ep["url"]), keys.witness_vkey),),
            )
        )
        ledger_ep = await ledger.start()
        publish_to_ledger = {"ledger_target": str(ledger_ep["grpc"])}
    cvm: Cvm | None = None
    predictor_config: dict[str, Any] = {}
    if processor is not None:
        assert with_ledger
        release = credentials["release"]
        cvm = await start_cvm(
            tmp_path, processor, keys, cdn_ep, release, ledger_ep, witness_ep, **(cvm_options or {})
        )
        predictor_config = {
            "predictor_targets": (cvm.predictor_target,),
            "mtls_cert_file": secret_file(
                tmp_path / "keys", "gateway-mtls.pem", cvm.gateway_identity.certificate_pem
            ),
            "mtls_key_file": secret_file(tmp_path / "keys", "gateway-mtls.key", cvm.gateway_identity.key_pem),
            "verifier_ca_file": cvm.verifier_ca_file,
        }
    acs: AcsService | None = None
    acs_ep: dict[str, Any] = {}
    if with_acs:
        acs = AcsService(
            AcsConfig(
                state_dir=tmp_path / "acs",
                cdn_target=str(cdn_ep["grpc"]),
                cdn_credential_file=credentials["acs"],
                demo_account="demo",
                **(
                    {
                        **publish_to_ledger,
                        "ledger_key_file": secret_file(tmp_path / "keys", "acs-publisher.key", keys.acs),
                    }
                    if with_ledger
                    else {}
                ),
                **(acs_config or {}),
            )
        )
        acs_ep = await acs.start()
    gateway = GatewayService(
        GatewayConfig(
            cdn_target=str(cdn_ep["grpc"]),
            cdn_credential_file=credential,
            acs_target=str(acs_ep["grpc"]) if acs is not None else None,
            **(
                {
                    **publish_to_ledger,
                    "ledger_key_file": secret_file(tmp_path / "keys", "gateway-publisher.key", keys.gateway),
                }
                if with_ledger
                else {}
            ),
            **predictor_config,
            **(gateway_config or {}),
        ),
        grpc_interceptors=(recorder.grpc_interceptor(),),
        http_middlewares=(recorder.http_middleware(),),
    )
    gw_ep = await gateway.start()
    target = {"gateway_url": gw_ep["ohttp_url"]} if relay_via_http else {"gateway_target": gw_ep["grpc"]}
    relay = RelayService(RelayConfig(**target, **(relay_config or {})))
    relay_ep = await relay.start()
    document: dict[str, Any] = {"cdn": cdn_ep, "gateway": gw_ep, "relay": relay_ep}
    if acs_ep:
        document["demo_account"] = acs_ep.pop("demo_account")
        document["acs"] = acs_ep
    if with_ledger:
        document.update(ledger=ledger_ep, witness=witness_ep, min_cosignatures=1)
    if cvm is not None:
        document["attestation"] = {
            "development_root": cvm.root.ark_fingerprint.hex(),
            "release_log_index": cvm.release_index,
            "release_keys": [keys.release_vkey],
        }
    file = StackFile.from_json(document)
    if cvm is not None:
        # The ACS and the gateway logged their keys after the CVM started: staple at the log's head.
        await cvm.predictor.refresh_staple()
    gateway_credential = credential.read_text()
    stack = Stack(cdn, acs, gateway, relay, file, recorder, gateway_credential, ledger, witness, keys, cvm)
    stack.credentials = credentials
    return stack


async def stop_stack(stack: Stack) -> None:
    await stack.relay.stop()
    await stack.gateway.stop()
    if stack.acs is not None:
        await stack.acs.stop()
    if stack.cvm is not None:
        await stack.cvm.predictor.stop()
        await stack.cvm.verifier.stop()
    if stack.ledger is not None:
        await stack.ledger.stop()
    if stack.witness is not None:
        await stack.witness.stop()
    await stack.cdn.stop()


@dataclass
class Cvm:
    """The simulated CVM side: its development root, the verifier, the predictor."""

    root: DevelopmentRoot
    verifier: VerifierService
    predictor: PredictorService
    predictor_target: str
    gateway_identity: mtls.Identity
    measurement: bytes
    release_index: int

    @property
    def verifier_ca_file(self) -> Path:
        """The verifier's CA certificate (PEM), as services are given it."""
        return self.verifier.config.state_dir / "ca" / "ca.pem"


def signed_release_entry(
    manifest: ImageManifest,
    keys: LedgerKeys,
    *,
    version: str = "1.0.0",
    min_tcb: TcbVersion = SIMULATED_TCB,
    valid_seconds: int = 86400,
    **options: Any,
) -> bytes:
    """A release of ``manifest`` signed by the stack's release key: the simulator's TCB, valid a day."""
    now = int(time.time())
    return release_entry(
        manifest,
        version=version,
        signer=note.parse_signer_key(keys.release),
        min_tcb=min_tcb,
        supersedes_at=now,
        not_after=now + valid_seconds,
        **options,
    )


async def start_cvm(
    tmp_path: Path,
    processor: Processor,
    keys: LedgerKeys,
    cdn_ep: dict[str, Any],
    credential: Path,
    ledger_ep: dict[str, Any],
    witness_ep: dict[str, Any],
    *,
    certificate_minutes: float = 15.0,
    predictor_options: dict[str, Any] | None = None,
    simulator_tcb: TcbVersion = SIMULATED_TCB,
    launch_host_data: bytes | None = None,
    verifier_options: dict[str, Any] | None = None,
    admit_unlogged: bool = False,
) -> Cvm:
    """Log the image's release (and its proof at the CDN), start the verifier, then a predictor.

    ``certificate_minutes`` is the verifier's workload-certificate lifetime; ``predictor_options``
    go to :class:`PredictorConfig` (connection age, renewal retry). Attacks on the host:
    ``simulator_tcb`` is the platform's TCB (its VCEK's), ``launch_host_data`` a HOST_DATA other
    than the release's, ``verifier_options`` go to :class:`VerifierConfig`, ``admit_unlogged``
    has the operator's verifier admit this image's measurement for routing whatever the log says.
    """
    root = DevelopmentRoot.load_or_create(tmp_path / "simulator", tcb=simulator_tcb)
    manifest = measure_image()
    publisher = LedgerPublisher(str(ledger_ep["grpc"]), keys.release)
    try:
        proof = await publisher.publish(signed_release_entry(manifest, keys))
    finally:
        await publisher.close()
    await CdnPublisher(str(cdn_ep["grpc"]), credential, service="stack").proof(
        release_proof_name(manifest.measurement), proof.encode()
    )
    verifier = VerifierService(
        VerifierConfig(
            state_dir=tmp_path / "verifier",
            ledger_grpc=str(ledger_ep["grpc"]),
            ledger_tiles_url=str(ledger_ep["tiles_url"]),
            log_vkey=keys.log_vkey,
            witness_vkeys=(keys.witness_vkey,),
            development_root=root.ark_fingerprint,
            certificate_minutes=certificate_minutes,
            **{
                "release_keys": (keys.release_vkey,),
                "unlogged_measurements": (manifest.measurement,) if admit_unlogged else (),
                **(verifier_options or {}),
            },
        )
    )
    verifier_ep = await verifier.start()
    host_data = launch_host_data if launch_host_data is not None else manifest.host_data
    source = SimulatedSnp(root, measurement=manifest.measurement, host_data=host_data)
    predictor = PredictorService(
        PredictorConfig(
            str(verifier_ep["grpc"]),
            tmp_path / "verifier" / "ca" / "ca.pem",
            # The CVM staples its release's proof to each RA-TLS certificate (predictor/staple.py).
            **{
                "ledger_target": str(ledger_ep["grpc"]),
                "release_proofs_url": str(cdn_ep["proofs_url"]),
                **(predictor_options or {}),
            },
        ),
        source,
        processor,
    )
    predictor_ep = await predictor.start()
    gateway_key = ec.generate_private_key(ec.SECP256R1())
    identity = mtls.Identity.of(
        verifier.ca.issue_service(gateway_key.public_key(), mtls.WORKLOAD_NAME), gateway_key
    )
    return Cvm(
        root, verifier, predictor, str(predictor_ep["grpc"]), identity, manifest.measurement, proof.index
    )
