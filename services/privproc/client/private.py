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
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from privproc.attestation.appraisal import ChainCache, Claims, SnpPolicy
from privproc.attestation.evidence import ReleaseStaple
from privproc.attestation.measure import release_proof_name
from privproc.attestation.ratls import AppraisalVerifier
from privproc.attestation.ratls_session import RaTlsClient
from privproc.attestation.releases import ReleaseRegistry
from privproc.client.ohttp_client import Deadline, OhttpClient, Receipt, with_deadline
from privproc.client.refresh import LogRefresher, SessionGuard, SessionTicket, http_tiles
from privproc.client.tokens import TokenWallet
from privproc.client.transparency import default_store
from privproc.errors import BadRequestError, ConfigError, UpstreamError
from privproc.ledger.checkpoints import CheckpointStore
from privproc.stackfile import StackFile
from privproc.v1 import predictor_pb2
from privproc.wire import bhttp, ohttp
from privproc.wire.entries import CvmReleaseEntry
from privproc.wire.padding import STREAM_FRAME_BUCKETS
from privproc.wire.session import SESSION_HEADER, SESSIONS_PREFIX, Decoder, frame
from privproc.wire.tlogclient import EntryMismatchError, NotLoggedError, TransparencyVerifier, Verified

MAX_MESSAGES = 200
#: A private request's deadline unless the caller gives one (seconds, key fetches included).
DEFAULT_DEADLINE_SECONDS = 60.0
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
        deadline: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        """``registry`` admits releases (pinned keys, TCB, HOST_DATA, expiry, revocations): there is
        no client without one, so no release is admitted on its log entry alone. ``refresher``
        keeps the checkpoint fresh outside sessions (started with the client as a context
        manager); ``clock`` is wall time; ``deadline``: each request's, in seconds, unless the
        call gives its own."""
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
        self.deadline = deadline
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
        deadline: float = DEFAULT_DEADLINE_SECONDS,
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
            deadline=deadline,
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
        self, chat: Chat, *, max_output_tokens: int = 128, deadline: float | None = None
    ) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        return await self.process(_summary_request(chat, max_output_tokens), deadline=deadline)

    async def suggest_rewrite(
        self,
        draft: str,
        style: str = "polite",
        *,
        max_output_tokens: int = 96,
        deadline: float | None = None,
    ) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        return await self.process(_rewrite_request(draft, style, max_output_tokens), deadline=deadline)

    def summarize_stream(
        self, chat: Chat, *, max_output_tokens: int = 128, deadline: float | None = None
    ) -> AsyncGenerator[StreamChunk, None]:
        """:meth:`summarize`, its text as it is generated: ``async for chunk in ...``.

        Each :class:`StreamChunk` is text to show; the last one carries the
        answer (``response``, authoritative) and the receipt. The checks are
        those of :meth:`summarize`, all before the request leaves the device.
        """
        return self.process_stream(_summary_request(chat, max_output_tokens), deadline=deadline)

    def suggest_rewrite_stream(
        self,
        draft: str,
        style: str = "polite",
        *,
        max_output_tokens: int = 96,
        deadline: float | None = None,
    ) -> AsyncGenerator[StreamChunk, None]:
        """:meth:`suggest_rewrite`, its text as it is generated (see :meth:`summarize_stream`)."""
        return self.process_stream(_rewrite_request(draft, style, max_output_tokens), deadline=deadline)

    async def process(
        self, request: predictor_pb2.ProcessRequest, *, deadline: float | None = None
    ) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        """One private request in one RA-TLS session (see the module doc for every check).

        ``deadline``: seconds for the whole of it (default :attr:`deadline`),
        from this call to the answer, key and log fetches included; it
        travels with the request, and passing it raises
        :class:`~privproc.errors.DeadlineExceededError`. Over chunked OHTTP it is
        :meth:`process_stream` read to its end.
        """
        if self.ohttp.chunked:
            # Over chunked OHTTP the answer streams even when it is wanted whole: the predictor's
            # padding frames keep every hop's idle timer fed through a long generation (a whole
            # answer would sit silent until done), and the relay sees a plain call and a streamed
            # one alike. The final frame's ProcessResponse is exactly the non-streamed answer.
            last: StreamChunk | None = None
            async for chunk in self.process_stream(request, deadline=deadline):
                last = chunk
            if last is None or last.response is None or last.receipt is None:
                raise UpstreamError("the predictor did not answer")
            return last.response, last.receipt
        budget = Deadline.start(self.deadline if deadline is None else deadline)
        return await budget.run(self._process(request, budget))

    async def _process(
        self, request: predictor_pb2.ProcessRequest, budget: Deadline
    ) -> tuple[predictor_pb2.ProcessResponse, PrivateReceipt]:
        async with self.wallet.request_scope():
            session = await self._begin(budget)
            try:
                async for records in self._exchange(session, request, budget):
                    session.tls.receive(records)
                responses = Decoder(predictor_pb2.ProcessResponse).feed(session.tls.read_application_data())
            finally:
                session.ticket.close()
            if len(responses) != 1:
                raise UpstreamError("the predictor did not answer")
            return responses[0], session.receipt(responses[0].model_id)

    async def process_stream(
        self, request: predictor_pb2.ProcessRequest, *, deadline: float | None = None
    ) -> AsyncGenerator[StreamChunk, None]:
        """:meth:`process` with ``stream`` set: the answer's text as it comes (:class:`StreamChunk`).

        Provisional text is handed out as its frames arrive; the answer itself
        only once the stream ended whole: the final OHTTP chunk authenticated
        and the predictor closed TLS. A stream cut short raises (typed), never
        ends quietly. Without chunked OHTTP (gRPC, or ``chunked=False``) the
        answer arrives whole and the text comes in one piece at the end.
        """
        budget = Deadline.start(self.deadline if deadline is None else deadline)
        streamed = predictor_pb2.ProcessRequest()
        streamed.CopyFrom(request)
        streamed.stream = True
        async with self.wallet.request_scope():
            session = await budget.run(self._begin(budget))
            try:
                assembler = StreamAssembler()
                frames = Decoder(predictor_pb2.ProcessChunk, buckets=STREAM_FRAME_BUCKETS)
                exchange = self._exchange(session, streamed, budget)
                async with contextlib.aclosing(exchange):
                    while (records := await budget.run(anext(exchange, None))) is not None:
                        session.tls.receive(records)
                        for frame_ in frames.feed(session.tls.read_application_data()):
                            shown = assembler.add(frame_)
                            if shown is not None:
                                yield shown
                if frames.pending or not session.tls.peer_closed:
                    raise UpstreamError("the predictor's answer ended early")
                final = assembler.finish()
            finally:
                session.ticket.close()
            assert final.response is not None  # finish() always sets it
            yield dataclasses.replace(final, receipt=session.receipt(final.response.model_id))

    async def _begin(self, budget: Deadline) -> _Session:
        """Everything before the request leaves the device: keys, the session, every check.

        The session holds its ticket open (the device talks to nothing but the
        relay until it is closed): close it once the answer is read.
        """
        keys = await self._prepare()
        for attempt in range(2):
            ticket = self.guard.ticket()
            try:
                return await self._open(keys, ticket, budget)
            except ohttp.KeyConfigRejectedError:
                ticket.close()
                if attempt:
                    raise
            except BaseException:
                ticket.close()
                raise
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

    async def _open(self, keys: Any, ticket: SessionTicket, budget: Deadline) -> _Session:
        """Open the RA-TLS session and check everything about the predictor; send nothing more."""
        verifier = AppraisalVerifier(self.policy, chains=self.chains)
        tls = RaTlsClient(verifier)
        opened, key_receipt = await self.ohttp.session_request(
            self.wallet, tls.start(), keys=keys, ticket=ticket, deadline=budget
        )
        await ticket.open()  # already open unless the gateway asked for no token
        _check_status(opened.status, 201, budget, "the gateway did not open a session")
        handle = opened.header(SESSION_HEADER) or ""
        finished = tls.receive(opened.content)  # verifies the evidence; raises before anything else
        claims = verifier.appraisal.claims if verifier.appraisal else None
        if claims is None:
            raise UpstreamError("no appraisal")
        release, release_key = self._release(tls.staple, claims)
        return _Session(tls, handle, keys, ticket, finished, claims, release, release_key, key_receipt)

    async def _exchange(
        self, session: _Session, request: predictor_pb2.ProcessRequest, budget: Deadline
    ) -> AsyncGenerator[bytes, None]:
        """Send the request in the checked session; the predictor's TLS records as they come.

        Over chunked OHTTP each piece is handed out as its chunk
        authenticates, and the generator ends only after the final chunk did;
        otherwise the answer comes whole, in one piece.
        """
        # Every check passed (_open): only now does the request leave the device.
        records = session.finished + session.tls.send_application_data(frame(request))
        inner = bhttp.Request(
            "POST",
            "https",
            self.ohttp.origin,
            SESSIONS_PREFIX + session.handle,
            headers=(("content-type", "application/octet-stream"),),
            content=records,
        )
        if not self.ohttp.chunked:
            answered, _ = await self.ohttp.request(inner, keys=session.keys, deadline=budget)
            _check_status(answered.status, 200, budget, "the session was lost")
            yield answered.content
            return
        answer = self.ohttp.stream(with_deadline(inner, budget), keys=session.keys)
        async with contextlib.aclosing(answer):
            async for event in answer:
                if isinstance(event, bhttp.ResponseHead):
                    _check_status(event.status, 200, budget, "the session was lost")
                elif isinstance(event, bhttp.ContentChunk):
                    yield event.data

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


def _summary_request(chat: Chat, max_output_tokens: int) -> predictor_pb2.ProcessRequest:
    if chat.ai_disabled:
        raise AiDisabledError("AI features are disabled for this chat")
    return predictor_pb2.ProcessRequest(
        task=predictor_pb2.TASK_SUMMARIZE,
        messages=[
            predictor_pb2.ChatMessage(sender=m.sender, time=m.time, text=m.text) for m in chat.messages
        ],
        max_output_tokens=max_output_tokens,
    )


def _rewrite_request(draft: str, style: str, max_output_tokens: int) -> predictor_pb2.ProcessRequest:
    return predictor_pb2.ProcessRequest(
        task=predictor_pb2.TASK_SUGGEST_REWRITE, draft=draft, style=style, max_output_tokens=max_output_tokens
    )


def _check_status(status: int, expected: int, budget: Deadline, lost: str) -> None:
    """The gateway's answer in a session: ``expected``, or the typed error it stands for."""
    if status == 504:
        raise budget.exceeded()  # the gateway saw this request's deadline pass
    if status != expected:
        raise UpstreamError(lost)


@dataclass
class _Session:
    """A checked RA-TLS session, the request not sent yet."""

    tls: RaTlsClient
    handle: str
    keys: Any
    ticket: SessionTicket
    #: The client Finished, held back until every check passed.
    finished: bytes
    claims: Claims
    release: Verified
    release_key: str
    key_receipt: Receipt

    def receipt(self, model_id: str) -> PrivateReceipt:
        tcb = self.claims.vcek_tcb
        release = self.release
        return PrivateReceipt(
            token_type=self.key_receipt.token_type,
            ohttp_key_id=self.key_receipt.ohttp_key_id,
            ohttp_key_log_index=self.key_receipt.ohttp_key_log_index,
            measurement=self.claims.measurement.hex(),
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
            predictor_cert_sha256=(self.tls.peer_certificate_sha256 or b"").hex(),
            model_id=model_id,
            release_key=self.release_key,
        )


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed answer, to show as it comes.

    ``text`` is appended to what was shown, or, with ``replace``, replaces all
    of it (the final answer differs from the provisional text, or withdraws
    it: a refusal replaces it with nothing). The last chunk carries
    ``response``, the whole answer exactly as the plain call returns it
    (authoritative: a refusal has ``response.refusal_reason``), and the
    ``receipt``; no other chunk does.
    """

    text: str
    replace: bool = False
    response: predictor_pb2.ProcessResponse | None = None
    receipt: PrivateReceipt | None = None

    @property
    def final(self) -> bool:
        return self.response is not None


class StreamAssembler:
    """What to show of a streamed answer, frame by frame (sans-I/O).

    :meth:`add` takes each ``ProcessChunk`` frame and returns the text to
    show, if any; :meth:`finish`, once the stream ended whole, the last chunk
    with the answer. Fails closed: no answer, or a frame after the answer,
    is an error.
    """

    def __init__(self) -> None:
        self.shown = ""
        self._answer: predictor_pb2.ProcessResponse | None = None

    def add(self, frame_: predictor_pb2.ProcessChunk) -> StreamChunk | None:
        if self._answer is not None:
            raise UpstreamError("the predictor sent more after its answer")
        if frame_.HasField("response"):
            self._answer = frame_.response
            return None
        if not frame_.text:
            return None  # a padding frame
        self.shown += frame_.text
        return StreamChunk(frame_.text)

    def finish(self) -> StreamChunk:
        """The last chunk: what remains to show of the answer, or all of it to show instead."""
        answer = self._answer
        if answer is None:
            raise UpstreamError("the predictor did not answer")
        if answer.refusal_reason:
            return StreamChunk("", replace=True, response=answer)  # withdraws whatever was shown
        if answer.text.startswith(self.shown):
            return StreamChunk(answer.text[len(self.shown) :], response=answer)
        return StreamChunk(answer.text, replace=True, response=answer)


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

    def summarize_stream(self, chat: Chat, **options: Any) -> Iterator[StreamChunk]:
        """:meth:`PrivateProcessingClient.summarize_stream` as a plain iterator."""
        return self._iterate(self._client.summarize_stream(chat, **options))

    def suggest_rewrite_stream(
        self, draft: str, style: str = "polite", **options: Any
    ) -> Iterator[StreamChunk]:
        """:meth:`PrivateProcessingClient.suggest_rewrite_stream` as a plain iterator."""
        return self._iterate(self._client.suggest_rewrite_stream(draft, style, **options))

    def _iterate(self, stream: AsyncGenerator[StreamChunk, None]) -> Iterator[StreamChunk]:
        try:
            while True:
                try:
                    chunk = self._loop.run_until_complete(anext(stream))
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            self._loop.run_until_complete(stream.aclose())

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
    "StreamAssembler",
    "StreamChunk",
    "SyncPrivateProcessingClient",
    "release_proof_name",
]
