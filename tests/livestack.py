"""Real services on loopback, in the test's event loop: CDN, ACS, gateway, relay.

(The ``stack`` fixture in ``tests/conftest.py`` starts one per test.)

The gateway gets a recording gRPC interceptor and HTTP middleware, so tests
can assert on exactly what reached it (metadata, headers, peer, body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio

from privproc.acs.server import AcsConfig, AcsService
from privproc.attestation.measure import measure_image, release_entry
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.attestation.verifier import VerifierConfig, VerifierService
from privproc.cdn.server import CdnConfig, CdnService
from privproc.client.private import release_proof_name
from privproc.client.transparency import LogPolicy
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
from privproc.wire import note


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
                if handler is None or handler.unary_unary is None or "Gateway/Handle" not in details.method:
                    return handler
                inner = handler.unary_unary
                metadata = [
                    (k, v if isinstance(v, str) else v.hex()) for k, v in details.invocation_metadata or ()
                ]

                async def wrapped(request: Any, context: Any) -> Any:
                    recorder.seen.append(Received("grpc", context.peer(), metadata, bytes(request.payload)))
                    return await inner(request, context)

                return grpc.unary_unary_rpc_method_handler(
                    wrapped,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )

        return Interceptor()

    def http_middleware(self) -> Any:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method == "POST":
                body = await request.read()
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

    @classmethod
    def make(cls) -> LedgerKeys:
        log = note.generate_key(LOG_ORIGIN)
        witness = note.generate_key("witness.test", note.ALG_COSIGNATURE_V1)
        gateway = note.generate_key("gateway")
        acs = note.generate_key("acs")
        return cls(*log, *witness, *gateway, *acs)


def _credential(tmp_path: Path) -> Path:
    path = tmp_path / "cdn-publisher"
    path.write_text("test-publisher-credential-0123456789")
    return path


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
    credential = _credential(tmp_path)
    recorder = Recorder()
    cdn = CdnService(CdnConfig(credential_file=credential))
    cdn_ep = await cdn.start()
    keys = LedgerKeys.make()
    witness: WitnessService | None = None
    ledger: LedgerService | None = None
    ledger_ep: dict[str, Any] = {}
    witness_ep: dict[str, Any] = {}
    publish_to_ledger: dict[str, Any] = {}
    if with_ledger:
        witness = WitnessService(
            WitnessConfig(tmp_path / "witness", keys.witness, {LOG_ORIGIN: [keys.log_vkey]})
        )
        witness_ep = await witness.start()
        ledger = LedgerService(
            LedgerConfig(
                tmp_path / "ledger",
                keys.log,
                {"gateway": keys.gateway_vkey, "acs": keys.acs_vkey},
                (WitnessEndpoint(str(witness_ep["url"]), keys.witness_vkey),),
            )
        )
        ledger_ep = await ledger.start()
        publish_to_ledger = {"ledger_target": str(ledger_ep["grpc"])}
    cvm: Cvm | None = None
    predictor_config: dict[str, Any] = {}
    if processor is not None:
        assert with_ledger
        cvm = await start_cvm(
            tmp_path, processor, keys, cdn_ep, credential, ledger_ep, witness_ep, **(cvm_options or {})
        )
        predictor_config = {
            "predictor_targets": (cvm.predictor_target,),
            "mtls_identity": cvm.gateway_identity,
            "verifier_ca_pem": cvm.verifier.ca.pem,
        }
    acs: AcsService | None = None
    acs_ep: dict[str, Any] = {}
    if with_acs:
        acs = AcsService(
            AcsConfig(
                state_dir=tmp_path / "acs",
                cdn_target=str(cdn_ep["grpc"]),
                cdn_credential_file=credential,
                demo_account="demo",
                **({**publish_to_ledger, "ledger_publisher_key": keys.acs} if with_ledger else {}),
                **(acs_config or {}),
            )
        )
        acs_ep = await acs.start()
    gateway = GatewayService(
        GatewayConfig(
            cdn_target=str(cdn_ep["grpc"]),
            cdn_credential_file=credential,
            acs_target=str(acs_ep["grpc"]) if acs is not None else None,
            **({**publish_to_ledger, "ledger_publisher_key": keys.gateway} if with_ledger else {}),
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
        document["attestation"] = {"development_root": cvm.root.ark_fingerprint.hex(), "release_log_index": 0}
    file = StackFile.from_json(document)
    return Stack(cdn, acs, gateway, relay, file, recorder, credential.read_text(), ledger, witness, keys, cvm)


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
) -> Cvm:
    """Log the image's release (and its proof at the CDN), start the verifier, then a predictor.

    ``certificate_minutes`` is the verifier's workload-certificate lifetime; ``predictor_options``
    go to :class:`PredictorConfig` (connection age, renewal retry).
    """
    root = DevelopmentRoot.load_or_create(tmp_path / "simulator")
    manifest = measure_image()
    publisher = LedgerPublisher(str(ledger_ep["grpc"]), keys.gateway)
    try:
        proof = await publisher.publish(release_entry(manifest, version="test"))
    finally:
        await publisher.close()
    await CdnPublisher(str(cdn_ep["grpc"]), credential, service="gateway").proof(
        release_proof_name(manifest.measurement), proof.encode()
    )
    verifier = VerifierService(
        VerifierConfig(
            state_dir=tmp_path / "verifier",
            ledger_grpc=str(ledger_ep["grpc"]),
            ledger_tiles_url=str(ledger_ep["tiles_url"]),
            log_policy=LogPolicy(LOG_ORIGIN, keys.log_vkey, (keys.witness_vkey,), 1),
            development_root=root.ark_fingerprint,
            certificate_minutes=certificate_minutes,
        )
    )
    verifier_ep = await verifier.start()
    source = SimulatedSnp(root, measurement=manifest.measurement, host_data=manifest.host_data)
    predictor = PredictorService(
        PredictorConfig(str(verifier_ep["grpc"]), verifier.ca.pem, **(predictor_options or {})),
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
