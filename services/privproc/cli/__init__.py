"""The ``privproc`` command line: one small module per command.

``privproc up``            start the whole stack locally (see :mod:`privproc.stack`)
``privproc serve NAME``    run one service in the foreground (what ``up`` spawns)
``privproc health``        a private request to the gateway's health resource (HOST:PORT: a probe)
``privproc summarize``     summarise a chat file inside an attested predictor, with a receipt
``privproc suggest``       suggest a rewrite of a draft, likewise
``privproc wallet``        refill the token wallet ahead of need (never inside a request) | show
``privproc account``       create or disable an ACS account
``privproc ledger``        publish | checkpoint | prove | verify | monitor the transparency log
``privproc image measure`` the simulated CVM's measurement of the predictor image
``privproc cluster``       secrets | release: a Kubernetes install's keys and predictor release
``privproc attest``        show | verify a SEV-SNP report (exit 0 verified, 1 rejected)
``privproc config schema`` the JSON schema of each service's configuration
``privproc stats``         a live table of the stack's telemetry files (requests/s, p50/p99, errors)
``privproc demo``          ``up``, a summary and a rewrite with receipts, the fail-closed case, stop

Services' flags, environment variables (``PRIVPROC_<SERVICE>_<FIELD>``) and
schema all come from their Config declarations (:mod:`privproc.runtime.settings`).
"""

from __future__ import annotations

import argparse
import os
import sys

from privproc.cli import (
    account,
    attest,
    cluster,
    config,
    demo,
    image,
    ledger,
    private,
    serve,
    stats,
    up,
)
from privproc.errors import PrivprocError, public_message

#: Each command module's ``register(subparsers)``, in the order ``--help`` lists them.
COMMANDS = (up, serve, private, account, ledger, attest, image, cluster, config, stats, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privproc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    # Services write one event per line; libraries' progress bars (tqdm reads this when it is
    # first imported, e.g. by transformers converting a GGUF model) would break that.
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = build_parser()
    # `serve NAME` parses its own flags (only that service's module is imported).
    args, rest = parser.parse_known_args(argv)
    takes_rest = getattr(args, "takes_rest", False)
    if rest and not takes_rest:
        parser.error("unrecognized arguments: " + " ".join(rest))
    try:
        code = args.func(args, rest) if takes_rest else args.func(args)
    except PrivprocError as err:
        print(f"privproc: {public_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
