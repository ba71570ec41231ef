"""Private Processing from the device: summarise a chat, suggest a rewrite — verified end to end.

One request is one RA-TLS session with one predictor CVM, carried inside
OHTTP through the relay and the gateway:

1. keys: the OHTTP key configuration is checked against the log (as for any request);
2. ``POST /v1/sessions`` with a Privacy Pass token and the TLS ClientHello
   (a fresh nonce in its SNI); the answer is the CVM's TLS flight;
3. the device checks the CVM's certificate: its SEV-SNP evidence (signature,
   chain, policy), REPORT_DATA binding the nonce and the certificate's key,
   and a proof that the measurement is a logged ``cvm-release`` — and only
   then releases its TLS Finished and the request, in
   ``POST /v1/sessions/{handle}``;
4. the response is read from TLS; the CVM drops the session.

Any failed check raises a typed error and nothing further is sent.

What a client remembers between requests, to keep the privacy tax small:
AMD certificate chains it verified (:class:`ChainCache`: the report's own
signature, its binding to this handshake and every policy check still run
per session) and, for :data:`RELEASE_PROOF_TTL` seconds, the logged release
that admitted a measurement (an inclusion proof stays true: the log only
grows). Nothing of a request is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from privproc.attestation.appraisal import ChainCache, SnpPolicy
from privproc.attestation.measure import release_proof_name
from privproc.attestation.ratls import AppraisalVerifier, RaTlsClient
from privproc.client.ohttp_client import OhttpClient
from privproc.client.tokens import TokenWallet
from privproc.client.transparency import (
    CheckpointStore,
    EntryMismatchError,
    TransparencyVerifier,
    Verified,
    fetch_proof,
)
from privproc.errors import BadRequestError, ConfigError, UpstreamError
from privproc.gateway.routes import SESSION_HEADER
from privproc.ledger.entries import KIND_CVM_RELEASE
from privproc.predictor.protocol import Decoder, frame
from privproc.stackfile import StackFile
from privproc.v1 import predictor_pb2
from privproc.wire import bhttp

MAX_MESSAGES = 200
#: How long a verified release proof admits its measurement before it is fetched and checked again.
RELEASE_PROOF_TTL = 300.0
#: Measurements whose release proofs are remembered at once (a fleet runs a few releases).
MAX_CACHED_RELEASES = 16


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
        proofs_url: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if policy.measurements is not None:
            raise ValueError("measurements come from the log, not the policy")
        self.ohttp = ohttp
        self.wallet = wallet
        self.policy = policy
        self.transparency = transparency
        self.proofs_url = proofs_url
        self.chains = ChainCache()
        self._clock = clock  # for release-proof expiry
        self._releases: dict[bytes, tuple[float, Verified]] = {}

    @classmethod
    def from_stack(
        cls,
        stack: StackFile,
        *,
        transport: Literal["http", "grpc"] = "http",
        checkpoints: CheckpointStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> PrivateProcessingClient:
        """A client of a local stack: its relay, key CDN, ledger and simulated TEE's root.

        The development root is trusted only because ``stack.json`` names it:
        a production client pins AMD's roots (:class:`SnpPolicy` defaults).
        """
        if stack.development_root is None:
            raise ConfigError("stack.json names no attestation root")
        ohttp = OhttpClient.from_stack(stack, transport=transport, checkpoints=checkpoints)
        if ohttp.transparency is None:
            raise ConfigError("stack.json names no transparency log: releases cannot be checked")
        wallet = TokenWallet.from_stack(stack, transparency=ohttp.transparency)
        return cls(
            ohttp,
            wallet,
            policy=SnpPolicy().with_development_root(stack.development_root),
            transparency=ohttp.transparency,
            proofs_url=stack.cdn.proofs_url,
            clock=clock,
        )

    async def close(self) -> None:
        await self.wallet.close()
        await self.ohttp.close()

    async def __aenter__(self) -> PrivateProcessingClient:
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
        verifier = AppraisalVerifier(self.policy, chains=self.chains)
        tls = RaTlsClient(verifier)
        opened, key_receipt = await self.ohttp.session_request(self.wallet, tls.start())
        if opened.status != 201:
            raise UpstreamError("the gateway did not open a session")
        handle = opened.header(SESSION_HEADER) or ""
        finished = tls.receive(opened.content)  # verifies the evidence; raises before anything else
        claims = verifier.appraisal.claims if verifier.appraisal else None
        if claims is None:
            raise UpstreamError("no appraisal")
        release = await self._release(claims.measurement)
        # Every check passed: only now does the request leave the device.
        records = finished + tls.send_application_data(frame(request))
        answered, _ = await self.ohttp.request(
            bhttp.Request(
                "POST",
                "https",
                self.ohttp.origin,
                "/v1/sessions/" + handle,
                headers=(("content-type", "application/octet-stream"),),
                content=records,
            )
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
        )
        return responses[0], receipt

    async def _release(self, measurement: bytes) -> Verified:
        """The logged ``cvm-release`` that admits ``measurement`` (typed error if none)."""
        now = self._clock()
        cached = self._releases.get(measurement)
        if cached is not None and now < cached[0]:
            return cached[1]
        proof = await fetch_proof(
            self.ohttp.session, self.proofs_url, release_proof_name(measurement), "release"
        )
        verified = await self.transparency.verify_proof(proof)
        entry = verified.entry
        if entry["kind"] != KIND_CVM_RELEASE or measurement.hex() not in entry["measurements"]:
            raise EntryMismatchError("logged entry is not a release of this measurement")
        for stale in [m for m, (expires, _) in self._releases.items() if expires <= now]:
            del self._releases[stale]
        if len(self._releases) >= MAX_CACHED_RELEASES:
            del self._releases[min(self._releases, key=lambda m: self._releases[m][0])]
        self._releases[measurement] = (now + RELEASE_PROOF_TTL, verified)
        return verified


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
