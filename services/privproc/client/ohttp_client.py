"""The device side of Oblivious HTTP: keys from the CDN, requests via the relay.

The client fetches the gateway's key configurations from the key CDN (never
from the gateway itself: that would tell the gateway who is about to ask),
encapsulates a Binary HTTP request, sends it through the relay over HTTP or
gRPC, and opens the answer. A response that does not authenticate is an
error; nothing unauthenticated is ever returned.

With ``chunked`` (the default over HTTP), requests are chunked OHTTP
(draft-ietf-ohai-chunked-ohttp, ``Incremental: ?1``) and the answer is read
as it arrives (:meth:`OhttpClient.stream`): each piece of it is handed out
only once the chunk carrying it has authenticated, a tampered, reordered,
spliced or truncated answer raises at the first bad chunk, and nothing past
it is handed out. The whole-answer calls return only after the final chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import aiohttp

from privproc.client.refresh import SessionGuard, SessionTicket
from privproc.client.tokens import KeyConsistencyError, TokenWallet, WalletEmptyError
from privproc.client.transparency import fetch_proof, verifier_from_stack
from privproc.errors import (
    BadRequestError,
    ConfigError,
    DeadlineExceededError,
    TokenRefusedError,
    UpstreamError,
    WireError,
)
from privproc.ledger.checkpoints import CheckpointStore
from privproc.ledger.keyconsistency import KeyConfigHistory, StaleKeyConfigError
from privproc.runtime.cdn_publisher import ohttp_keys_proof_name
from privproc.runtime.http import anonymous_client_session
from privproc.runtime.ohttp_transport import GrpcTransport, HttpTransport, Transport
from privproc.stackfile import StackFile
from privproc.wire import bhttp, ohttp, ohttp_chunked, padding
from privproc.wire import privacypass as pp
from privproc.wire.entries import OhttpKeyConfigEntry
from privproc.wire.session import TIMEOUT_HEADER, format_timeout
from privproc.wire.tlogclient import EntryMismatchError, TransparencyVerifier, Verified, check_validity

#: Re-fetch keys at most this often unless the CDN says otherwise (seconds).
DEFAULT_KEYS_TTL = 300.0
MAX_KEYS_BYTES = 64 << 10


@dataclass(frozen=True)
class Receipt:
    """What the client checked for one request (printed by the CLI)."""

    keys_source: str
    keys_sha256: str
    ohttp_key_id: int
    hpke_suite: str
    relay_transport: str
    response_authenticated: bool
    inner_status: int
    #: Privacy Pass token type spent on this request, if any.
    token_type: int | None = None
    #: Where the key configuration sits in the transparency log, and the
    #: witnessed checkpoint that proves it (None without a ledger).
    ohttp_key_log_index: int | None = None
    checkpoint: dict[str, Any] | None = None
    witnesses: tuple[str, ...] = ()
    #: Where the spent token's issuer key sits in the log, if checked.
    token_key_log_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """One request's time budget: ``seconds`` in all, ending at ``expires`` on the event loop's clock.

    It travels with every inner request of the private request as
    ``privproc-timeout-ms`` (the time left when it is sent), and it is
    enforced here too (:meth:`run`): whatever passes it raises
    :class:`~privproc.errors.DeadlineExceededError` naming ``seconds``: the
    caller's own deadline, never anything of the request.
    """

    seconds: float
    expires: float

    @classmethod
    def start(cls, seconds: float) -> Deadline:
        """A budget of ``seconds`` from now (in a running event loop)."""
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
            raise ConfigError("a deadline is a positive number of seconds")
        return cls(float(seconds), asyncio.get_running_loop().time() + seconds)

    def remaining(self) -> float:
        return self.expires - asyncio.get_running_loop().time()

    def header(self) -> tuple[str, str]:
        """The timeout field an inner request carries: the time left now."""
        return TIMEOUT_HEADER, format_timeout(self.remaining())

    def exceeded(self) -> DeadlineExceededError:
        return DeadlineExceededError(f"deadline of {self.seconds:g} s exceeded")

    async def run(self, awaitable: Awaitable[T]) -> T:
        """``awaitable``'s result, or :meth:`exceeded` once the deadline passes (it is cancelled)."""
        scope = asyncio.timeout_at(self.expires)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise self.exceeded() from None
            raise


@dataclass
class _CachedKeys:
    config: ohttp.KeyConfig
    suite: ohttp.SymmetricSuite
    sha256: str
    expires: float
    logged: Verified | None = None


class OhttpClient:
    """Sends Binary HTTP requests to the gateway through the relay."""

    def __init__(
        self,
        *,
        keys_url: str,
        transport: Transport,
        transport_name: str,
        origin: str,
        proofs_url: str | None = None,
        transparency: TransparencyVerifier | None = None,
        local_address: str | None = None,
        chunked: bool = False,
    ) -> None:
        """With ``transparency``, a key configuration is used only with a proof it is logged.

        ``local_address``: the source address of its own HTTP connections (key CDN, log tiles).
        ``chunked``: send chunked OHTTP and read the answer as it arrives (``transport.stream``).
        """
        self.chunked = chunked
        self.keys_url = keys_url
        self.proofs_url = proofs_url
        self.transparency = transparency
        #: The log's key configurations as far as this client has read them (set by whoever follows
        #: the log, e.g. ``ReleaseRegistry.key_configs``): only the newest one valid now is used.
        self.key_history: KeyConfigHistory | None = None
        self.origin = origin
        self._transport = transport
        self._transport_name = transport_name
        self._keys: _CachedKeys | None = None
        self._challenge: pp.Challenge | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._session = anonymous_client_session(10, local_address=local_address)
        #: Sessions vs. log/CDN fetches: nothing but the relay while a session is open (refresh.py).
        self.guard = SessionGuard()
        if transparency is not None:
            transparency.guard = self.guard

    @classmethod
    def from_stack(
        cls,
        stack: StackFile,
        *,
        transport: Literal["http", "grpc"] = "http",
        checkpoints: CheckpointStore | None = None,
        local_address: str | None = None,
        chunked: bool | None = None,
    ) -> OhttpClient:
        """A client for a local stack; it verifies key transparency when the stack has a ledger.

        ``local_address`` is the source address of the device's connections to the relay, the
        key CDN and the log (a device with several addresses picks one); HTTP transport only.
        ``chunked``: chunked OHTTP, streamed (default: over HTTP yes; over gRPC it is not built).
        """
        sender: Transport
        if chunked is None:
            chunked = transport == "http"
        if transport == "grpc":
            if local_address is not None:
                raise ConfigError("a source address can be chosen over HTTP only")
            if chunked:
                raise ConfigError("chunked OHTTP goes to the relay over HTTP only")
            sender = GrpcTransport(stack.relay.grpc, "relay")
        else:
            sender = HttpTransport(stack.relay.ohttp_url, local_address=local_address)
        made = verifier_from_stack(stack, checkpoints or CheckpointStore(None))
        client = cls(
            keys_url=stack.cdn.keys_url,
            transport=sender,
            transport_name=transport,
            origin=stack.gateway.origin,
            proofs_url=stack.cdn.proofs_url,
            transparency=made[0] if made else None,
            local_address=local_address,
            chunked=chunked,
        )
        if made:
            client._closers.append(made[1])
        return client

    @property
    def session(self) -> aiohttp.ClientSession:
        """The client's anonymous HTTP session (key CDN fetches)."""
        return self._session

    async def close(self) -> None:
        await self._transport.close()
        await self._session.close()
        for closer in self._closers:
            await closer()

    async def __aenter__(self) -> OhttpClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _fetch_keys(self) -> _CachedKeys:
        self.guard.check_outside()  # keys are fetched before a session opens, never inside one
        try:
            async with self._session.get(self.keys_url, headers={"Accept": ohttp.MEDIA_TYPE_KEYS}) as resp:
                body = await resp.content.read(MAX_KEYS_BYTES + 1)
                status, content_type = resp.status, resp.content_type
                max_age = _max_age(resp.headers.get("Cache-Control", ""))
        except (aiohttp.ClientError, TimeoutError):
            raise UpstreamError("key CDN unavailable") from None
        if status != 200 or content_type != ohttp.MEDIA_TYPE_KEYS or len(body) > MAX_KEYS_BYTES:
            raise UpstreamError("key CDN gave no key configuration")
        config, suite = ohttp.select_key_config(ohttp.decode_key_config_list(body))
        ttl = DEFAULT_KEYS_TTL if max_age is None else min(DEFAULT_KEYS_TTL, float(max_age))
        digest = hashlib.sha256(body).hexdigest()
        logged = None
        if self.transparency is not None:
            logged = await self._check_logged(body, digest, config)
        return _CachedKeys(config, suite, digest, time.monotonic() + ttl, logged)

    async def _check_logged(self, body: bytes, digest: str, config: ohttp.KeyConfig) -> Verified:
        """The key configuration must be logged, exactly as served, for this key id, valid now."""
        assert self.transparency is not None and self.proofs_url is not None
        proof = await fetch_proof(
            self._session, self.proofs_url, ohttp_keys_proof_name(body), "key configuration"
        )
        verified = await self.transparency.verify_proof(proof)
        entry = verified.entry
        if (
            not isinstance(entry, OhttpKeyConfigEntry)
            or entry.sha256 != digest
            or entry.key_id != config.key_id
        ):
            raise EntryMismatchError("logged entry is not this key configuration")
        check_validity(entry, time.time())
        if self.key_history is not None:  # an older, still valid key would single this client out
            self.key_history.check(verified.index, entry, time.time())
        return verified

    def keys_due(self, min_ttl: float = 0.0) -> bool:
        """Whether :meth:`keys` would fetch now (none cached, expiring within ``min_ttl``, superseded)."""
        cached = self._keys
        return (
            cached is None
            or time.monotonic() + min_ttl >= cached.expires
            or (
                cached.logged is not None
                and self.key_history is not None
                and self.key_history.newer_live(cached.logged.index, cached.sha256, time.time()) is not None
            )
        )

    async def keys(self, *, refresh: bool = False, min_ttl: float = 0.0) -> _CachedKeys:
        """The key configuration to use, fetched again if it expires within ``min_ttl`` seconds."""
        if refresh or self.keys_due(min_ttl):
            try:
                self._keys = await self._fetch_keys()
            except StaleKeyConfigError:
                # The gateway logs a new key just before the CDN serves it: ask once more, then refuse.
                self._keys = await self._fetch_keys()
        assert self._keys is not None
        return self._keys

    async def request(
        self, request: bhttp.Request, *, keys: _CachedKeys | None = None, deadline: Deadline | None = None
    ) -> tuple[bhttp.Response, Receipt]:
        """Send ``request``; returns the gateway's inner response and a receipt.

        If the gateway no longer accepts the key (it rotated), the keys are
        fetched again once and the request is sent again under the new key —
        unless ``keys`` pins them (inside a session: nothing is fetched then).
        ``deadline``: the request carries the time left (``privproc-timeout-ms``),
        and a whole-message exchange gets it as its total timeout.
        """
        if deadline is not None:
            request = with_deadline(request, deadline)
        if self.chunked:
            return await self._whole(request, keys)
        # Zero-padded to a size bucket (RFC 9292, Section 3.8): the relay sees the bucket, not the length.
        encoded = padding.pad_with_zeros(bhttp.encode_request(request), padding.MESSAGE_BUCKETS)
        timeout = deadline.remaining() if deadline is not None else None
        if keys is not None:
            return await self._attempt(encoded, keys, timeout)
        try:
            return await self._attempt(encoded, await self.keys(), timeout)
        except ohttp.KeyConfigRejectedError:
            return await self._attempt(encoded, await self.keys(refresh=True), timeout)

    def stream(
        self, request: bhttp.Request, *, keys: _CachedKeys | None = None
    ) -> AsyncGenerator[bhttp.Event, None]:
        """Send ``request`` as chunked OHTTP; the answer's Binary HTTP events as they authenticate.

        Events: the :class:`~privproc.wire.bhttp.ResponseHead` (informational
        responses before it), :class:`~privproc.wire.bhttp.ContentChunk` s, and
        last the :class:`~privproc.wire.bhttp.EndOfMessage`, which comes only
        after the final chunk authenticated: until then, the answer may still
        fail (and then nothing more comes). A key the gateway no longer
        accepts is fetched again once, as for :meth:`request`, unless ``keys``
        pins it. Close the generator (``contextlib.aclosing``) if it is not read
        to the end.
        """
        return self._stream(request, keys, [])

    async def _stream(
        self, request: bhttp.Request, keys: _CachedKeys | None, used: list[_CachedKeys]
    ) -> AsyncGenerator[bhttp.Event, None]:
        """:meth:`stream`; appends the keys it used (last: the ones that answered) to ``used``."""
        # Zero-padded to a size bucket (RFC 9292, Section 3.8): the relay sees the bucket, not the length.
        encoded = padding.pad_with_zeros(
            bhttp.encode_request(request, indeterminate=True), padding.MESSAGE_BUCKETS
        )
        pinned = keys is not None
        used.append(keys if keys is not None else await self.keys())
        attempt = self._chunked_attempt(encoded, used[-1])
        async with contextlib.aclosing(attempt):
            try:
                first = await anext(attempt)
            except ohttp.KeyConfigRejectedError:
                if pinned:
                    raise
            else:
                yield first
                async for event in attempt:
                    yield event
                return
        used.append(await self.keys(refresh=True))
        retry = self._chunked_attempt(encoded, used[-1])
        async with contextlib.aclosing(retry):
            async for event in retry:
                yield event

    async def _chunked_attempt(self, encoded: bytes, keys: _CachedKeys) -> AsyncGenerator[bhttp.Event, None]:
        sealer = ohttp_chunked.RequestSealer(keys.config, suite=keys.suite)
        opener = sealer.response_opener()
        decoder = bhttp.MessageDecoder(response=True)
        step = ohttp_chunked.DEFAULT_MAX_CHUNK

        async def body() -> AsyncIterator[bytes]:
            # One chunk per piece of the padded request: sizes follow from its bucket alone.
            pieces = [encoded[i : i + step] for i in range(0, len(encoded), step)] or [b""]
            for piece in pieces[:-1]:
                yield sealer.seal(piece)
            yield sealer.finish(pieces[-1])

        async with contextlib.aclosing(self._transport.stream(body())) as answer:
            async for piece in answer:
                opener.receive_data(piece)
                for event in _opened(opener, decoder):
                    yield event
        opener.receive_eof()  # a stream that ended before its final chunk raises here
        for event in _opened(opener, decoder):
            yield event

    async def _whole(
        self, request: bhttp.Request, keys: _CachedKeys | None
    ) -> tuple[bhttp.Response, Receipt]:
        """:meth:`request` over chunked OHTTP: the answer whole, once its final chunk authenticated."""
        used: list[_CachedKeys] = []
        head: bhttp.ResponseHead | None = None
        content = bytearray()
        trailers: bhttp.Fields = ()
        async with contextlib.aclosing(self._stream(request, keys, used)) as events:
            async for event in events:
                if isinstance(event, bhttp.ResponseHead):
                    head = event
                elif isinstance(event, bhttp.ContentChunk):
                    content += event.data
                elif isinstance(event, bhttp.EndOfMessage):
                    trailers = event.trailers
        if head is None:  # pragma: no cover - the decoder gives the head before the end
            raise UpstreamError("gateway answered with a malformed response")
        response = bhttp.Response(head.status, head.headers, bytes(content), trailers)
        return response, self._receipt(used[-1], response.status)

    async def _attempt(
        self, encoded: bytes, keys: _CachedKeys, timeout_seconds: float | None = None
    ) -> tuple[bhttp.Response, Receipt]:
        payload, context = ohttp.encapsulate_request(keys.config, encoded, suite=keys.suite)
        answer = await self._transport.send(payload, timeout_seconds=timeout_seconds)
        inner = context.decapsulate_response(answer)  # raises unless it authenticates
        try:
            response = bhttp.decode_response(inner)
        except WireError as err:
            raise UpstreamError("gateway answered with a malformed response") from err
        return response, self._receipt(keys, response.status)

    def _receipt(self, keys: _CachedKeys, status: int) -> Receipt:
        logged = keys.logged
        return Receipt(
            keys_source=self.keys_url,
            keys_sha256=keys.sha256,
            ohttp_key_id=keys.config.key_id,
            hpke_suite="DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM",
            relay_transport=self._transport_name,
            response_authenticated=True,
            inner_status=status,
            ohttp_key_log_index=logged.index if logged else None,
            checkpoint=(
                {
                    "origin": logged.checkpoint.origin,
                    "size": logged.checkpoint.size,
                    "root": logged.checkpoint.root.hex(),
                }
                if logged
                else None
            ),
            witnesses=logged.witnesses if logged else (),
        )

    async def session_request(
        self,
        wallet: TokenWallet,
        content: bytes = b"",
        *,
        keys: _CachedKeys | None = None,
        ticket: SessionTicket | None = None,
        deadline: Deadline | None = None,
    ) -> tuple[bhttp.Response, Receipt]:
        """``POST /v1/sessions`` with a Privacy Pass token, handling the 401 challenge flow.

        The gateway's challenge is learnt once (a 401 answer to a request
        without a token) and remembered; the wallet checks its key against
        the issuer's published keys before buying tokens for it. A 401 to a
        request that carried a token (the issuer rotated its key) is retried
        once with a token for the new challenge.

        ``keys`` pins the key configuration (no fetch); ``ticket`` is opened
        right before the request that carries the token: from then on the
        session is open and the client talks to nothing but the relay.
        ``deadline``: each request carries the time left (:meth:`request`).
        """
        # The wallet buys no token while a request is in flight (nor soon after): see tokens.py.
        async with wallet.request_scope():
            return await self._session_request_flow(wallet, content, keys, ticket, deadline)

    async def _session_request_flow(
        self,
        wallet: TokenWallet,
        content: bytes,
        keys: _CachedKeys | None,
        ticket: SessionTicket | None,
        deadline: Deadline | None,
    ) -> tuple[bhttp.Response, Receipt]:
        fresh = False  # whether self._challenge was learnt during this call
        for _ in range(4):
            if self._challenge is None:
                response, receipt = await self.request(
                    self._session_request(content, None), keys=keys, deadline=deadline
                )
                if response.status != 401:
                    return response, receipt
                self._challenge, fresh = _pick_challenge(response), True
            try:
                spent = await wallet.spend(self._challenge)
            except (KeyConsistencyError, BadRequestError, WalletEmptyError):
                if fresh:
                    raise  # a challenge just received is refused: never retried
                # A remembered challenge whose key rotated out: learn the current one.
                self._challenge = None
                continue
            if ticket is not None:
                await ticket.open()
            response, receipt = await self.request(
                self._session_request(content, spent.header), keys=keys, deadline=deadline
            )
            if response.status != 401:
                return response, dataclasses.replace(
                    receipt, token_type=spent.token.token_type, token_key_log_index=spent.log_index
                )
            self._challenge, fresh = _pick_challenge(response), True
        raise TokenRefusedError("the gateway refused every token")

    def _session_request(self, content: bytes, authorization: str | None) -> bhttp.Request:
        headers: tuple[tuple[str, str], ...] = (("content-type", "application/octet-stream"),)
        if authorization is not None:
            headers += (("authorization", authorization),)
        return bhttp.Request("POST", "https", self.origin, "/v1/sessions", headers=headers, content=content)

    async def health(self) -> tuple[bhttp.Response, Receipt]:
        """The gateway's own health resource, privately."""
        return await self.request(bhttp.Request("GET", "https", self.origin, "/v1/health"))


def with_deadline(request: bhttp.Request, deadline: Deadline) -> bhttp.Request:
    """``request`` carrying the time left of ``deadline`` (``privproc-timeout-ms``)."""
    headers = tuple(h for h in request.headers if h[0] != TIMEOUT_HEADER)
    return dataclasses.replace(request, headers=(*headers, deadline.header()))


def _opened(opener: ohttp_chunked.ResponseOpener, decoder: bhttp.MessageDecoder) -> Iterator[bhttp.Event]:
    """The Binary HTTP events of each chunk ``opener`` can open now, chunk by chunk; raises at the
    first bad chunk, after the events of the chunks before it."""
    while isinstance(chunk := opener.next_event(), ohttp_chunked.Chunk):
        try:
            decoder.receive_data(chunk.data)
            if chunk.final:
                decoder.receive_eof()
            events = decoder.events()
        except WireError as err:
            raise UpstreamError("gateway answered with a malformed response") from err
        yield from events


def _pick_challenge(response: bhttp.Response) -> pp.Challenge:
    """The challenge to answer: publicly verifiable type 0x0002 first."""
    challenges = pp.parse_www_authenticate(response.header("www-authenticate") or "")
    for token_type in (pp.TOKEN_TYPE_BLIND_RSA, pp.TOKEN_TYPE_VOPRF):
        for challenge in challenges:
            if challenge.challenge.token_type == token_type:
                return challenge
    raise TokenRefusedError("the gateway offered no usable token challenge")


def _max_age(cache_control: str) -> int | None:
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        if name.lower() == "max-age" and value.isdigit():
            return int(value)
    return None
