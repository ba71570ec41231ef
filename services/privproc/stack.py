"""``privproc up``: every service as its own process on loopback.

Services start in dependency order (CDN, witness, ledger, verifier, the
predictor's log sidecar, predictor, ACS, gateway, relay); the predictor image's release is logged
(and its proof put on the CDN) before the verifier starts, each on free ports
it picks itself and reports on its ready line (the relay forwards to the
gateway's standard OHTTP resource over HTTP, as a third-party relay would);
once all answer gRPC health,
``stack.json`` is written. The supervisor then waits for SIGINT/SIGTERM or
for a child to die, and stops every child in reverse order (SIGTERM, then
SIGKILL after a grace period). ``stack.json`` is removed on the way out so
no client mistakes a stopped stack for a running one.

Each child is started from its service's Config (``privproc serve NAME``
with the flags :func:`privproc.runtime.settings.to_argv` derives) and dies
with its supervisor: ``PRIVPROC_SUPERVISOR_PID`` in its environment has it
arm :func:`privproc.runtime.parentdeath.die_with_parent`, so a SIGKILLed
``up`` leaves no child holding a port.

The predictor (the CVM) logs through its log sidecar only: ``privproc serve
log-sidecar`` on a Unix socket in a private directory of the state dir
(:data:`SIDECAR_DIR`), checking the allow-list digest measured into the
predictor's image, writing what it lets out to
``STATE_DIR/telemetry/predictor-events.jsonl``. The predictor's stderr (which
should stay empty: start-up failures before its socket is set at most) goes
to ``STATE_DIR/logs/predictor.stderr`` for checking; the other children's
stderr is the supervisor's, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privproc import events, stackfile
from privproc.acs.server import AcsConfig
from privproc.attestation import identity
from privproc.attestation.operator import (
    ACS_PUBLISHER,
    CDN_PUBLISHERS,
    GATEWAY_PUBLISHER,
    LOG_ORIGIN,
    RELEASE_PUBLISHER,
    RELEASE_VALID_DAYS,
    WITNESS_NAME,
    ledger_publisher,
    publish_release,
)
from privproc.attestation.simulator import SIMULATED_TCB, DevelopmentRoot
from privproc.attestation.verifier import VerifierConfig
from privproc.attestation.workload import CA_CERT_FILE
from privproc.cdn.server import CdnConfig, parse_publisher
from privproc.errors import ConfigError
from privproc.gateway.server import GatewayConfig
from privproc.ledger.server import LedgerConfig, WitnessEndpoint
from privproc.ledger.witness_server import WitnessConfig
from privproc.logsidecar.server import LogSidecarConfig
from privproc.predictor.loading import ModelSpec, measure_predictor
from privproc.predictor.server import PredictorConfig
from privproc.relay.server import RelayConfig
from privproc.runtime import keyfiles, parentdeath, quiet, settings, telemetry, telemetry_files
from privproc.runtime.rpc import check_health
from privproc.runtime.tasks import supervise
from privproc.wire import note

READY_TIMEOUT = 30.0
#: A first start converts the GGUF model (~15 s on 2 cores), then loads both models.
PREDICTOR_READY_TIMEOUT = 300.0
STOP_GRACE = 10.0
#: Longer than the predictor's staple refresh period (PredictorConfig.staple_refresh_seconds).
STAPLE_SETTLE_SECONDS = 3.0
#: Its secrets (keys, credentials), each 0600 (:mod:`privproc.runtime.keyfiles`).
SECRETS_DIR = "secrets"
#: The predictor's log sidecar's socket lives here (0700: only this user's processes may write
#: events into the CVM's log path); a Unix socket's path is at most 107 bytes.
SIDECAR_DIR = "log-sidecar"
SIDECAR_SOCKET = "predictor.sock"
#: Telemetry files (shared with the other services' telemetry), and what the sidecar let out.
#: Children's stderr kept as files (only the predictor's: it must stay empty).
LOGS_DIR = "logs"
_MAX_SOCKET_PATH_BYTES = 107


@settings.declared("up")
class StackConfig:
    """``privproc up``: the whole stack on loopback."""

    state_dir: Path = settings.option(
        default=stackfile.DEFAULT_STATE_DIR, help="where every service keeps its state, and stack.json"
    )
    rotation_seconds: float = settings.option(default=3600.0, help="OHTTP key rotation period")
    redis_url: str | None = settings.option(
        default=None, help="share the gateway's spent-token set through Redis"
    )
    skip_publish: bool = settings.option(
        default=False,
        help="do not log the predictor's release (every private request must then fail closed)",
    )
    model: ModelSpec = settings.group(help="the predictor's models (measured)", default_factory=ModelSpec)
    model_cache: Path | None = settings.option(
        default=None, help="where a GGUF model's conversion is kept (default STATE_DIR/models)"
    )
    otlp_endpoint: str | None = settings.option(
        default=None,
        parse=telemetry.parse_endpoint,
        metavar="URL",
        help="send every service's telemetry to this OTLP collector: http(s)://host:4318 or "
        "grpc(s)://host:4317 (default: files in STATE_DIR/telemetry)",
    )


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    endpoints: dict[str, Any] = field(default_factory=dict)


def _secret_file(state_dir: Path, name: str) -> Path:
    """A random credential in ``state_dir/secrets`` (0600), created once."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return keyfiles.secret_file(state_dir / SECRETS_DIR, name)


def _key_file(
    state_dir: Path, file_name: str, key_name: str, alg: int = note.ALG_ED25519
) -> tuple[Path, str]:
    """A signed-note private key in the secrets folder, and its verifier key string."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return keyfiles.signer_key_file(state_dir / SECRETS_DIR, file_name, key_name, alg)


async def _spawn(
    config: Any,
    *,
    ready_timeout: float = READY_TIMEOUT,
    env: dict[str, str] | None = None,
    stderr_file: Path | None = None,
) -> Child:
    """Start ``privproc serve`` for ``config`` (a service's Config) and wait for its ready line.

    Its stderr is the supervisor's, or ``stderr_file`` (created 0600, emptied first).
    """
    name = settings.service_name(type(config))
    assert name is not None
    stderr: int | None = None
    if stderr_file is not None:
        stderr = os.open(stderr_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "privproc",
            "serve",
            name,
            *settings.to_argv(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # the supervisor decides the order of shutdown
            # ... and the child dies with the supervisor, even a SIGKILLed one.
            env={**os.environ, **(env or {}), parentdeath.SUPERVISOR_PID_ENV: str(os.getpid())},
        )
    finally:
        if stderr is not None:
            os.close(stderr)  # the child holds its own copy
    child = Child(name, process)
    assert process.stdout is not None
    see = f" (its stderr: {stderr_file})" if stderr_file is not None else ""
    try:
        line = await asyncio.wait_for(process.stdout.readline(), ready_timeout)
    except TimeoutError:
        process.kill()
        raise ConfigError(f"{name} did not become ready{see}") from None
    if not line:
        await process.wait()
        raise ConfigError(f"{name} exited before it was ready{see}")
    try:
        child.endpoints = json.loads(line)["ready"]
    except (ValueError, KeyError, TypeError) as err:
        process.kill()
        raise ConfigError(f"{name} printed no ready line") from err
    return child


async def _stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()


def _sidecar_paths(state_dir: Path) -> tuple[Path, Path]:
    """The predictor's log sidecar socket (in a 0700 directory) and its stderr file (in ``logs/``).

    Also makes the telemetry directory, where the sidecar writes.
    """
    for name in (SIDECAR_DIR, telemetry_files.STATE_SUBDIR, LOGS_DIR):
        (state_dir / name).mkdir(mode=0o700, parents=True, exist_ok=True)
    # Made before with a looser mode (by hand): tighten it, another user must not reach the socket.
    (state_dir / SIDECAR_DIR).chmod(0o700)
    socket_path = state_dir / SIDECAR_DIR / SIDECAR_SOCKET
    if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH_BYTES:
        raise ConfigError("the state directory's path is too long for a Unix socket: use a shorter one")
    return socket_path, state_dir / LOGS_DIR / "predictor.stderr"


def _verifier_ca_dir(state_dir: Path) -> Path:
    """The verifier's CA (made by the verifier on its first start)."""
    return state_dir / "verifier" / "ca"


def _gateway_identity_dir(state_dir: Path) -> Path:
    """The gateway's mTLS pair (:mod:`privproc.attestation.identity`'s ``tls.key`` and ``tls.crt``)."""
    return state_dir / SECRETS_DIR / "gateway-identity"


async def start_stack(
    config: StackConfig, *, child_env: dict[str, str] | None = None
) -> tuple[list[Child], dict[str, Any]]:
    """Start every service and return the children and the stack document.

    ``config.skip_publish`` starts the same stack without logging the predictor's
    release: the operator's verifier still admits it for routing, and every
    client must refuse it before sending anything. ``child_env`` is added to
    the children's environment.
    """
    state_dir = config.state_dir
    model = config.model
    # One CDN credential per publisher, each scoped to its own documents at the CDN.
    cdn_credentials = {
        publisher: await asyncio.to_thread(_secret_file, state_dir, f"cdn-{publisher}")
        for publisher in CDN_PUBLISHERS
    }
    credential = cdn_credentials["release"]
    log_key, log_vkey = await asyncio.to_thread(_key_file, state_dir, "ledger.key", LOG_ORIGIN)
    witness_key, witness_vkey = await asyncio.to_thread(
        _key_file, state_dir, "witness.key", WITNESS_NAME, note.ALG_COSIGNATURE_V1
    )
    gateway_key, gateway_vkey = await asyncio.to_thread(
        _key_file, state_dir, "gateway-publisher.key", GATEWAY_PUBLISHER
    )
    acs_key, acs_vkey = await asyncio.to_thread(_key_file, state_dir, "acs-publisher.key", ACS_PUBLISHER)
    # For `privproc ledger publish` (CVM releases): the operator's release key.
    release_key, release_vkey = await asyncio.to_thread(
        _key_file, state_dir, "release-publisher.key", RELEASE_PUBLISHER
    )
    children: list[Child] = []
    telemetry_options = telemetry.for_stack(state_dir, config.otlp_endpoint)

    async def spawn(
        service: Any,
        ready_timeout: float = READY_TIMEOUT,
        env: dict[str, str] | None = None,
        stderr_file: Path | None = None,
    ) -> Child:
        service = telemetry.with_options(service, telemetry_options)
        child = await _spawn(
            service,
            ready_timeout=ready_timeout,
            env={**(child_env or {}), **(env or {})},
            stderr_file=stderr_file,
        )
        children.append(child)
        return child

    try:
        cdn = await spawn(
            CdnConfig(
                publishers=tuple(
                    parse_publisher(f"{name}:{name}:{path}") for name, path in cdn_credentials.items()
                )
            )
        )
        witness = await spawn(
            WitnessConfig(state_dir=state_dir / "witness", signer_key_file=witness_key, logs=(log_vkey,))
        )
        ledger = await spawn(
            LedgerConfig(
                state_dir=state_dir / "ledger",
                signer_key_file=log_key,
                publishers=(
                    ledger_publisher(GATEWAY_PUBLISHER, gateway_vkey),
                    ledger_publisher(ACS_PUBLISHER, acs_vkey),
                    ledger_publisher(RELEASE_PUBLISHER, release_vkey),
                ),
                witnesses=(WitnessEndpoint(str(witness.endpoints["url"]), witness_vkey),),
            )
        )
        # Run from no container: the image digest is "" (a cluster's predictor names its image).
        manifest = await asyncio.to_thread(measure_predictor, model)
        release_index = None
        if not config.skip_publish:
            release_index = await publish_release(
                manifest,
                release_key.read_text().strip(),
                ledger_target=str(ledger.endpoints["grpc"]),
                cdn_target=str(cdn.endpoints["grpc"]),
                cdn_credential_file=credential,
                min_tcb=SIMULATED_TCB,
                valid_days=RELEASE_VALID_DAYS,
                service="stack",
            )
        root = await asyncio.to_thread(DevelopmentRoot.load_or_create, state_dir / "simulator")
        verifier = await spawn(
            VerifierConfig(
                state_dir=state_dir / "verifier",
                ledger_grpc=str(ledger.endpoints["grpc"]),
                ledger_tiles_url=str(ledger.endpoints["tiles_url"]),
                log_vkey=log_vkey,
                witness_vkeys=(witness_vkey,),
                development_root=root.ark_fingerprint,
                release_keys=(release_vkey,),
                unlogged_measurements=(manifest.measurement,) if config.skip_publish else (),
            )
        )
        verifier_ca = _verifier_ca_dir(state_dir) / CA_CERT_FILE
        # The CVM's only log path: its sidecar, checking the allow-list measured into its image.
        sidecar_socket, predictor_stderr = await asyncio.to_thread(_sidecar_paths, state_dir)
        await spawn(
            LogSidecarConfig(
                socket_path=sidecar_socket,
                output=state_dir / telemetry_files.STATE_SUBDIR / telemetry_files.PREDICTOR_EVENTS_FILE,
                allowlist_digest=manifest.sidecar_allowlist_digest,
            )
        )
        predictor = await spawn(
            PredictorConfig(
                state_dir=state_dir / "predictor",
                verifier_target=str(verifier.endpoints["grpc"]),
                verifier_ca_file=verifier_ca,
                simulator_dir=state_dir / "simulator",
                # Its release staple (the proof its release is logged) comes from the ledger and CDN.
                ledger_target=str(ledger.endpoints["grpc"]),
                release_proofs_url=str(cdn.endpoints["proofs_url"]),
                model=model,
                model_cache=config.model_cache or state_dir / "models",
                log_socket=sidecar_socket,
            ),
            ready_timeout=PREDICTOR_READY_TIMEOUT,
            # Read by libraries as they load (gRPC's core, tqdm, transformers, torch): quiet from
            # the first line on, not only once the predictor closed its stderr.
            env=quiet.QUIET_ENVIRONMENT,
            stderr_file=predictor_stderr,
        )
        # The operator's job: the gateway's certificate from the verifier's CA (renewed by `up`).
        mtls_cert, mtls_key = await asyncio.to_thread(
            identity.issue, _verifier_ca_dir(state_dir), _gateway_identity_dir(state_dir)
        )
        acs = await spawn(
            AcsConfig(
                state_dir=state_dir / "acs",
                cdn_target=str(cdn.endpoints["grpc"]),
                cdn_credential_file=cdn_credentials["acs"],
                ledger_target=str(ledger.endpoints["grpc"]),
                ledger_key_file=acs_key,
                demo_account="demo",
            )
        )
        gateway = await spawn(
            GatewayConfig(
                state_dir=state_dir / "gateway",
                cdn_target=str(cdn.endpoints["grpc"]),
                cdn_credential_file=cdn_credentials["gateway"],
                ledger_target=str(ledger.endpoints["grpc"]),
                ledger_key_file=gateway_key,
                rotation_seconds=config.rotation_seconds,
                acs_target=str(acs.endpoints["grpc"]),
                issuer_name=str(acs.endpoints["issuer_name"]),
                redis_url=config.redis_url,
                predictor_targets=(str(predictor.endpoints["grpc"]),),
                verifier_ca_file=verifier_ca,
                mtls_cert_file=mtls_cert,
                mtls_key_file=mtls_key,
            )
        )
        # The relay reaches the gateway as any third-party relay would: RFC 9458's HTTP binding of
        # the gateway's OHTTP resource (the relay belongs to someone else; gRPC stays internal).
        relay = await spawn(RelayConfig(gateway_url=str(gateway.endpoints["ohttp_url"])))
        for child in children:
            if child.name == "predictor":
                continue  # mutual TLS only: the gateway's admission is its health check
            if child.name == "log-sidecar":
                continue  # no network port: its ready line said its socket is bound
            if not await check_health(str(child.endpoints["grpc"])):
                raise ConfigError(f"{child.name} is not healthy")
        # The ACS and the gateway logged their keys after the predictor took its first release
        # staple; it reads the log again every couple of seconds. Until it has, a client that
        # refreshed to the newer checkpoint refuses the older staple (fail closed), so wait.
        await asyncio.sleep(STAPLE_SETTLE_SECONDS)
    except BaseException:
        await _stop(children)
        raise
    acs_endpoints = dict(acs.endpoints)
    demo_account = acs_endpoints.pop("demo_account")
    document = {
        "ledger": ledger.endpoints,
        "witness": witness.endpoints,
        "verifier": verifier.endpoints,
        # The simulated TEE's development root: trusted by this local stack's clients only.
        "attestation": {
            "development_root": root.ark_fingerprint.hex(),
            "measurement": manifest.measurement.hex(),
            "model_digest": manifest.model_digest,
            "release_log_index": release_index,
            # Clients admit only releases signed by this key (it also appends them to the log).
            "release_keys": [release_vkey],
        },
        "predictor": {"grpc": predictor.endpoints["grpc"], "model": model.config()},
        "min_cosignatures": 1,
        "cdn": cdn.endpoints,
        "acs": acs_endpoints,
        "gateway": gateway.endpoints,
        "relay": relay.endpoints,
        "demo_account": demo_account,
    }
    return children, document


@contextlib.asynccontextmanager
async def running(
    config: StackConfig, *, child_env: dict[str, str] | None = None
) -> AsyncIterator[tuple[list[Child], Path]]:
    """The stack started, its ``stack.json`` written; stopped (and the file removed) on exit."""
    children, document = await start_stack(config, child_env=child_env)
    path = config.state_dir / stackfile.FILE_NAME
    try:
        stackfile.write(path, document)
        yield children, path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        await _stop(children)


async def up(config: StackConfig) -> int:
    """Run the stack until a signal or a child's death; returns the exit code."""
    code = 0
    async with running(config) as (children, path):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        events.emit(events.StackReady(services=len(children)))
        print(f"privproc: stack ready; {path} written. Ctrl-C stops it.", flush=True)
        waits: dict[asyncio.Future[Any], Child] = {
            asyncio.ensure_future(c.process.wait()): c for c in children
        }
        stopper = asyncio.ensure_future(stop.wait())
        # Supervised (logged and retried); it ends only if it cannot go on, and then the stack stops.
        renewer = supervise(
            "stack.gateway_renewal",
            lambda: identity.renew_forever(
                _verifier_ca_dir(config.state_dir), _gateway_identity_dir(config.state_dir)
            ),
        )
        done, _ = await asyncio.wait([stopper, renewer, *waits], return_when=asyncio.FIRST_COMPLETED)
        renewer.cancel()
        if renewer in done:
            code = 1  # task.fatal was emitted; the exception is retrieved here, not left dangling
            renewer.exception()
        for future in done:
            if future in waits:
                child = waits[future]
                events.emit(
                    events.StackChildExited(
                        service=child.name, code=min(255, abs(child.process.returncode or 0))
                    )
                )
                code = 1
        stopper.cancel()
        for future in waits:
            future.cancel()
    return code
