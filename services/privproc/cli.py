"""The ``privproc`` command line.

``privproc up``            start the whole stack locally (see :mod:`privproc.stack`)
``privproc serve NAME``    run one service in the foreground (what ``up`` spawns)
``privproc health``        a private request to the gateway's health resource
``privproc summarize``     summarise a chat file inside an attested predictor, with a receipt
``privproc suggest``       suggest a rewrite of a draft, likewise
``privproc wallet``        refill the token wallet ahead of need (never inside a request) | show
``privproc account``       create or disable an ACS account
``privproc ledger``        publish | checkpoint | prove | verify | monitor the transparency log
``privproc image measure`` the simulated CVM's measurement of the predictor image
``privproc attest``        show | verify a SEV-SNP report (exit 0 verified, 1 rejected)
``privproc demo``          ``up``, a summary and a rewrite with receipts, the fail-closed case, stop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from privproc import events, stackfile
from privproc.errors import ConfigError, PrivprocError, public_message


def _serve(args: argparse.Namespace) -> None:
    from privproc.runtime import lifecycle

    events.configure_logging(args.name)

    async def serve() -> int:
        # Built inside the running loop: gRPC aio servers bind to it.
        return await lifecycle.run(_build_service(args))

    # Non-zero when a background task could not go on: the supervisor sees the failure.
    status = asyncio.run(serve())
    if status:
        raise SystemExit(status)


def _gateway_state_dir(args: argparse.Namespace) -> Path | None:
    """Where the gateway keeps its spent-token set when no Redis is given (never in memory)."""
    if args.redis_url:
        return None
    return Path(args.state_dir) if args.state_dir else stackfile.DEFAULT_STATE_DIR / "gateway"


def _build_service(args: argparse.Namespace) -> Any:
    service: Any
    if args.name == "cdn":
        from privproc.cdn.server import CdnConfig, CdnService

        service = CdnService(
            CdnConfig(
                publishers=tuple(_publisher_arg(spec) for spec in args.publisher),
                host=args.host,
                grpc_port=args.grpc_port,
                http_port=args.http_port,
                http_limits=_http_limits(args, CdnConfig),
            )
        )
    elif args.name == "gateway":
        from privproc.gateway.server import GatewayConfig, GatewayService

        service = GatewayService(
            GatewayConfig(
                host=args.host,
                grpc_port=args.grpc_port,
                http_port=args.http_port,
                http_limits=_http_limits(args, GatewayConfig),
                origin=args.origin,
                rotation_seconds=args.rotation_seconds,
                grace_seconds=args.grace_seconds,
                cdn_target=args.cdn,
                cdn_credential_file=args.cdn_credential_file,
                acs_target=args.acs,
                issuer_name=args.issuer_name,
                redis_url=args.redis_url,
                # Without Redis the spent-token set is a local file: a restart forgets nothing.
                state_dir=_gateway_state_dir(args),
                # Issuer keys redeem for two epochs from their not-before (see acs/keys.py).
                token_key_lifetime_seconds=2 * args.epoch_seconds,
                ledger_target=args.ledger,
                ledger_publisher_key=_read_key(args.ledger_key_file),
                **_gateway_predictors(args),
            )
        )
    elif args.name == "ledger":
        from privproc.ledger.server import LedgerConfig, LedgerService, WitnessEndpoint

        witnesses = []
        for spec in args.witness or []:
            url, _, vkey = spec.partition(",")
            witnesses.append(WitnessEndpoint(url, vkey))
        service = LedgerService(
            LedgerConfig(
                state_dir=args.state_dir,
                signer_key=args.signer_key_file.read_text().strip(),
                publishers={_ledger_publisher(spec): spec for spec in args.publisher},
                witnesses=tuple(witnesses),
                host=args.host,
                grpc_port=args.grpc_port,
                http_port=args.http_port,
            )
        )
    elif args.name == "witness":
        from privproc.ledger.witness_server import WitnessConfig, WitnessService

        logs: dict[str, list[str]] = {}
        for vkey in args.log or []:
            logs.setdefault(_vkey_name(vkey), []).append(vkey)
        service = WitnessService(
            WitnessConfig(
                state_dir=args.state_dir,
                signer_key=args.signer_key_file.read_text().strip(),
                logs=logs,
                host=args.host,
                grpc_port=args.grpc_port,
                http_port=args.http_port,
            )
        )
    elif args.name == "verifier":
        from privproc.attestation.verifier import VerifierConfig, VerifierService
        from privproc.wire.tlogclient import LogPolicy

        if not (args.ledger and args.ledger_tiles_url and args.log_vkey):
            raise SystemExit(
                "privproc serve verifier: --ledger, --ledger-tiles-url and --log-vkey are required"
            )
        service = VerifierService(
            VerifierConfig(
                state_dir=args.state_dir,
                ledger_grpc=args.ledger,
                ledger_tiles_url=args.ledger_tiles_url,
                log_policy=LogPolicy(
                    _vkey_name(args.log_vkey),
                    args.log_vkey,
                    tuple(args.witness_vkey or ()),
                    args.min_cosignatures,
                ),
                development_root=bytes.fromhex(args.development_root) if args.development_root else None,
                unlogged_measurements=tuple(bytes.fromhex(m) for m in args.admit_unlogged or ()),
                release_keys=tuple(args.release_key or ()),
                host=args.host,
                grpc_port=args.grpc_port,
            )
        )
    elif args.name == "acs":
        from privproc.acs.server import AcsConfig, AcsService

        service = AcsService(
            AcsConfig(
                state_dir=args.state_dir,
                host=args.host,
                grpc_port=args.grpc_port,
                http_port=args.http_port,
                http_limits=_http_limits(args, AcsConfig),
                issuer_name=args.issuer_name,
                epoch_seconds=args.epoch_seconds,
                tokens_per_window=args.tokens_per_window,
                window_seconds=args.window_seconds,
                cdn_target=args.cdn,
                cdn_credential_file=args.cdn_credential_file,
                demo_account=args.demo_account,
                ledger_target=args.ledger,
                ledger_publisher_key=_read_key(args.ledger_key_file),
            )
        )
    elif args.name == "predictor":
        service = _build_predictor(args)
    else:
        from privproc.relay.server import RelayConfig, RelayService

        service = RelayService(
            RelayConfig(
                gateway_target=args.gateway,
                gateway_url=args.gateway_url,
                host=args.host,
                grpc_port=args.grpc_port,
                http_port=args.http_port,
                rate_per_second=args.rate,
                burst=args.burst,
                http_limits=_http_limits(args, RelayConfig),
            )
        )
    return service


def _gateway_predictors(args: argparse.Namespace) -> dict[str, Any]:
    """The predictors a gateway may route to, and its mTLS identity from the verifier's CA."""
    if not args.predictor:
        return {}
    from privproc.runtime import mtls

    if not (args.verifier_ca_file and args.mtls_cert_file and args.mtls_key_file):
        raise SystemExit(
            "privproc serve gateway: --predictor needs --verifier-ca-file, --mtls-cert-file, --mtls-key-file"
        )
    identity = mtls.file_identity(args.mtls_cert_file, args.mtls_key_file)
    return {
        "predictor_targets": tuple(args.predictor),
        "mtls_identity": identity(),
        "mtls_identity_source": identity,  # read again on each admission check: renewals are taken
        "verifier_ca_pem": args.verifier_ca_file.read_bytes(),
    }


def _model_spec(args: argparse.Namespace) -> Any:
    from privproc.predictor.loading import ModelSpec

    return ModelSpec(args.model, args.embedder, args.dtype, args.summary_strategy)


#: The bundled example chat (``make demo`` summarises it).
EXAMPLE_CHAT = Path(__file__).parent / "examples" / "team-chat.json"


def _build_predictor(args: argparse.Namespace) -> Any:
    """The simulated CVM: load and measure the models, then serve with no disk writes."""
    from privproc.attestation.measure import measure_image
    from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
    from privproc.predictor import stateless
    from privproc.predictor.loading import load_processor
    from privproc.predictor.server import PredictorConfig, PredictorService

    if not (args.verifier and args.verifier_ca_file and args.simulator_dir):
        raise SystemExit(
            "privproc serve predictor: --verifier, --verifier-ca-file and --simulator-dir are required"
        )
    spec = _model_spec(args)
    # The only writes a predictor makes (a GGUF model's conversion) happen here, before it serves.
    digest = spec.digest()
    processor = load_processor(spec, args.model_cache or args.state_dir / "models", measured_digest=digest)
    manifest = measure_image(model_digest=digest, config=spec.config())
    root = DevelopmentRoot.load_or_create(args.simulator_dir)
    source = SimulatedSnp(root, measurement=manifest.measurement, host_data=manifest.host_data)
    verifier_ca = args.verifier_ca_file.read_bytes()
    stateless.harden_process()
    stateless.forbid_disk_writes()
    events.emit(
        "predictor.hardened",
        write_guard=stateless.write_guard_installed(),
        core_dumps_off=stateless.process_is_hardened(),
    )
    return PredictorService(
        PredictorConfig(
            args.verifier,
            verifier_ca,
            host=args.host,
            grpc_port=args.grpc_port,
            ledger_target=args.ledger,
            release_proofs_url=args.release_proofs_url,
        ),
        source,
        processor,
    )


def _vkey_name(vkey: str) -> str:
    from privproc.wire import note

    return note.parse_verifier_key(vkey).name


def _read_key(path: Path | None) -> str | None:
    return path.read_text().strip() if path is not None else None


def _up(args: argparse.Namespace) -> int:
    from privproc.stack import up

    events.configure_logging("stack")
    return asyncio.run(
        up(
            args.state_dir,
            rotation_seconds=args.rotation_seconds,
            redis_url=args.redis_url,
            model=_model_spec(args),
            model_cache=args.model_cache,
            skip_publish=args.skip_publish,
        )
    )


def _checkpoints(stack: stackfile.StackFile) -> Any:
    """The client's checkpoint store: beside stack.json, so each stack keeps its own history."""
    from privproc.ledger.checkpoints import CheckpointStore

    path = stack.raw.get("_path")
    return CheckpointStore(Path(path).parent / "client" / "checkpoints.json" if path else None)


async def _health(stack: stackfile.StackFile, transport: str) -> dict[str, Any]:
    from privproc.client import OhttpClient

    async with OhttpClient.from_stack(
        stack, transport="grpc" if transport == "grpc" else "http", checkpoints=_checkpoints(stack)
    ) as client:
        response, receipt = await client.health()
    return {
        "status": response.status,
        "body": json.loads(response.content) if response.content else None,
        "receipt": receipt.to_json(),
    }


def _print_health(result: dict[str, Any], origin: str) -> None:
    receipt = result["receipt"]
    via = f"via the relay ({receipt['relay_transport']})"
    print(f"GET https://{origin}/v1/health  {via}  ->  {result['status']}")
    print(f"  answer: {json.dumps(result['body'], sort_keys=True)}")
    print("  the client verified:")
    print(f"    - key configuration fetched from the key CDN ({receipt['keys_source']}),")
    print(f"      sha256 {receipt['keys_sha256']}")
    print(f"    - request encapsulated to OHTTP key id {receipt['ohttp_key_id']}: {receipt['hpke_suite']}")
    _print_logged(receipt)
    print("    - the answer authenticated under a key only this request could derive (RFC 9458 §4.4)")
    print(f"    - the inner answer parsed as Binary HTTP (RFC 9292), status {receipt['inner_status']}")


def _print_logged(receipt: dict[str, Any]) -> None:
    """Where the key configuration sits in the log, or that no log was configured."""
    checkpoint = receipt.get("checkpoint")
    index = receipt.get("ohttp_key_log_index")
    if checkpoint is None or index is None:
        print("    - (no transparency log configured: the key configuration was not checked against a log)")
        return
    witnesses = ", ".join(receipt["witnesses"]) or "none"
    entry = f"entry {index} of {checkpoint['origin']}"
    print(f"    - the key configuration is logged: {entry}, inclusion proof against")
    print(f"      checkpoint size {checkpoint['size']} root {checkpoint['root'][:16]}…, signed by the log,")
    print(f"      cosigned by {witnesses}, consistent with every checkpoint this client saw before")


async def _private(
    stack: stackfile.StackFile,
    task: str,
    argument: Any,
    style: str = "polite",
    *,
    allow_linkable_purchase: bool = False,
) -> dict[str, Any]:
    """One private request; ``{"summary"|"suggestion", "refused", "receipt"}``.

    Tokens come from the persistent wallet (``privproc wallet refill``); with
    ``allow_linkable_purchase`` an empty wallet buys inside the request, and says so.
    """
    from privproc.client.private import PrivateProcessingClient

    async with PrivateProcessingClient.from_stack(stack, checkpoints=_checkpoints(stack)) as client:
        client.wallet.allow_linkable_purchase = allow_linkable_purchase
        try:
            return await _private_request(client, task, argument, style)
        finally:
            if client.wallet.linkable_purchases:
                print(
                    "privproc: --allow-linkable-purchase: tokens were bought inside this request; "
                    "the issuer can link your account to it",
                    file=sys.stderr,
                )


async def _private_request(client: Any, task: str, argument: Any, style: str) -> dict[str, Any]:
    if task == "summary":
        response, receipt = await client.summarize(argument)
    else:
        response, receipt = await client.suggest_rewrite(argument, style)
    refused = response.refusal_reason or None
    return {task: None if refused else response.text, "refused": refused, "receipt": receipt.to_json()}


def _print_private(result: dict[str, Any], task: str) -> None:
    receipt = result["receipt"]
    if result["refused"]:
        print(f"  refused by the predictor's policy: {result['refused']}")
    else:
        print(f"  {task}:")
        for line in str(result[task]).splitlines() or [""]:
            print(f"    {line}")
    checkpoint = receipt["checkpoint"]
    tcb = receipt["tcb"]
    print("  the client verified, before anything of the request left the device:")
    token = f"0x{receipt['token_type']:04x}"
    print(f"    - Privacy Pass token type {token}; OHTTP key id {receipt['ohttp_key_id']},")
    print(f"      logged at entry {receipt['ohttp_key_log_index']}")
    print("    - the predictor's SEV-SNP evidence: VCEK chain to the pinned root, policy (no debug),")
    levels = " ".join(f"{name} {tcb[name]}" for name in ("bootloader", "tee", "snp", "microcode"))
    print(f"      TCB {levels}")
    print("    - REPORT_DATA binds this session's nonce and the TLS certificate's key")
    print(f"      (certificate sha256 {receipt['predictor_cert_sha256'][:32]}…)")
    print(f"    - measurement {receipt['measurement'][:32]}… is a logged cvm-release:")
    print(f"      entry {receipt['measurement_log_index']} of {checkpoint['origin']}, checkpoint size")
    witnesses = ", ".join(receipt["witnesses"])
    print(f"      {checkpoint['size']} root {checkpoint['root'][:16]}…, cosigned by {witnesses}")
    print(f"    - answered by model {receipt['model_id']} inside that CVM; the session is gone")


def _summarize_cmd(args: argparse.Namespace) -> int:
    from privproc.client.private import Chat

    try:
        document = json.loads(args.chat.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError("the chat file is not readable JSON") from None
    chat = Chat.from_json(document)
    stack = stackfile.StackFile.load(args.stack)
    result = asyncio.run(
        _private(stack, "summary", chat, allow_linkable_purchase=args.allow_linkable_purchase)
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"summary of {chat.title or 'the chat'} ({len(chat.messages)} messages), privately:")
        _print_private(result, "summary")
    return 0


def _suggest_cmd(args: argparse.Namespace) -> int:
    stack = stackfile.StackFile.load(args.stack)
    result = asyncio.run(
        _private(
            stack, "suggestion", args.text, args.style, allow_linkable_purchase=args.allow_linkable_purchase
        )
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"a {args.style} rewrite of your draft, privately:")
        _print_private(result, "suggestion")
    return 0


async def _refill_wallet(stack: stackfile.StackFile) -> tuple[int, int]:
    """Buy one batch into the stack's persistent wallet, now (ahead of any request)."""
    from privproc.client.tokens import TokenWallet
    from privproc.client.transparency import verifier_from_stack

    made = verifier_from_stack(stack, _checkpoints(stack))
    wallet = TokenWallet.from_stack(stack, transparency=made[0] if made else None, refill=None)
    try:
        bought = await wallet.refill(wait_quiet=False)
        return bought, wallet.held()
    finally:
        await wallet.close()
        if made:
            await made[1]()


def _wallet_cmd(args: argparse.Namespace) -> int:
    """``privproc wallet refill|show``: the persistent token wallet (never prints a token)."""
    from privproc.client.tokens import TokenWallet

    stack = stackfile.StackFile.load(args.stack)
    if args.action == "refill":
        bought, count = asyncio.run(_refill_wallet(stack))
        print(f"bought {bought} tokens; {count} held. Run this ahead of need, at varying times:")
        print("the issuer sees your account when you buy, so buying right before a request links the two.")
        return 0

    async def show() -> tuple[int, Any]:
        wallet = TokenWallet.from_stack(stack, refill=None)
        try:
            return wallet.held(), wallet.path
        finally:
            await wallet.close()

    count, path = asyncio.run(show())
    print(f"{count} tokens held in {path or 'memory'}")
    return 0


def _prefill_demo_wallet(stack: stackfile.StackFile) -> None:
    """The demo's tokens, bought before any request, as a device's background refill would."""
    bought, held = asyncio.run(_refill_wallet(stack))
    print(f"privproc demo: token wallet filled ahead of the requests ({bought} bought, {held} held):")
    print("  the ACS sees the demo account now, never at request time")


def _health_cmd(args: argparse.Namespace) -> int:
    stack = stackfile.StackFile.load(args.stack)
    result = asyncio.run(_health(stack, args.transport))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_health(result, stack.gateway.origin)
    return 0 if result["status"] == 200 else 1


LINKABLE_HELP = (
    "if the token wallet is empty, buy tokens inside this request (the issuer can then link your "
    "account to it; otherwise run `privproc wallet refill` ahead of time)"
)

DEMO_DRAFT = "hey can u send me the report by tmrw, need it asap for the meeting"


def _start_stack(state_dir: Path, model_cache: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    path = state_dir / stackfile.FILE_NAME
    path.unlink(missing_ok=True)
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "privproc",
            "up",
            "--state-dir",
            str(state_dir),
            "--model-cache",
            str(model_cache),
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        # The services' event lines are for operators; the demo shows warnings only.
        env={**os.environ, "PRIVPROC_LOG_LEVEL": os.environ.get("PRIVPROC_LOG_LEVEL", "warning")},
    )
    # A first start converts the model once (~15 s on 2 cores); later starts take seconds.
    deadline = time.monotonic() + 400
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_process(process)
            raise ConfigError("the stack did not start")
        time.sleep(0.2)
    return process, path


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _demo(args: argparse.Namespace) -> int:
    """Start the stack, run private requests with their receipts, show the fail-closed case, stop."""
    from privproc.client.private import Chat

    state_dir: Path = args.state_dir
    model_cache = args.model_cache or state_dir / "models"
    spec = _model_spec(args)
    chat = Chat.from_json(json.loads(EXAMPLE_CHAT.read_text(encoding="utf-8")))
    print("privproc demo: starting the stack on loopback: cdn, witness, ledger, verifier,", flush=True)
    print(f"  a predictor in a simulated SEV-SNP CVM ({spec.language_model} + {spec.embedder}),")
    print("  acs, gateway, relay ... (a first start converts the model once)", flush=True)
    process, path = _start_stack(state_dir, model_cache, *spec.arguments())
    try:
        _prefill_demo_wallet(stackfile.StackFile.load(path))
        code = _demo_requests(stackfile.StackFile.load(path), chat)
    finally:
        _stop_process(process)
    print()
    print("privproc demo: fail closed — the same stack with the predictor's release NOT logged")
    print("  (privproc up --skip-publish: the operator's verifier admits the CVM, the log does not) ...")
    process, path = _start_stack(state_dir / "unpublished", model_cache, *spec.arguments(), "--skip-publish")
    try:
        _prefill_demo_wallet(stackfile.StackFile.load(path))
        asyncio.run(_private(stackfile.StackFile.load(path), "summary", chat))
    except PrivprocError as err:
        print(f"  refused by the client, before the request left the device: {public_message(err)}")
        print(f"  ({type(err).__name__}: the measurement has no cvm-release entry in the log)")
    else:
        print("  the client sent the request: THIS IS A BUG", file=sys.stderr)
        code |= 1
    finally:
        _stop_process(process)
    print()
    print("privproc demo: done; the stacks are stopped.", flush=True)
    return code


def _demo_requests(stack: stackfile.StackFile, chat: Any) -> int:
    """A health check, a summary and a rewrite, each printed with what the client verified."""
    print()
    result = asyncio.run(_health(stack, "http"))
    _print_health(result, stack.gateway.origin)
    code = 0 if result["status"] == 200 else 1
    print()
    print(f"summarize the unread messages of '{chat.title}' ({len(chat.messages)} messages), privately:")
    summary = asyncio.run(_private(stack, "summary", chat))
    _print_private(summary, "summary")
    code |= 0 if summary["summary"] else 1
    print()
    print(f'suggest a polite rewrite of the draft "{DEMO_DRAFT}", privately:')
    suggestion = asyncio.run(_private(stack, "suggestion", DEMO_DRAFT, "polite"))
    _print_private(suggestion, "suggestion")
    return code | (0 if suggestion["suggestion"] else 1)


def _account_cmd(args: argparse.Namespace) -> int:
    """Create, re-enable or disable an ACS account in its database; prints the credential."""
    from privproc.acs.accounts import AccountStore
    from privproc.acs.store import Database

    db = Database(args.state_dir / "acs.sqlite3")
    try:
        accounts = AccountStore(db)
        if args.action == "disable":
            accounts.disable(args.account)
            print(f"account {args.account} disabled")
        else:
            try:
                print(accounts.create(args.account))
            except ValueError as err:
                raise ConfigError("account ids are short lowercase identifiers") from err
    finally:
        db.close()
    return 0


def _http_limits(args: argparse.Namespace, config: Any) -> Any:
    """The service's default HTTP limits (its config class's), with the ``--http-*`` flags given."""
    import dataclasses

    spec = next(f for f in dataclasses.fields(config) if f.name == "http_limits")
    default = spec.default_factory()  # type: ignore[operator]
    given = {
        "head_timeout_seconds": args.http_head_timeout,
        "body_timeout_seconds": args.http_body_timeout,
        "idle_timeout_seconds": args.http_idle_timeout,
        "max_connections": args.http_max_connections,
        "max_connections_per_address": args.http_max_connections_per_address,
    }
    try:
        return dataclasses.replace(default, **{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        raise SystemExit(f"privproc serve: {err}") from None


def _publisher_arg(text: str) -> Any:
    from privproc.cdn.server import parse_publisher

    try:
        return parse_publisher(text)
    except ValueError as err:
        raise SystemExit(f"privproc serve cdn: --publisher: {err}") from None


def _ledger_publisher(spec: str) -> str:
    """The publisher name of a ledger ``--publisher KIND[,KIND]:VKEY`` (refused unless scoped)."""
    from privproc.errors import ConfigError
    from privproc.ledger.server import parse_publisher

    try:
        return parse_publisher(spec)[0]
    except ConfigError as err:
        raise SystemExit(f"privproc serve ledger: --publisher: {err}") from None


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "name", choices=["cdn", "witness", "ledger", "verifier", "acs", "gateway", "relay", "predictor"]
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--grpc-port", type=int, default=0)
    serve.add_argument("--http-port", type=int, default=0)
    serve.add_argument(
        "--publisher",
        action="append",
        default=[],
        metavar="SPEC",
        help="cdn: NAME:SCOPE:CREDENTIAL_FILE, a publisher and its credential file; SCOPE is "
        "gateway|acs|release|ledger or patterns joined by '+' (ohttp_keys, issuer_directory, checkpoint, "
        "proofs/PREFIX*). ledger: KIND[,KIND]:VKEY, a publisher's verifier key and the entry kinds it "
        "may append (ohttp-key-config, token-issuer-key, cvm-release, cvm-revocation). Repeated",
    )
    limits = "relay/gateway/acs/cdn: HTTP front, "
    serve.add_argument("--http-head-timeout", type=float, help=limits + "seconds to receive a request head")
    serve.add_argument("--http-body-timeout", type=float, help=limits + "seconds to receive a request body")
    serve.add_argument("--http-idle-timeout", type=float, help=limits + "seconds before closing an idle one")
    serve.add_argument("--http-max-connections", type=int, help=limits + "connections open at once")
    serve.add_argument(
        "--http-max-connections-per-address", type=int, help=limits + "connections per address (IPv6: /64)"
    )
    serve.add_argument("--cdn", help="gateway: gRPC address of the key CDN")
    serve.add_argument("--cdn-credential-file", type=Path, help="gateway: CDN publisher credential")
    serve.add_argument("--origin", default="privproc.local", help="gateway: its inner origin")
    serve.add_argument("--rotation-seconds", type=float, default=3600.0)
    serve.add_argument("--grace-seconds", type=float, default=600.0)
    serve.add_argument("--acs", help="gateway: gRPC address of the ACS (token redemption)")
    serve.add_argument(
        "--issuer-name", default="issuer.privproc.local", help="acs/gateway: token issuer name"
    )
    serve.add_argument("--redis-url", help="gateway: Redis URL of the shared spent-token set")
    serve.add_argument("--state-dir", type=Path, help="acs/ledger/witness/gateway: directory of its database")
    serve.add_argument("--demo-account", help="acs: create this account at start (local stack)")
    serve.add_argument(
        "--epoch-seconds",
        type=float,
        default=86400.0,
        help="acs/gateway: issuer key epoch (a key redeems for two; give the gateway the ACS's value)",
    )
    serve.add_argument(
        "--tokens-per-window", type=int, default=1000, help="acs: tokens per account per window"
    )
    serve.add_argument("--window-seconds", type=float, default=86400.0, help="acs: rate-limit window")
    serve.add_argument("--signer-key-file", type=Path, help="ledger/witness: its signed-note private key")
    serve.add_argument("--witness", action="append", help="ledger: URL,VKEY of a witness (repeat)")
    serve.add_argument("--log", action="append", help="witness: a log's verifier key (repeat)")
    serve.add_argument(
        "--ledger", help="acs/gateway/predictor: gRPC address of the ledger (keys logged; release staple)"
    )
    serve.add_argument(
        "--release-proofs-url", help="predictor: the key CDN's proofs URL (…/proofs/), for its release staple"
    )
    serve.add_argument("--ledger-key-file", type=Path, help="acs/gateway: its ledger publisher key")
    serve.add_argument("--ledger-tiles-url", help="verifier: the ledger's tiles URL")
    serve.add_argument("--log-vkey", help="verifier: the ledger's verifier key")
    serve.add_argument("--witness-vkey", action="append", help="verifier: a witness's verifier key (repeat)")
    serve.add_argument("--min-cosignatures", type=int, default=1, help="verifier: witness quorum")
    serve.add_argument("--development-root", help="verifier: trust this simulator ARK fingerprint (hex)")
    serve.add_argument(
        "--release-key",
        action="append",
        help="verifier: a release key (VKEY) whose releases it admits (repeat)",
    )
    serve.add_argument(
        "--admit-unlogged",
        action="append",
        help="verifier: admit this measurement (hex) for routing, unlogged; clients still refuse it",
    )
    serve.add_argument("--verifier", help="predictor: gRPC address of the verifier")
    serve.add_argument("--verifier-ca-file", type=Path, help="predictor/gateway: the verifier's CA (PEM)")
    serve.add_argument("--simulator-dir", type=Path, help="predictor: the simulated TEE's development root")
    _model_arguments(serve)
    serve.add_argument("--predictor", action="append", help="gateway: gRPC address of a predictor (repeat)")
    serve.add_argument(
        "--mtls-cert-file", type=Path, help="gateway: its service certificate (PEM; a renewed one is taken)"
    )
    serve.add_argument("--mtls-key-file", type=Path, help="gateway: its service key (PEM)")
    serve.add_argument("--gateway", help="relay: gRPC address of the gateway")
    serve.add_argument("--gateway-url", help="relay: HTTP URL of a standard OHTTP gateway")
    serve.add_argument("--rate", type=float, default=20.0, help="relay: requests/s per client")
    serve.add_argument("--burst", type=int, default=40, help="relay: burst per client")


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """The predictor's models (measured: the same flags must go to ``serve`` and to release tools)."""
    parser.add_argument(
        "--model", default="smollm2", help="predictor: smollm2, tiny-random, or a model directory / .gguf"
    )
    parser.add_argument("--embedder", default="minilm", help="predictor: minilm, none, or a directory")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--model-cache", type=Path, help="predictor: where a GGUF model's conversion is kept (STATE/models)"
    )
    parser.add_argument("--summary-strategy", choices=["auto", "extractive", "generative"], default="auto")


def _attest_cmd(args: argparse.Namespace) -> int:
    """``attest show`` prints a report's fields; ``attest verify`` checks signature, chain and policy."""
    from privproc.attestation import abi, kds
    from privproc.attestation.appraisal import SnpPolicy, appraise
    from privproc.attestation.evidence import Evidence, EvidenceType

    raw = args.report.read_bytes()
    if len(raw) != abi.REPORT_SIZE:  # hex, possibly with whitespace
        try:
            raw = bytes.fromhex("".join(raw.decode("ascii").split()))
        except (UnicodeDecodeError, ValueError):
            raise ConfigError("the report is neither 1184 bytes nor hex") from None
    report = abi.AttestationReport.parse(raw)
    if args.action == "show":
        fields = _report_fields(report)
        print(
            json.dumps(fields, indent=2)
            if args.json
            else "\n".join(f"{k:20s} {v}" for k, v in fields.items())
        )
        return 0
    if args.vcek is None or args.chain is None:
        raise SystemExit("privproc attest verify: --vcek and --chain (ASK then ARK, PEM) are required")
    ask, ark = kds.split_pem_chain(args.chain.read_bytes())
    vcek = args.vcek.read_bytes()
    if vcek.startswith(b"-----BEGIN"):
        vcek = kds.split_pem_chain(vcek)[0]
    evidence = Evidence(EvidenceType.SEV_SNP, raw, (vcek, ask, ark))
    appraisal = appraise(evidence, SnpPolicy(allow_debug=args.allow_debug), report_data=None)
    result = {
        "verified": appraisal.verified,
        "reasons": [str(r) for r in appraisal.reasons],
        "product": appraisal.claims.product if appraisal.claims else None,
        "measurement": report.measurement.hex(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("verified" if appraisal.verified else "REJECTED: " + ", ".join(result["reasons"]))  # type: ignore[arg-type]
        print(f"product      {result['product']}")
        print(f"measurement  {result['measurement']}")
    return 0 if appraisal.verified else 1


def _report_fields(report: Any) -> dict[str, Any]:
    return {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "policy": hex(report.policy.raw),
        "debug_allowed": report.policy.debug,
        "migration_agent": report.policy.migrate_ma,
        "vmpl": report.vmpl,
        "signature_algo": report.signature_algo,
        "current_tcb": hex(report.current_tcb),
        "reported_tcb": hex(report.reported_tcb),
        "committed_tcb": hex(report.committed_tcb),
        "launch_tcb": hex(report.launch_tcb),
        "platform_info": hex(report.platform_info.raw),
        "report_data": report.report_data.hex(),
        "measurement": report.measurement.hex(),
        "host_data": report.host_data.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "chip_id": report.chip_id.hex(),
        "firmware": f"{report.current_major}.{report.current_minor} build {report.current_build}",
    }


def _image_cmd(args: argparse.Namespace) -> int:
    from privproc.attestation.measure import measure_image

    spec = _model_spec(args)
    manifest = measure_image(model_digest=spec.digest(), config=spec.config())
    result = {
        "measurement": manifest.measurement.hex(),
        "host_data": manifest.host_data.hex(),
        "image_digest": manifest.image_digest,
        "model_digest": manifest.model_digest,
        "files": len(manifest.files),
    }
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for name, value in result.items():
            print(f"{name:13s} {value}")
    return 0


def _ledger_cmd(args: argparse.Namespace) -> int:
    from privproc.ledger import tool

    if args.action == "publish":
        if args.key_file is None:
            raise SystemExit("privproc ledger publish: --key-file is required")
        signer_key = args.key_file.read_text().strip()
        if args.kind == "cvm-release":
            from privproc.attestation.measure import measure_image

            if args.min_tcb is None:
                raise SystemExit("privproc ledger publish cvm-release: --min-tcb is required")
            spec = _model_spec(args)
            manifest = measure_image(model_digest=spec.digest(), config=spec.config())
            entry_json = tool.release_json(
                manifest,
                signer_key,
                version=args.version,
                min_tcb=args.min_tcb,
                host_data=args.host_data,
                not_after=args.not_after,
                valid_days=args.valid_days,
                rollout_hours=args.rollout_hours,
            )
        elif args.kind == "cvm-revocation":
            entry_json = tool.revocation_json(
                signer_key, release_index=args.index, measurement=args.measurement, reason=args.reason
            )
        elif args.entry is not None:
            entry_json = args.entry.read_text()
        else:
            raise SystemExit("privproc ledger publish: give cvm-release, cvm-revocation or --entry FILE")
        tool.emit(asyncio.run(tool.publish(args.stack, entry_json, signer_key)))
    elif args.action == "checkpoint":
        tool.emit(asyncio.run(tool.checkpoint(args.stack)))
    elif args.action == "prove":
        if args.index is None:
            raise SystemExit("privproc ledger prove: --index is required")
        tool.emit(asyncio.run(tool.prove(args.stack, args.index)))
    elif args.action == "verify":
        if args.proof is None:
            raise SystemExit("privproc ledger verify: --proof is required")
        proof = sys.stdin.buffer.read() if str(args.proof) == "-" else args.proof.read_bytes()
        tool.emit(asyncio.run(tool.verify(args.stack, proof)))
    else:
        state = args.state or args.stack.parent / "monitor" / "checkpoints.json"
        tool.emit(asyncio.run(tool.monitor(args.stack, state, max_grace_seconds=args.key_grace_seconds)))
    return 0


def _tool_parsers(sub: Any) -> None:
    """The operator's tools: ledger, attest, image."""
    ledger = sub.add_parser("ledger", help="publish to, read, prove, verify and monitor the transparency log")
    ledger.add_argument("action", choices=["publish", "checkpoint", "prove", "verify", "monitor"])
    ledger.add_argument(
        "kind",
        nargs="?",
        choices=["cvm-release", "cvm-revocation"],
        help="publish: build and sign the entry with the release key (--key-file)",
    )
    _model_arguments(ledger)
    ledger.add_argument("--version", default="0.1.0", help="publish cvm-release: version, dotted numbers")
    ledger.add_argument(
        "--min-tcb",
        help="publish cvm-release: minimum VCEK TCB, bootloader=B,tee=T,snp=S,microcode=M[,fmc=F]",
    )
    ledger.add_argument("--host-data", help="publish cvm-release: HOST_DATA (hex; default: config digest)")
    ledger.add_argument("--not-after", type=int, help="publish cvm-release: expiry (POSIX seconds)")
    ledger.add_argument("--valid-days", type=float, default=30.0, help="publish cvm-release: or days valid")
    ledger.add_argument(
        "--rollout-hours",
        type=float,
        default=0.0,
        help="publish cvm-release: lower versions stay admitted this long (default: superseded at once)",
    )
    ledger.add_argument("--measurement", help="publish cvm-revocation: revoke every release of it (hex)")
    ledger.add_argument("--reason", default="withdrawn", help="publish cvm-revocation: a short code")
    ledger.add_argument(
        "--key-grace-seconds",
        type=int,
        default=600,
        help="monitor: a key configuration may overlap its successor this long (rotation grace)",
    )
    ledger.add_argument("--stack", type=Path, default=stackfile.DEFAULT_STATE_DIR / stackfile.FILE_NAME)
    ledger.add_argument("--entry", type=Path, help="publish: the entry as a JSON file")
    ledger.add_argument("--key-file", type=Path, help="publish: the publisher's private key file")
    ledger.add_argument("--index", type=int, help="prove: the entry's index; cvm-revocation: the release's")
    ledger.add_argument("--proof", type=Path, help="verify: a .tlog-proof file, or - for stdin")
    ledger.add_argument("--state", type=Path, help="monitor: where the last verified checkpoint is kept")
    ledger.set_defaults(func=_ledger_cmd)

    attest = sub.add_parser("attest", help="show or verify a SEV-SNP attestation report")
    attest.add_argument("action", choices=["show", "verify"])
    attest.add_argument("report", type=Path, help="the report, binary (1184 bytes) or hex")
    attest.add_argument("--vcek", type=Path, help="verify: the VCEK (or VLEK) certificate, DER or PEM")
    attest.add_argument("--chain", type=Path, help="verify: ASK then ARK, PEM (AMD KDS cert_chain)")
    attest.add_argument("--allow-debug", action="store_true", help="verify: accept a debug-enabled guest")
    attest.add_argument("--json", action="store_true")
    attest.set_defaults(func=_attest_cmd)

    image = sub.add_parser("image", help="the predictor image's measurement")
    image.add_argument("action", choices=["measure"])
    _model_arguments(image)
    image.add_argument("--json", action="store_true")
    image.set_defaults(func=_image_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privproc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole stack locally")
    up.add_argument("--state-dir", type=Path, default=stackfile.DEFAULT_STATE_DIR)
    up.add_argument("--rotation-seconds", type=float, default=3600.0, help="OHTTP key rotation period")
    up.add_argument("--redis-url", help="share the gateway's spent-token set through Redis")
    up.add_argument(
        "--skip-publish",
        action="store_true",
        help="do not log the predictor's release (every private request must then fail closed)",
    )
    _model_arguments(up)
    up.set_defaults(func=_up)

    serve = sub.add_parser("serve", help="run one service")
    _serve_arguments(serve)
    serve.set_defaults(func=_serve)

    health = sub.add_parser("health", help="private request to the gateway's health resource")
    health.add_argument("--stack", type=Path, default=stackfile.DEFAULT_STATE_DIR / stackfile.FILE_NAME)
    health.add_argument("--transport", choices=["http", "grpc"], default="http")
    health.add_argument("--json", action="store_true")
    health.set_defaults(func=_health_cmd)

    account = sub.add_parser("account", help="manage ACS accounts (prints a new credential)")
    account.add_argument("action", choices=["create", "disable"])
    account.add_argument("account", help="account id (lowercase identifier)")
    account.add_argument("--state-dir", type=Path, default=stackfile.DEFAULT_STATE_DIR / "acs")
    account.set_defaults(func=_account_cmd)

    default_stack = stackfile.DEFAULT_STATE_DIR / stackfile.FILE_NAME
    summarize = sub.add_parser("summarize", help="summarise a chat privately (CHAT.json)")
    summarize.add_argument("chat", type=Path, help='{"chat": {...}, "messages": [{"sender","time","text"}]}')
    summarize.add_argument("--stack", type=Path, default=default_stack)
    summarize.add_argument("--json", action="store_true")
    summarize.add_argument("--allow-linkable-purchase", action="store_true", help=LINKABLE_HELP)
    summarize.set_defaults(func=_summarize_cmd)

    suggest = sub.add_parser("suggest", help="suggest a rewrite of a draft privately")
    suggest.add_argument("text", help="the draft")
    suggest.add_argument("--style", choices=["polite", "concise", "friendly", "formal"], default="polite")
    suggest.add_argument("--stack", type=Path, default=default_stack)
    suggest.add_argument("--json", action="store_true")
    suggest.add_argument("--allow-linkable-purchase", action="store_true", help=LINKABLE_HELP)
    suggest.set_defaults(func=_suggest_cmd)

    wallet = sub.add_parser(
        "wallet", help="the persistent Privacy Pass token wallet: refill ahead of need, show"
    )
    wallet.add_argument("action", choices=["refill", "show"])
    wallet.add_argument("--stack", type=Path, default=default_stack)
    wallet.set_defaults(func=_wallet_cmd)

    _tool_parsers(sub)

    demo = sub.add_parser(
        "demo", help="start the stack, summarise and rewrite privately, show the fail-closed case, stop"
    )
    demo.add_argument("--state-dir", type=Path, default=stackfile.DEFAULT_STATE_DIR)
    _model_arguments(demo)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    # Services write one event per line; libraries' progress bars (tqdm reads this when it is
    # first imported, e.g. by transformers converting a GGUF model) would break that.
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        _check_serve_args(args)
    try:
        code = args.func(args)
    except PrivprocError as err:
        print(f"privproc: {public_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(code or 0)


def _check_serve_args(args: argparse.Namespace) -> None:
    if args.name == "cdn" and not args.publisher:
        raise SystemExit("privproc serve cdn: --publisher NAME:SCOPE:CREDENTIAL_FILE is required")
    if args.name in ("acs", "ledger", "witness", "verifier", "predictor") and args.state_dir is None:
        raise SystemExit(f"privproc serve {args.name}: --state-dir is required")
    if args.name in ("ledger", "witness") and args.signer_key_file is None:
        raise SystemExit(f"privproc serve {args.name}: --signer-key-file is required")
    if args.name == "relay" and (args.gateway is None) == (args.gateway_url is None):
        raise SystemExit("privproc serve relay: give exactly one of --gateway or --gateway-url")
