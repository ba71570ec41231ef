"""Option groups shared by several commands (as sigstore-python's ``_cli.py`` shares them)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privproc import stackfile
from privproc.errors import ConfigError
from privproc.runtime import settings

DEFAULT_STACK = stackfile.DEFAULT_STATE_DIR / stackfile.FILE_NAME


def add_stack(parser: argparse.ArgumentParser) -> None:
    """``--stack``: the running stack's ``stack.json``."""
    parser.add_argument("--stack", type=Path, default=DEFAULT_STACK, help="the running stack's stack.json")


def add_account_credential(parser: argparse.ArgumentParser) -> None:
    """``--account-credential-file``: an ACS account's credential, instead of ``stack.json``'s."""
    parser.add_argument(
        "--account-credential-file",
        type=Path,
        metavar="FILE",
        help="file holding the ACS account credential tokens are bought with (default: stack.json's)",
    )


def load_stack(args: argparse.Namespace) -> stackfile.StackFile:
    """``--stack``'s document, with ``--account-credential-file``'s credential if one is given."""
    stack = stackfile.StackFile.load(args.stack)
    credential_file: Path | None = getattr(args, "account_credential_file", None)
    if credential_file is None:
        return stack
    credential = settings.read_secret_file(credential_file)
    if not credential:
        raise ConfigError("the account credential file is empty")
    account_id = stack.demo_account.id if stack.demo_account is not None else ""
    return dataclasses.replace(stack, demo_account=stackfile.DemoAccount(account_id, credential))


def add_json(parser: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output."""
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_model(parser: argparse.ArgumentParser) -> None:
    """The predictor's models (measured: the same flags go to ``serve``, ``up`` and release tools)."""
    from privproc.predictor.loading import ModelSpec

    settings.add_arguments(parser, ModelSpec)


def add_image_digest(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--image-digest``: the predictor's container image digest (measured), as ``serve`` takes it."""
    from privproc.attestation.measure import parse_image_digest

    parser.add_argument(
        "--image-digest",
        type=parse_image_digest,
        required=required,
        default="",
        metavar="sha256:HEX",
        help="the predictor's container image digest (measured)"
        + ("" if required else "; default: none, as under privproc up"),
    )


def model_spec(args: argparse.Namespace) -> Any:
    """The :class:`~privproc.predictor.loading.ModelSpec` given by :func:`add_model`'s flags."""
    from privproc.predictor.loading import ModelSpec

    return settings.load(ModelSpec, args, {})


def lazy_command(
    sub: Any,
    name: str,
    help: str,
    parser: Callable[[str], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """A command whose flags need a heavy import (a service's Config, the models' spec).

    The top-level parser knows its name only; ``parser(prog)`` is built, and parses
    the rest of the command line, when this command is the one run.
    """
    prog = f"privproc {name}"

    def invoke(args: argparse.Namespace, rest: list[str]) -> int:
        return run(parser(prog).parse_args(rest))

    sub.add_parser(name, help=help, add_help=False).set_defaults(func=invoke, takes_rest=True)
