"""``privproc ledger publish|checkpoint|prove|verify|monitor``: the transparency log."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from privproc.cli import options


def register(sub: Any) -> None:
    options.lazy_command(
        sub,
        "ledger",
        "publish to, read, prove, verify and monitor the transparency log",
        ledger_parser,
        ledger_cmd,
    )


def ledger_parser(prog: str) -> argparse.ArgumentParser:
    ledger = argparse.ArgumentParser(prog=prog, description=__doc__)
    ledger.add_argument("action", choices=["publish", "checkpoint", "prove", "verify", "monitor"])
    ledger.add_argument(
        "kind",
        nargs="?",
        choices=["cvm-release", "cvm-revocation"],
        help="publish: build and sign the entry with the release key (--key-file)",
    )
    options.add_model(ledger)
    options.add_image_digest(ledger)
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
    options.add_stack(ledger)
    ledger.add_argument("--entry", type=Path, help="publish: the entry as a JSON file")
    ledger.add_argument("--key-file", type=Path, help="publish: the publisher's private key file")
    ledger.add_argument("--index", type=int, help="prove: the entry's index; cvm-revocation: the release's")
    ledger.add_argument("--proof", type=Path, help="verify: a .tlog-proof file, or - for stdin")
    ledger.add_argument("--state", type=Path, help="monitor: where the last verified checkpoint is kept")
    return ledger


def ledger_cmd(args: argparse.Namespace) -> int:
    from privproc.ledger import tool

    if args.action == "publish":
        if args.key_file is None:
            raise SystemExit("privproc ledger publish: --key-file is required")
        signer_key = args.key_file.read_text().strip()
        if args.kind == "cvm-release":
            from privproc.predictor.loading import measure_predictor

            if args.min_tcb is None:
                raise SystemExit("privproc ledger publish cvm-release: --min-tcb is required")
            manifest = measure_predictor(options.model_spec(args), args.image_digest)
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
