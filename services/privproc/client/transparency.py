"""The device's side of the transparency log: where its checkpoints live, and the log's I/O.

What is checked, and how, is :mod:`privproc.wire.tlogclient` (sans-I/O,
shared with the operator's verifier and the ledger tooling). This module
wires it up for the client: the checkpoint store beside ``stack.json``
(:func:`default_store`, a :class:`~privproc.ledger.checkpoints.CheckpointStore`),
consistency proofs from the ledger, tlog-proofs from the key CDN
(:func:`fetch_proof`), and the ``client.split_view`` event when an audit
proves a split view (:func:`split_view_alarm`). Audits run outside
sessions, from :class:`privproc.client.refresh.LogRefresher`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import aiohttp

from privproc import events
from privproc.errors import UpstreamError
from privproc.ledger.checkpoints import CheckpointStore, grpc_consistency_source
from privproc.stackfile import StackFile
from privproc.wire.tlogclient import (
    LogPolicy,
    NotLoggedError,
    TransparencyVerifier,
)

MAX_PROOF_FETCH = 64 << 10


def default_store(stack: StackFile) -> CheckpointStore:
    """The client's checkpoint store for ``stack``: ``client/checkpoints.json`` beside its stack.json.

    (In memory when the stack document was not read from a file.)
    """
    path = stack.raw.get("_path")
    return CheckpointStore(Path(path).parent / "client" / "checkpoints.json" if path else None)


async def fetch_proof(
    session: aiohttp.ClientSession,
    proofs_url: str,
    name: str,
    what: Literal["key configuration", "issuer key", "release"],
) -> bytes:
    """A tlog-proof from the key CDN (``<proofs_url><name>``); NotLoggedError if there is none.

    ``what`` names the thing proved, for the error message (a fixed string).
    """
    try:
        async with session.get(proofs_url + name) as resp:
            body = await resp.content.read(MAX_PROOF_FETCH + 1)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError):
        raise UpstreamError("key CDN unavailable") from None
    if status == 404:
        raise NotLoggedError(f"no proof that this {what} is logged")
    if status != 200 or len(body) > MAX_PROOF_FETCH:
        raise UpstreamError("key CDN gave no proof")
    return bytes(body)


def split_view_alarm(origin: str) -> None:
    """What the client does when an audit proves a split view: the ``client.split_view`` event."""
    events.emit(events.ClientSplitView(origin=origin))


def verifier_from_stack(
    stack: StackFile, store: CheckpointStore
) -> tuple[TransparencyVerifier, Callable[[], Awaitable[None]]] | None:
    """The verifier a local stack's clients use (None if the stack has no ledger)."""
    if stack.ledger is None:
        return None
    witnesses = (stack.witness.vkey,) if stack.witness is not None else ()
    policy = LogPolicy(stack.ledger.origin, stack.ledger.vkey, witnesses, stack.min_cosignatures)
    source, close = grpc_consistency_source(stack.ledger.grpc)
    return TransparencyVerifier(policy, store, source, security_error=split_view_alarm), close
