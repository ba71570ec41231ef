"""Private Processing from the device: summarise a chat, suggest a rewrite — verified end to end.

One request is one RA-TLS session with one predictor CVM, carried inside
OHTTP through the relay and the gateway:

1. before the session: the OHTTP key configuration is checked against the
   log, and the stored checkpoint is refreshed if due (:mod:`.refresh`);
2. ``POST /v1/sessions`` with a Privacy Pass token and the TLS ClientHello
   (a fresh nonce in its SNI); the answer is the CVM's TLS flight. From the
   moment the token is sent until the answer is read, the session is open
   and the device talks to nothing but the relay (:class:`SessionGuard`);
3. the device checks the CVM's certificate: its SEV-SNP evidence (signature,
   chain, policy), REPORT_DATA binding the nonce and the certificate's key,
   and the **release staple** the certificate carries — the C2SP tlog-proof
   that the measurement is a logged ``cvm-release``, checked against the
   device's stored checkpoint with no fetch (:meth:`TransparencyVerifier.verify_staple`)
   — and the release itself (pinned key, TCB, HOST_DATA, expiry, revocation:
   :class:`~privproc.attestation.releases.ReleaseRegistry`); only then does it
   release its TLS Finished and the request, in ``POST /v1/sessions/{handle}``;
4. the response is read from TLS; the CVM drops the session.

Any failed check raises a typed error and nothing further is sent.

Outside sessions, a :class:`LogRefresher` moves the stored checkpoint to the
log's newest (with a consistency proof), audits checkpoints accepted from
staples older than the stored one, and feeds new log entries to the release
registry, at jittered intervals. What a client remembers between requests:
AMD certificate chains it verified (:class:`ChainCache`: the report's own
signature, its binding to this handshake and every policy check still run
per session) and its checkpoints. Nothing of a request is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from privproc.attestation.appraisal import ChainCache, Claims, SnpPolicy
from privproc.attestation.evidence import ReleaseStaple
from privproc.attestation.measure import release_proof_name
from privproc.attestation.ratls import AppraisalVerifier
from privproc.attestation.ratls_session import RaTlsClient
from privproc.attestation.releases import ReleaseRegistry
from privproc.client.ohttp_client import OhttpClient
from privproc.client.refresh import LogRefresher, SessionGuard, SessionTicket, http_tiles
from privproc.client.tokens import TokenWallet
from privproc.client.transparency import default_store
from privproc.errors import BadRequestError, ConfigError, UpstreamError
from privproc.ledger.checkpoints import CheckpointStore
from privproc.stackfile import StackFile
from privproc.v1 import predictor_pb2
from privproc.wire import bhttp, ohttp
from privproc.wire.entries import CvmReleaseEntry
from privproc.wire.session import SESSION_HEADER, SESSIONS_PREFIX, Decoder, frame
from privproc.wire.tlogclient import EntryMismatchError, NotLoggedError, TransparencyVerifier, Verified

MAX_MESSAGES = 200
#: A key configuration about to expire within this many seconds is fetched again before a session.
KEYS_MIN_TTL = 60.0


class AiDisabledError(BadRequestError):
    """The chat has AI features turned off (Advanced Chat Privacy): nothing leaves the device."""

    reason = "ai_disabled"


@dataclass(frozen=True)
class ChatMessage:
    sender: str
    time: str
    text: str


@dataclass(frozen=True)
class Chat:
    id: str
    title: str
    messages: tuple[ChatMessage, ...]
    ai_disabled: bool = False

    @classmethod
    def from_json(cls, document: object) -> Chat:
        """Parse a chat file (typed error if malformed).

        Shape: ``{"chat": {"id", "title", "ai_disabled"}, "messages": [{"sender", "time", "text"}]}``.
        """
        if not isinstance(document, dict):
            raise BadRequestError("not a chat file")
        chat = document.get("chat", {})
        messages = document.get("messages")
        if not isinstance(chat, dict) or not isinstance(messages, list):
            raise BadRequestError("not a chat file")
        if len(messages) > MAX_MESSAGES:
            raise BadRequestError(f"a chat file holds at most {MAX_MESSAGES} messages")
        parsed = []
        for message in messages:
            if not isinstance(message, dict) or not all(
                isinstance(message.get(name, ""), str) for name in ("sender", "time", "text")
            ):
                raise BadRequestError("chat messages have string sender, time and text")
            parsed.append(
                ChatMessage(message.get("sender", ""), message.get("time", ""), message.get("text", ""))
            )
        ai_disabled = chat.get("ai_disabled", False)
        if not isinstance(ai_disabled, bool):
            raise BadRequestError("ai_disabled is true or false")
        return cls(str(chat.get("id", "")), str(chat.get("title", "")), tuple(parsed), ai_disabled)


@dataclass(frozen=True)
class PrivateReceipt:
    """What the device verified for one private request (JSON-ready)."""

    token_type: int | None
    ohttp_key_id: int
    ohttp_key_log_index: int | None
    measurement: str
    measurement_log_index: int
    checkpoint: dict[str, Any]
    witnesses: tuple[str, ...]
    tcb: dict[str, int | None]
    predictor_cert_sha256: str
    model_id: str = ""
    #: The pinned release key that signed the admitting release.
    release_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        value.pop("extra")
        return value


class PrivateProcessingClient:
    """Summaries and rewrites from an attested predictor CVM; every check on the device, fail closed.

    Build one with :meth:`from_stack` (a local stack) or from its parts, use
    it as an async context manager, and call :meth:`summarize` or
    :meth:`suggest_rewrite`: each returns the predictor's ``ProcessResponse``
    (``text``, or a ``refusal_reason``) and the :class:`PrivateReceipt` of
    what was verified. Any failed check raises a typed
    :class:`~privproc.errors.PrivprocError` before the request leaves the
    device. One client serves many requests (one RA-TLS session each); it is
    not for use from several event loops.
    """

    def __init__(
        self,
        ohttp: OhttpClient,
        wallet: TokenWallet,
        *,
        policy: SnpPolicy,
        transparency: TransparencyVerifier,
        registry: ReleaseRegistry,
        refresher: LogRefresher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``registry`` admits releases (pinned keys, TCB, HOST_DATA, expiry, revocations): there is
        no client without one, so no release is admitted on its log entry alone. ``refresher``
        keeps the checkpoint fresh outside sessions (started with the client as a context
        manager); ``clock`` is wall time."""
        if policy.measurements is not None:
            raise ValueError("measurements come from the log, not the policy")
        self.ohttp = ohttp
        self.wallet = wallet
        self.policy = policy
        self.transparency = transparency
        self.registry = registry
        self.refresher = refresher
        self.chains = ChainCache()
        self._clock = clock
        if transparency.guard is None:
            transparency.guard = ohttp.guard
        if ohttp.key_history is None:
            ohttp.key_history = registry.key_configs

    @property
    def guard(self) -> SessionGuard:
        return self.ohttp.guard

    @classmethod
    def from_stack(
        cls,
        stack: StackFile,
        *,
        transport: Literal["http", "grpc"] = "http",
        checkpoints: CheckpointStore | None = None,
        clock: Callable[[], float] = time.time,
        local_address: str | None = None,
        chunked: bool | None = None,
        **wallet_options: Any,
    ) -> PrivateProcessingClient:
        """A client of a local stack: its relay, key CDN, ledger and simulated TEE's root.

        The development root is trusted only because ``stack.json`` names it:
        a production client pins AMD's roots (:class:`SnpPolicy` defaults).
        Checkpoints persist in the stack's client state directory by default.
        ``local_address``: the source address of its connections to the relay, the key CDN
        and the log (:meth:`OhttpClient.from_stack`). ``chunked``: chunked OHTTP, the answer read
        as it arrives (default: over HTTP; :meth:`OhttpClient.from_stack`).
        """
        if stack.development_root is None:
            raise ConfigError("stack.json names no attestation root")
        ohttp = OhttpClient.from_stack(
            stack,
            transport=transport,
            checkpoints=checkpoints or default_store(stack),
            local_address=local_address,
            chunked=chunked,
        )
        if ohttp.transparency is None or stack.ledger is None:
            raise ConfigError("stack.json names no transparency log: releases cannot be checked")
        wallet = TokenWallet.from_stack(stack, transparency=ohttp.transparency, **wallet_options)
        registry = ReleaseRegistry.from_stack(stack)  # no pinned release key: ConfigError
        refresher = LogRefresher(
            ohttp.transparency,
            ohttp.guard,
            http_tiles(ohttp.session, stack.ledger.tiles_url),
            observer=registry,
        )
        return cls(
            ohttp,
            wallet,
            policy=SnpPolicy().with_development_root(stack.development_root),
            transparency=ohttp.transparency,
            registry=registry,
            refresher=refresher,
            clock=clock,
        )

    async def close(self) -> None:
        if self.refresher is not None:
            await self.refresher.stop()
        await self.wallet.close()
        await self.ohttp.close()

    async def __aenter__(self) -> PrivateProcessingClient:
        if self.refresher is not None:
            self.refresher.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def summarize(
        self, chat: Chat, *, max_output_tokens: int = 128
    ) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        if chat.ai_disabled:
            raise AiDisabledError("AI features are disabled for this chat")
        request = predictor_pb2.ProcessRequest(
            task=predictor_pb2.TASK_SUMMARIZE,
            messages=[
                predictor_pb2.ChatMessage(sender=m.sender, time=m.time, text=m.text) for m in chat.messages
            ],
            max_output_tokens=max_output_tokens,
        )
        return await self.process(request)

    async def suggest_rewrite(
        self, draft: str, style: str = "polite", *, max_output_tokens: int = 96
    ) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        request = predictor_pb2.ProcessRequest(
            task=predictor_pb2.TASK_SUGGEST_REWRITE,
            draft=draft,
            style=style,
            max_output_tokens=max_output_tokens,
        )
        return await self.process(request)

    async def process(
        self, request: predictor_pb2.ProcessRequest
    ) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        """One private request in one RA-TLS session (see the module doc for every check)."""
        async with self.wallet.request_scope():
            keys = await self._prepare()
            for attempt in range(2):
                ticket = self.guard.ticket()
                try:
                    return await self._session(request, keys, ticket)
                except ohttp.KeyConfigRejectedError:
                    if attempt:
                        raise
                finally:
                    ticket.close()
                # The gateway rotated its key before opening a session: fetch the new one (outside
                # any session, holding the guard) and try once more.
                async with self.guard.refreshing():
                    keys = await self.ohttp.keys(refresh=True)
            raise AssertionError("unreachable")

    async def _prepare(self) -> Any:
        """Everything that needs the log or the CDN, before the session opens: the key
        configuration, and a log refresh if one is due. Fetching holds the guard, so it waits for
        this client's open sessions (of concurrent requests) to close and none opens meanwhile."""
        refresh = self.refresher is not None and self.refresher.due
        if not refresh and not self.ohttp.keys_due(KEYS_MIN_TTL):
            return await self.ohttp.keys()  # cached for another minute at least: no fetch
        async with self.guard.refreshing():
            if self.refresher is not None and self.refresher.due:
                await self.refresher.refresh_held()
            return await self.ohttp.keys(min_ttl=KEYS_MIN_TTL)

    async def _session(
        self, request: predictor_pb2.ProcessRequest, keys: Any, ticket: SessionTicket
    ) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        verifier = AppraisalVerifier(self.policy, chains=self.chains)
        tls = RaTlsClient(verifier)
        opened, key_receipt = await self.ohttp.session_request(
            self.wallet, tls.start(), keys=keys, ticket=ticket
        )
        await ticket.open()  # already open unless the gateway asked for no token
        if opened.status != 201:
            raise UpstreamError("the gateway did not open a session")
        handle = opened.header(SESSION_HEADER) or ""
        finished = tls.receive(opened.content)  # verifies the evidence; raises before anything else
        claims = verifier.appraisal.claims if verifier.appraisal else None
        if claims is None:
            raise UpstreamError("no appraisal")
        release, release_key = self._release(tls.staple, claims)
        # Every check passed: only now does the request leave the device.
        records = finished + tls.send_application_data(frame(request))
        answered, _ = await self.ohttp.request(
            bhttp.Request(
                "POST",
                "https",
                self.ohttp.origin,
                SESSIONS_PREFIX + handle,
                headers=(("content-type", "application/octet-stream"),),
                content=records,
            ),
            keys=keys,
        )
        if answered.status != 200:
            raise UpstreamError("the session was lost")
        tls.receive(answered.content)
        responses = Decoder(predictor_pb2.ProcessResponse).feed(tls.read_application_data())
        if len(responses) != 1:
            raise UpstreamError("the predictor did not answer")
        tcb = claims.vcek_tcb
        receipt = PrivateReceipt(
            token_type=key_receipt.token_type,
            ohttp_key_id=key_receipt.ohttp_key_id,
            ohttp_key_log_index=key_receipt.ohttp_key_log_index,
            measurement=claims.measurement.hex(),
            measurement_log_index=release.index,
            checkpoint={
                "origin": release.checkpoint.origin,
                "size": release.checkpoint.size,
                "root": release.checkpoint.root.hex(),
            },
            witnesses=release.witnesses,
            tcb={
                "bootloader": tcb.bootloader,
                "tee": tcb.tee,
                "snp": tcb.snp,
                "microcode": tcb.microcode,
                "fmc": tcb.fmc,
            },
            predictor_cert_sha256=(tls.peer_certificate_sha256 or b"").hex(),
            model_id=responses[0].model_id,
            release_key=release_key,
        )
        return responses[0], receipt

    def _release(self, staple: ReleaseStaple | None, claims: Claims) -> tuple[Verified, str]:
        """The logged ``cvm-release`` the CVM stapled, checked with no I/O (typed error if none)."""
        if staple is None:
            raise NotLoggedError("no proof that this release is logged")
        verified = self.transparency.verify_staple(staple)
        entry = verified.entry
        if not isinstance(entry, CvmReleaseEntry) or claims.measurement.hex() not in entry.measurements:
            raise EntryMismatchError("logged entry is not a release of this measurement")
        admitted = self.registry.admit(verified.index, entry, claims, self._clock())
        return verified, admitted.release_key


class SyncPrivateProcessingClient:
    """The same client for synchronous code: it owns an event loop of its own.

    Use it as a context manager (``with SyncPrivateProcessingClient.from_stack(stack) as c:``);
    each call runs to completion on the client's loop. Not for use inside a running loop.
    """

    def __init__(self, make: Callable[[], PrivateProcessingClient]) -> None:
        self._loop = asyncio.new_event_loop()

        async def build() -> PrivateProcessingClient:
            return make()  # aiohttp sessions bind to the loop they are made in

        self._client = self._loop.run_until_complete(build())

    @classmethod
    def from_stack(cls, stack: StackFile, **options: Any) -> SyncPrivateProcessingClient:
        return cls(lambda: PrivateProcessingClient.from_stack(stack, **options))

    def summarize(self, chat: Chat, **options: Any) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        return self._loop.run_until_complete(self._client.summarize(chat, **options))

    def suggest_rewrite(
        self, draft: str, style: str = "polite", **options: Any
    ) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        return self._loop.run_until_complete(self._client.suggest_rewrite(draft, style, **options))

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.close())
            self._loop.close()

    def __enter__(self) -> SyncPrivateProcessingClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


__all__ = [
    "AiDisabledError",
    "Chat",
    "ChatMessage",
    "PrivateProcessingClient",
    "PrivateReceipt",
    "SyncPrivateProcessingClient",
    "release_proof_name",
]
