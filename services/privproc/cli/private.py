"""``privproc health | summarize | suggest | wallet``: private requests through a running stack."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from privproc import stackfile
from privproc.cli import options
from privproc.errors import ConfigError

LINKABLE_HELP = (
    "if the token wallet is empty, buy tokens inside this request (the issuer can then link your "
    "account to it; otherwise run `privproc wallet refill` ahead of time)"
)


def register(sub: Any) -> None:
    health = sub.add_parser(
        "health",
        help="private request to the gateway's health resource; or, given HOST:PORT, a gRPC health "
        "check (exit 0 when SERVING: a probe)",
    )
    health.add_argument(
        "target",
        nargs="?",
        metavar="HOST:PORT",
        help="check this gRPC server's health instead (plain text; exit 0 SERVING, 1 otherwise)",
    )
    health.add_argument(
        "--timeout", type=float, default=3.0, help="with HOST:PORT: seconds to wait for the answer"
    )
    options.add_stack(health)
    options.add_account_credential(health)
    health.add_argument("--transport", choices=["http", "grpc"], default="http")
    options.add_json(health)
    health.set_defaults(func=health_cmd)

    summarize = sub.add_parser("summarize", help="summarise a chat privately (CHAT.json)")
    summarize.add_argument("chat", type=Path, help='{"chat": {...}, "messages": [{"sender","time","text"}]}')
    options.add_stack(summarize)
    options.add_account_credential(summarize)
    options.add_json(summarize)
    summarize.add_argument("--allow-linkable-purchase", action="store_true", help=LINKABLE_HELP)
    _add_streaming(summarize)
    summarize.set_defaults(func=summarize_cmd)

    suggest = sub.add_parser("suggest", help="suggest a rewrite of a draft privately")
    suggest.add_argument("text", help="the draft")
    suggest.add_argument("--style", choices=["polite", "concise", "friendly", "formal"], default="polite")
    options.add_stack(suggest)
    options.add_account_credential(suggest)
    options.add_json(suggest)
    suggest.add_argument("--allow-linkable-purchase", action="store_true", help=LINKABLE_HELP)
    _add_streaming(suggest)
    suggest.set_defaults(func=suggest_cmd)

    wallet = sub.add_parser(
        "wallet", help="the persistent Privacy Pass token wallet: refill ahead of need, show"
    )
    wallet.add_argument("action", choices=["refill", "show"])
    options.add_stack(wallet)
    options.add_account_credential(wallet)
    wallet.set_defaults(func=wallet_cmd)


def _deadline(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not (0 < seconds < 1e6):
        raise argparse.ArgumentTypeError("a positive number of seconds")
    return seconds


def _add_streaming(parser: argparse.ArgumentParser) -> None:
    """``--deadline`` and ``--no-stream``: a private request's time budget, and how it is read."""
    from privproc.client.private import DEFAULT_DEADLINE_SECONDS

    parser.add_argument(
        "--deadline",
        type=_deadline,
        default=DEFAULT_DEADLINE_SECONDS,
        metavar="SECONDS",
        help=f"give up after this long, end to end (default {DEFAULT_DEADLINE_SECONDS:g})",
    )
    parser.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="wait for the whole answer instead of printing text as it is generated",
    )


def _checkpoints(stack: stackfile.StackFile) -> Any:
    """The client's checkpoint store: beside stack.json, so each stack keeps its own history."""
    from privproc.ledger.checkpoints import CheckpointStore

    path = stack.raw.get("_path")
    return CheckpointStore(Path(path).parent / "client" / "checkpoints.json" if path else None)


async def health(stack: stackfile.StackFile, transport: str) -> dict[str, Any]:
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


def print_health(result: dict[str, Any], origin: str) -> None:
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


async def private(
    stack: stackfile.StackFile,
    task: str,
    argument: Any,
    style: str = "polite",
    *,
    allow_linkable_purchase: bool = False,
    deadline: float | None = None,
    show: TextShown | None = None,
) -> dict[str, Any]:
    """One private request; ``{"summary"|"suggestion", "refused", "receipt"}``.

    Tokens come from the persistent wallet (``privproc wallet refill``); with
    ``allow_linkable_purchase`` an empty wallet buys inside the request, and says so.
    With ``show``, the answer is streamed and its text shown as it is generated.
    """
    from privproc.client.private import PrivateProcessingClient

    async with PrivateProcessingClient.from_stack(stack, checkpoints=_checkpoints(stack)) as client:
        client.wallet.allow_linkable_purchase = allow_linkable_purchase
        try:
            return await _private_request(client, task, argument, style, deadline=deadline, show=show)
        finally:
            if client.wallet.linkable_purchases:
                print(
                    "privproc: --allow-linkable-purchase: tokens were bought inside this request; "
                    "the issuer can link your account to it",
                    file=sys.stderr,
                )


async def _private_request(
    client: Any, task: str, argument: Any, style: str, *, deadline: float | None, show: TextShown | None
) -> dict[str, Any]:
    if show is None:
        if task == "summary":
            response, receipt = await client.summarize(argument, deadline=deadline)
        else:
            response, receipt = await client.suggest_rewrite(argument, style, deadline=deadline)
    else:
        if task == "summary":
            stream = client.summarize_stream(argument, deadline=deadline)
        else:
            stream = client.suggest_rewrite_stream(argument, style, deadline=deadline)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                show.add(chunk.text, replace=chunk.replace)
                response, receipt = chunk.response, chunk.receipt
        show.end()
    refused = response.refusal_reason or None
    return {task: None if refused else response.text, "refused": refused, "receipt": receipt.to_json()}


class TextShown:
    """Text printed as it arrives, indented under a heading; a replacement reprints it.

    On a terminal the provisional text is erased and the final text printed
    in its place; elsewhere (a pipe, a file) the final text follows a marker
    line. Nothing is printed before the first text, so a refusal shows no
    heading.
    """

    def __init__(self, heading: str, out: TextIO | None = None, indent: str = "    ") -> None:
        self._heading = heading
        self._out = out or sys.stdout
        self._indent = indent
        self.text = ""
        self._started = False

    def add(self, text: str, *, replace: bool = False) -> None:
        if replace:
            self._replace(text)
        elif text:
            self._write(text)
        self._out.flush()

    def _write(self, text: str) -> None:
        if not self._started:
            self._out.write(f"{self._heading}\n{self._indent}")
            self._started = True
        self._out.write(text.replace("\n", "\n" + self._indent))
        self.text += text

    def _replace(self, text: str) -> None:
        if self._started:
            if self._out.isatty():
                # Up to the heading's line and erase to the end of the screen: reprint cleanly.
                width = max(1, shutil.get_terminal_size().columns)
                shown = f"{self._heading}\n{self._indent}" + self.text.replace("\n", "\n" + self._indent)
                rows = sum(max(1, -(-len(line) // width)) for line in shown.split("\n"))
                self._out.write(f"\r\x1b[{rows - 1}F\x1b[J" if rows > 1 else "\r\x1b[J")
            else:
                self._out.write("\n  (the final answer differs; it replaces the text above)\n")
            self._started = False
        self.text = ""
        if text:
            self._write(text)

    def end(self) -> None:
        """After the last chunk: end the line the text is on."""
        if self._started:
            self._out.write("\n")
            self._out.flush()


def print_private(result: dict[str, Any], task: str, *, shown: bool = False) -> None:
    """The answer (unless ``shown`` already, as it streamed) and what the client verified."""
    receipt = result["receipt"]
    if result["refused"]:
        print(f"  refused by the predictor's policy: {result['refused']}")
    elif not shown:
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


def summarize_cmd(args: argparse.Namespace) -> int:
    from privproc.client.private import Chat

    try:
        document = json.loads(args.chat.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError("the chat file is not readable JSON") from None
    chat = Chat.from_json(document)
    stack = options.load_stack(args)
    heading = f"summary of {chat.title or 'the chat'} ({len(chat.messages)} messages), privately:"
    return _run_private(args, stack, "summary", chat, heading)


def _run_private(
    args: argparse.Namespace, stack: stackfile.StackFile, task: str, argument: Any, heading: str
) -> int:
    """Run one private request and print it: streamed as it comes unless ``--json``/``--no-stream``.

    With ``--json``, the answer is still streamed (a live stream never runs into an idle
    timeout), only printed once whole.
    """
    show = None
    if args.stream:
        if not args.json:
            print(heading, flush=True)
        show = TextShown(f"  {task}:", out=io.StringIO() if args.json else None)
    result = asyncio.run(
        private(
            stack,
            task,
            argument,
            getattr(args, "style", "polite"),
            allow_linkable_purchase=args.allow_linkable_purchase,
            deadline=args.deadline,
            show=show,
        )
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        if show is None:
            print(heading)
        print_private(result, task, shown=show is not None)
    return 0


def suggest_cmd(args: argparse.Namespace) -> int:
    stack = options.load_stack(args)
    return _run_private(
        args, stack, "suggestion", args.text, f"a {args.style} rewrite of your draft, privately:"
    )


async def refill_wallet(stack: stackfile.StackFile) -> tuple[int, int]:
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


def wallet_cmd(args: argparse.Namespace) -> int:
    """``privproc wallet refill|show``: the persistent token wallet (never prints a token)."""
    from privproc.client.tokens import TokenWallet

    stack = options.load_stack(args)
    if args.action == "refill":
        bought, count = asyncio.run(refill_wallet(stack))
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


def health_cmd(args: argparse.Namespace) -> int:
    if args.target is not None:
        return probe(args.target, args.timeout)
    stack = options.load_stack(args)
    result = asyncio.run(health(stack, args.transport))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_health(result, stack.gateway.origin)
    return 0 if result["status"] == 200 else 1


def probe(target: str, timeout: float) -> int:
    """``privproc health HOST:PORT``: 0 when the gRPC health check answers SERVING in time, else 1.

    For exec readiness and liveness probes (Kubernetes before 1.24 has no gRPC probe); it
    prints nothing, the exit status is the answer.
    """
    from privproc.runtime.rpc import check_health

    if timeout <= 0:
        raise ConfigError("--timeout is a positive number of seconds")

    async def check() -> bool:
        try:
            return await asyncio.wait_for(check_health(target, deadline_seconds=timeout), timeout + 1.0)
        except TimeoutError:
            return False

    return 0 if asyncio.run(check()) else 1
