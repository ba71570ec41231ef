"""``privproc demo``: the stack, a summary and a rewrite with receipts, the fail-closed case, stop.

The demo supervises the stack itself, with :func:`privproc.stack.running`
(the supervisor ``privproc up`` uses): its children die with it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privproc import stackfile
from privproc.cli import options, private, up
from privproc.errors import PrivprocError, public_message
from privproc.runtime import settings

if TYPE_CHECKING:
    from privproc import stack

#: The bundled example chat (``make demo`` summarises it).
EXAMPLE_CHAT = Path(__file__).parent.parent / "examples" / "team-chat.json"
DEMO_DRAFT = "hey can u send me the report by tmrw, need it asap for the meeting"


def register(sub: Any) -> None:
    options.lazy_command(
        sub,
        "demo",
        "start the stack, summarise and rewrite privately, show the fail-closed case, stop",
        lambda prog: up.stack_parser(prog, exclude=("skip_publish",)),
        demo_cmd,
    )


def demo_cmd(args: argparse.Namespace) -> int:
    """Start the stack, run private requests with their receipts, show the fail-closed case, stop."""
    from privproc import stack

    config = settings.load(stack.StackConfig, args, os.environ)
    # Both stacks share the models' conversion (a first start converts the model once).
    config = dataclasses.replace(config, model_cache=config.model_cache or config.state_dir / "models")
    return asyncio.run(_demo(config))


async def _demo(config: stack.StackConfig) -> int:
    from privproc import stack
    from privproc.client.private import Chat

    chat = Chat.from_json(json.loads(EXAMPLE_CHAT.read_text(encoding="utf-8")))
    # The services' event lines are for operators; the demo shows warnings only.
    child_env = {"PRIVPROC_LOG_LEVEL": os.environ.get("PRIVPROC_LOG_LEVEL", "warning")}
    spec = config.model
    print("privproc demo: starting the stack on loopback: cdn, witness, ledger, verifier,", flush=True)
    print(f"  a predictor in a simulated SEV-SNP CVM ({spec.language_model} + {spec.embedder}),")
    print("  acs, gateway, relay ... (a first start converts the model once)", flush=True)
    async with stack.running(config, child_env=child_env) as (_, path):
        await _prefill_wallet(stackfile.StackFile.load(path))
        code = await _requests(stackfile.StackFile.load(path), chat)
    print()
    print("privproc demo: fail closed — the same stack with the predictor's release NOT logged")
    print("  (privproc up --skip-publish: the operator's verifier admits the CVM, the log does not) ...")
    unpublished = dataclasses.replace(config, state_dir=config.state_dir / "unpublished", skip_publish=True)
    async with stack.running(unpublished, child_env=child_env) as (_, path):
        try:
            await _prefill_wallet(stackfile.StackFile.load(path))
            await private.private(stackfile.StackFile.load(path), "summary", chat)
        except PrivprocError as err:
            print(f"  refused by the client, before the request left the device: {public_message(err)}")
            print(f"  ({type(err).__name__}: the measurement has no cvm-release entry in the log)")
        else:
            print("  the client sent the request: THIS IS A BUG", file=sys.stderr)
            code |= 1
    print()
    print("privproc demo: done; the stacks are stopped.", flush=True)
    return code


async def _prefill_wallet(stack_file: stackfile.StackFile) -> None:
    """The demo's tokens, bought before any request, as a device's background refill would."""
    bought, held = await private.refill_wallet(stack_file)
    print(f"privproc demo: token wallet filled ahead of the requests ({bought} bought, {held} held):")
    print("  the ACS sees the demo account now, never at request time")


async def _requests(stack_file: stackfile.StackFile, chat: Any) -> int:
    """A health check, a summary and a rewrite, each printed with what the client verified."""
    print()
    result = await private.health(stack_file, "http")
    private.print_health(result, stack_file.gateway.origin)
    code = 0 if result["status"] == 200 else 1
    print()
    print(f"summarize the unread messages of '{chat.title}' ({len(chat.messages)} messages), privately:")
    summary = await private.private(stack_file, "summary", chat)
    private.print_private(summary, "summary")
    code |= 0 if summary["summary"] else 1
    print()
    print(f'suggest a polite rewrite of the draft "{DEMO_DRAFT}", privately:')
    suggestion = await private.private(stack_file, "suggestion", DEMO_DRAFT, "polite")
    private.print_private(suggestion, "suggestion")
    return code | (0 if suggestion["suggestion"] else 1)
