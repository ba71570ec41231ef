"""The ``privproc`` command line.

``privproc up``            start the whole stack locally (see :mod:`privproc.stack`)
``privproc serve NAME``    run one service in the foreground (what ``up`` spawns)
``privproc health``        a private request to the gateway's health resource
``privproc session``       a token-gated private request (``/v1/sessions``)
``privproc account``       create or disable an ACS account
``privproc ledger``        publish | checkpoint | prove | verify | monitor the transparency log
``privproc image measure`` the simulated CVM's measurement of the predictor image
``privproc attest``        show | verify a SEV-SNP report (exit 0 verified, 1 rejected)
``privproc demo``          ``up``, one private request over each transport, stop
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

    async def serve() -> None:
        # Built inside the running loop: gRPC aio servers bind to it.
        await lifecycle.run(_build_service(args))

    asyncio.run(serve())


def _build_service(args: argparse.Namespace) -> Any:
    service: Any
    if args.name == "cdn":
        from privproc.cdn.server import CdnConfig, CdnService

        service = CdnService(
            CdnConfig(
                credential_file=args.credential_file,
                host=args.host,
                grpc_port=args.grpc_port,
                http_port=args.http_port,
            )
        )
    elif args.name == "gateway":
        from privproc.gateway.server import GatewayConfig, GatewayService

        service = GatewayService(
            GatewayConfig(
                host=args.host,
                grpc_port=args.grpc_port,
                http_port=args.http_port,
                origin=args.origin,
                rotation_seconds=args.rotation_seconds,
                grace_seconds=args.grace_seconds,
                cdn_target=args.cdn,
                cdn_credential_file=args.cdn_credential_file,
                acs_target=args.acs,
                issuer_name=args.issuer_name,
                redis_url=args.redis_url,
                ledger_target=args.ledger,
                ledger_publisher_key=_read_key(args.ledger_key_file),
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
                publishers={_vkey_name(v): v for v in args.publisher or []},
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
        from privproc.client.transparency import LogPolicy

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
            )
        )
    return service


def _vkey_name(vkey: str) -> str:
    from privproc.wire import note

    return note.parse_verifier_key(vkey).name


def _read_key(path: Path | None) -> str | None:
    return path.read_text().strip() if path is not None else None


def _up(args: argparse.Namespace) -> int:
    from privproc.stack import up

    events.configure_logging("stack")
    return asyncio.run(up(args.state_dir, rotation_seconds=args.rotation_seconds, redis_url=args.redis_url))


def _checkpoints(stack: stackfile.StackFile) -> Any:
    """The client's checkpoint store: beside stack.json, so each stack keeps its own history."""
    from privproc.client.transparency import CheckpointStore

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
    _print_logged(receipt, "key configuration")
    print("    - the answer authenticated under a key only this request could derive (RFC 9458 §4.4)")
    print(f"    - the inner answer parsed as Binary HTTP (RFC 9292), status {receipt['inner_status']}")


async def _session(stack: stackfile.StackFile) -> dict[str, Any]:
    """A token-gated ``POST /v1/sessions``: buys tokens, answers the challenge, spends one."""
    from privproc.client import OhttpClient, TokenWallet

    async with OhttpClient.from_stack(stack, checkpoints=_checkpoints(stack)) as client:
        wallet = TokenWallet.from_stack(stack, transparency=client.transparency)
        try:
            response, receipt = await client.session_request(wallet)
        finally:
            await wallet.close()
    return {
        "status": response.status,
        "body": json.loads(response.content) if response.content else None,
        "receipt": receipt.to_json(),
    }


def _print_session(result: dict[str, Any], stack: stackfile.StackFile) -> None:
    receipt = result["receipt"]
    print(
        f"POST https://{stack.gateway.origin}/v1/sessions  with a Privacy Pass token  ->  {result['status']}"
    )
    print(f"  answer: {json.dumps(result['body'], sort_keys=True)}")
    print("  the client verified:")
    print("    - the gateway's 401 challenge names the expected issuer and origin")
    print("    - its token key is one the issuer publishes through the key CDN")
    print(f"      ({stack.cdn.issuer_directory_url})")
    _print_logged(receipt, "token key")
    token_type = receipt["token_type"]
    print(
        f"    - tokens of type 0x{token_type:04x} were issued blind: the ACS saw the account, never the token"
    )
    print("    - one token was spent; the gateway checked it, and will refuse it if it comes again")
    if result["status"] == 503:
        print("    (503: the token was accepted; predictors arrive with a later release)")


def _session_cmd(args: argparse.Namespace) -> int:
    stack = stackfile.StackFile.load(args.stack)
    result = asyncio.run(_session(stack))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_session(result, stack)
    return 0 if result["status"] in (200, 503) else 1


def _print_logged(receipt: dict[str, Any], what: str) -> None:
    checkpoint = receipt.get("checkpoint")
    index = (
        receipt.get("ohttp_key_log_index")
        if what == "key configuration"
        else receipt.get("token_key_log_index")
    )
    if checkpoint is None or index is None:
        print(f"    - (no transparency log configured: the {what} was not checked against a log)")
        return
    witnesses = ", ".join(receipt["witnesses"]) or "none"
    if what != "key configuration":
        print(
            f"    - the {what} is logged: entry {index} of {checkpoint['origin']}, inclusion proof against a"
        )
        print("      signed, witness-cosigned checkpoint consistent with every one this client saw before")
        return
    print(f"    - the {what} is logged: entry {index} of {checkpoint['origin']}, inclusion proof against")
    print(f"      checkpoint size {checkpoint['size']} root {checkpoint['root'][:16]}…, signed by the log,")
    print(f"      cosigned by {witnesses}, consistent with every checkpoint this client saw before")


def _health_cmd(args: argparse.Namespace) -> int:
    stack = stackfile.StackFile.load(args.stack)
    result = asyncio.run(_health(stack, args.transport))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_health(result, stack.gateway.origin)
    return 0 if result["status"] == 200 else 1


def _demo(args: argparse.Namespace) -> int:
    """Start the stack in a child process, run private requests, stop it."""
    state_dir: Path = args.state_dir
    path = state_dir / stackfile.FILE_NAME
    path.unlink(missing_ok=True)
    print("privproc demo: starting the stack (cdn, gateway, relay) on loopback ...", flush=True)
    stack_process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "privproc", "up", "--state-dir", str(state_dir)],
        stdin=subprocess.DEVNULL,
        # The services' event lines are for operators; the demo shows warnings only.
        env={**os.environ, "PRIVPROC_LOG_LEVEL": os.environ.get("PRIVPROC_LOG_LEVEL", "warning")},
    )
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            if stack_process.poll() is not None or time.monotonic() > deadline:
                print("privproc demo: the stack did not start", file=sys.stderr)
                return 1
            time.sleep(0.1)
        stack = stackfile.StackFile.load(path)
        code = 0
        for transport in ("http", "grpc"):
            print()
            result = asyncio.run(_health(stack, transport))
            _print_health(result, stack.gateway.origin)
            code |= 0 if result["status"] == 200 else 1
        print()
        session = asyncio.run(_session(stack))
        _print_session(session, stack)
        code |= 0 if session["status"] == 503 and session["receipt"]["token_type"] else 1
        print()
        print("privproc demo: done; stopping the stack.", flush=True)
        return code
    finally:
        stack_process.terminate()
        try:
            stack_process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stack_process.kill()


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


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("name", choices=["cdn", "witness", "ledger", "verifier", "acs", "gateway", "relay"])
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--grpc-port", type=int, default=0)
    serve.add_argument("--http-port", type=int, default=0)
    serve.add_argument("--credential-file", type=Path, help="cdn: publisher credential")
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
    serve.add_argument("--state-dir", type=Path, help="acs/ledger/witness: directory of its database")
    serve.add_argument("--demo-account", help="acs: create this account at start (local stack)")
    serve.add_argument("--epoch-seconds", type=float, default=86400.0, help="acs: issuer key epoch")
    serve.add_argument(
        "--tokens-per-window", type=int, default=1000, help="acs: tokens per account per window"
    )
    serve.add_argument("--window-seconds", type=float, default=86400.0, help="acs: rate-limit window")
    serve.add_argument("--signer-key-file", type=Path, help="ledger/witness: its signed-note private key")
    serve.add_argument("--publisher", action="append", help="ledger: a publisher's verifier key (repeat)")
    serve.add_argument("--witness", action="append", help="ledger: URL,VKEY of a witness (repeat)")
    serve.add_argument("--log", action="append", help="witness: a log's verifier key (repeat)")
    serve.add_argument("--ledger", help="acs/gateway: gRPC address of the ledger (keys are logged)")
    serve.add_argument("--ledger-key-file", type=Path, help="acs/gateway: its ledger publisher key")
    serve.add_argument("--ledger-tiles-url", help="verifier: the ledger's tiles URL")
    serve.add_argument("--log-vkey", help="verifier: the ledger's verifier key")
    serve.add_argument("--witness-vkey", action="append", help="verifier: a witness's verifier key (repeat)")
    serve.add_argument("--min-cosignatures", type=int, default=1, help="verifier: witness quorum")
    serve.add_argument("--development-root", help="verifier: trust this simulator ARK fingerprint (hex)")
    serve.add_argument("--gateway", help="relay: gRPC address of the gateway")
    serve.add_argument("--gateway-url", help="relay: HTTP URL of a standard OHTTP gateway")
    serve.add_argument("--rate", type=float, default=20.0, help="relay: requests/s per client")
    serve.add_argument("--burst", type=int, default=40, help="relay: burst per client")


def _attest_cmd(args: argparse.Namespace) -> int:
    """``attest show`` prints a report's fields; ``attest verify`` checks signature, chain and policy."""
    from privproc.attestation import sevsnp
    from privproc.attestation.appraisal import SnpPolicy, appraise
    from privproc.attestation.evidence import Evidence, EvidenceType

    raw = args.report.read_bytes()
    if len(raw) != sevsnp.REPORT_SIZE:  # hex, possibly with whitespace
        try:
            raw = bytes.fromhex("".join(raw.decode("ascii").split()))
        except (UnicodeDecodeError, ValueError):
            raise ConfigError("the report is neither 1184 bytes nor hex") from None
    report = sevsnp.AttestationReport.parse(raw)
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
    ask, ark = sevsnp.split_pem_chain(args.chain.read_bytes())
    vcek = args.vcek.read_bytes()
    if vcek.startswith(b"-----BEGIN"):
        vcek = sevsnp.split_pem_chain(vcek)[0]
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

    manifest = measure_image(model=args.model, config=_json_file(args.config))
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


def _json_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    value = json.loads(path.read_text())
    if not isinstance(value, dict):
        raise ConfigError("the configuration file must hold a JSON object")
    return value


def _ledger_cmd(args: argparse.Namespace) -> int:
    from privproc.ledger import tool

    if args.action == "publish":
        if args.key_file is None:
            raise SystemExit("privproc ledger publish: --key-file is required")
        signer_key = args.key_file.read_text().strip()
        if args.kind == "cvm-release":
            from privproc.attestation.measure import measure_image, release_entry

            manifest = measure_image(model=args.model, config=_json_file(args.config))
            entry_json = release_entry(manifest, version=args.version).decode()
        elif args.entry is not None:
            entry_json = args.entry.read_text()
        else:
            raise SystemExit("privproc ledger publish: give cvm-release or --entry FILE")
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
        tool.emit(asyncio.run(tool.monitor(args.stack, state)))
    return 0


def _tool_parsers(sub: Any) -> None:
    """The operator's tools: ledger, attest, image."""
    ledger = sub.add_parser("ledger", help="publish to, read, prove, verify and monitor the transparency log")
    ledger.add_argument("action", choices=["publish", "checkpoint", "prove", "verify", "monitor"])
    ledger.add_argument(
        "kind", nargs="?", choices=["cvm-release"], help="publish: build the entry (cvm-release)"
    )
    ledger.add_argument("--model", type=Path, help="publish cvm-release: the model weights file")
    ledger.add_argument("--config", type=Path, help="publish cvm-release: the predictor configuration (JSON)")
    ledger.add_argument("--version", default="0.1.0", help="publish cvm-release: the release version")
    ledger.add_argument("--stack", type=Path, default=stackfile.DEFAULT_STATE_DIR / stackfile.FILE_NAME)
    ledger.add_argument("--entry", type=Path, help="publish: the entry as a JSON file")
    ledger.add_argument("--key-file", type=Path, help="publish: the publisher's private key file")
    ledger.add_argument("--index", type=int, help="prove: the entry's index")
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
    image.add_argument("--model", type=Path, help="the model weights file")
    image.add_argument("--config", type=Path, help="the predictor configuration (JSON)")
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
    up.set_defaults(func=_up)

    serve = sub.add_parser("serve", help="run one service")
    _serve_arguments(serve)
    serve.set_defaults(func=_serve)

    health = sub.add_parser("health", help="private request to the gateway's health resource")
    health.add_argument("--stack", type=Path, default=stackfile.DEFAULT_STATE_DIR / stackfile.FILE_NAME)
    health.add_argument("--transport", choices=["http", "grpc"], default="http")
    health.add_argument("--json", action="store_true")
    health.set_defaults(func=_health_cmd)

    session = sub.add_parser("session", help="a token-gated private request to /v1/sessions")
    session.add_argument("--stack", type=Path, default=stackfile.DEFAULT_STATE_DIR / stackfile.FILE_NAME)
    session.add_argument("--json", action="store_true")
    session.set_defaults(func=_session_cmd)

    account = sub.add_parser("account", help="manage ACS accounts (prints a new credential)")
    account.add_argument("action", choices=["create", "disable"])
    account.add_argument("account", help="account id (lowercase identifier)")
    account.add_argument("--state-dir", type=Path, default=stackfile.DEFAULT_STATE_DIR / "acs")
    account.set_defaults(func=_account_cmd)

    _tool_parsers(sub)

    demo = sub.add_parser("demo", help="start the stack, send private requests, stop")
    demo.add_argument("--state-dir", type=Path, default=stackfile.DEFAULT_STATE_DIR)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
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
    if args.name == "cdn" and args.credential_file is None:
        raise SystemExit("privproc serve cdn: --credential-file is required")
    if args.name in ("acs", "ledger", "witness", "verifier") and args.state_dir is None:
        raise SystemExit(f"privproc serve {args.name}: --state-dir is required")
    if args.name in ("ledger", "witness") and args.signer_key_file is None:
        raise SystemExit(f"privproc serve {args.name}: --signer-key-file is required")
    if args.name == "relay" and (args.gateway is None) == (args.gateway_url is None):
        raise SystemExit("privproc serve relay: give exactly one of --gateway or --gateway-url")
