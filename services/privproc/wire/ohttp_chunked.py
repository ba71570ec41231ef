"""Chunked Oblivious HTTP messages (draft-ietf-ohai-chunked-ohttp-08) — sans-I/O.

A chunked request is RFC 9458's header (key id, KEM, KDF, AEAD ids, the
HPKE ``enc``) followed by chunks, each a QUIC varint length and one HPKE
ciphertext; a chunked response is the response nonce followed by chunks
sealed with AES-GCM under keys derived as in RFC 9458 §4.4. What the draft
says that matters here, and what this module checks:

- **Media types** ``message/ohttp-chunked-req`` / ``message/ohttp-chunked-res``;
  a successful answer to a chunked request MUST use the chunked response type.
  Requests and responses SHOULD carry ``Incremental: ?1`` (RFC 10036, the
  former draft-ietf-httpbis-incremental) so a relay forwards the content as
  it arrives: :data:`INCREMENTAL_FIELD`, :func:`incremental_requested`.
- **Labels.** The HPKE ``info`` is ``"message/bhttp chunked request" || 0 ||
  hdr``; the response secret is exported under ``"message/bhttp chunked
  response"``. They differ from RFC 9458's, so a chunked and a non-chunked
  message never open as each other.
- **Order.** A request chunk's nonce is HPKE's sequence number; a response
  chunk's is ``aead_nonce XOR counter``. A chunk moved, dropped, replayed or
  taken from another stream (another ``enc``, key or response nonce) does not
  authenticate.
- **Finality.** The last chunk has a zero length prefix, runs to the end of
  the stream and is sealed with the AAD ``"final"``; every other chunk has an
  empty AAD. A stream that ends without a final chunk is truncated, and a
  final chunk cut short or marked wrongly does not authenticate: the message
  is complete only after a final chunk opened with ``"final"`` (the draft's
  MUST for endpoints that need a whole message). Bytes after the final
  indicator are part of the final chunk, so a chunk "after the final" is a
  final chunk that does not authenticate.
- **Empty chunks.** A non-final chunk MUST NOT be empty, and a receiver MUST
  treat one as a decryption error; the final chunk may be empty.
- **Sizes.** Receivers MUST accept chunks of 2^14 bytes of plaintext and
  senders SHOULD NOT exceed that: :data:`DEFAULT_MAX_CHUNK` bounds both
  sides (a sealer may use less, an opener may accept more). A length prefix above the bound fails at once,
  before any byte of the chunk is buffered; the final chunk, whose length
  is only known at the end of the stream, is held to the same bound. A
  response MUST NOT use 256^Nn chunks; for AES-128-GCM the draft's
  security margin puts a message at no more than 2^30 bytes
  (:data:`DEFAULT_MAX_MESSAGE`, enforced by sealers and openers).
- **Length encodings** are not authenticated (the draft says so): any
  varint encoding of a length is accepted, and the AEAD decides.

Openers are push-style state machines in the h11 style: hand them bytes in
any split with ``receive_data``, say ``receive_eof`` at the end of the
stream, and call ``next_event`` until :data:`NEED_DATA`. Each non-final
chunk's plaintext comes out as soon as it authenticates; a failure raises a
:class:`ChunkedOhttpError` subclass and every later call raises again, so
nothing past the point of tampering is ever delivered. Work is linear in the
input: each byte is looked at a bounded number of times, and an opener
holds at most one incomplete chunk.

Delivered chunks are not yet a complete message: a caller that acts on them
before the final chunk must accept that the stream may still fail (the
draft's Security Considerations), and RFC 9458's replay caveats apply to
each chunk.

Errors never carry message bytes. Before the first request chunk has
authenticated, any failure to open is a :class:`ChunkedKeyRejectedError`
(RFC 9458 §5.3's one answer for key, suite and decryption failures: fetch
the key configuration again); after it, a chunk that does not open is a
:class:`ChunkAuthenticationError`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privproc.errors import CryptoError, LimitExceededError, PrivprocError, TruncatedError
from privproc.wire import hpke, varint
from privproc.wire.ohttp import (
    REQUEST_HEADER_SIZE,
    RESPONSE_NONCE_LEN,
    KeyConfig,
    KeyConfigRejectedError,
    Keyring,
    ResponseDecryptError,
    SymmetricSuite,
    request_header,
    response_keys,
)

__all__ = [
    "DEFAULT_MAX_CHUNK",
    "DEFAULT_MAX_MESSAGE",
    "END",
    "FINAL_AAD",
    "INCREMENTAL_FIELD",
    "INCREMENTAL_TRUE",
    "MEDIA_TYPE_REQUEST",
    "MEDIA_TYPE_RESPONSE",
    "NEED_DATA",
    "REQUEST_LABEL",
    "RESPONSE_LABEL",
    "Chunk",
    "ChunkAuthenticationError",
    "ChunkedKeyRejectedError",
    "ChunkedLimitError",
    "ChunkedOhttpError",
    "ChunkedResponseDecryptError",
    "ChunkedTruncatedError",
    "End",
    "Event",
    "NeedData",
    "RequestOpener",
    "RequestSealer",
    "ResponseOpener",
    "ResponseSealer",
    "incremental_requested",
]

MEDIA_TYPE_REQUEST = "message/ohttp-chunked-req"
MEDIA_TYPE_RESPONSE = "message/ohttp-chunked-res"

#: ``Incremental: ?1`` (RFC 10036): intermediaries should forward the content as it arrives.
INCREMENTAL_FIELD = "incremental"
INCREMENTAL_TRUE = "?1"

REQUEST_LABEL = b"message/bhttp chunked request"
RESPONSE_LABEL = b"message/bhttp chunked response"
#: The AAD that marks the final chunk; other chunks have an empty AAD.
FINAL_AAD = b"final"

#: Plaintext bytes per chunk: receivers MUST accept 2^14, senders SHOULD not exceed it.
DEFAULT_MAX_CHUNK = 1 << 14
#: Plaintext bytes per message: the draft's AES-128-GCM margin (2^-50 advantage, 2^20 messages).
DEFAULT_MAX_MESSAGE = 1 << 30

_NT = hpke.NT
_NN = hpke.NN
#: Response chunks MUST stay below 256^Nn: the counter is Nn bytes wide.
_MAX_RESPONSE_CHUNKS = 256**_NN


# --- errors -----------------------------------------------------------------


class ChunkedOhttpError(PrivprocError):
    """Anything a chunked OHTTP sealer or opener refuses; each subclass has its reason.

    Declares no reason of its own: each subclass takes its status from the
    generic error it also is (truncated, too large, crypto, ohttp_key).
    """


class ChunkedTruncatedError(ChunkedOhttpError, TruncatedError):
    """The stream ended before a final chunk (or inside the header or a chunk)."""


class ChunkedLimitError(ChunkedOhttpError, LimitExceededError):
    """A chunk or the message is larger than the opener accepts."""


class ChunkAuthenticationError(ChunkedOhttpError, CryptoError):
    """A chunk did not authenticate: altered, moved, replayed, spliced, mis-marked or empty."""


class ChunkedResponseDecryptError(ChunkAuthenticationError, ResponseDecryptError):
    """A response chunk did not authenticate (the client's side)."""


class ChunkedKeyRejectedError(ChunkedOhttpError, KeyConfigRejectedError):
    """The gateway cannot use the request's key, suite or ``enc`` (RFC 9458 §5.3)."""


# --- events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """The plaintext of one chunk that authenticated, in order; ``final`` for the last one."""

    data: bytes
    final: bool = False

    def __repr__(self) -> str:  # never print plaintext
        return f"Chunk(<{len(self.data)} bytes>, final={self.final})"


class NeedData:
    """No event until more of the stream (or its end) arrives."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


class End:
    """The final chunk was delivered: the message is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


NEED_DATA = NeedData()
END = End()

#: What an opener's ``next_event`` returns.
Event = Chunk | NeedData | End


# --- the Incremental field (RFC 10036) ----------------------------------------

# RFC 9651 Item: a Boolean bare item and parameters, whose values may be any bare item.
_KEY = r"[a-z*][a-z0-9_.*-]*"
_BARE = (
    r"(?:-?[0-9]{1,12}\.[0-9]{1,3}|-?[0-9]{1,15}|\"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\"\\])*\""
    r"|[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*|:[A-Za-z0-9+/=]*:|\?[01]|@-?[0-9]{1,15}"
    r"|%\"(?:[\x20\x21\x23\x24\x26-\x5b\x5d-\x7e]|%[0-9a-f]{2}|\\[\"\\])*\")"
)
_INCREMENTAL_ITEM = re.compile(rf"\?([01])(?:; *{_KEY}(?:={_BARE})?)*")


def incremental_requested(value: str | None) -> bool:
    """Whether an ``Incremental`` field value asks for incremental forwarding.

    The field is a Structured Field Item; only a Boolean counts, and a
    value of any other type is ignored (RFC 10036 §2), as are parameters.
    Several field lines (a List once combined) are not an Item: ignored.
    """
    if value is None:
        return False
    match = _INCREMENTAL_ITEM.fullmatch(value.strip(" "))
    return match is not None and match.group(1) == "1"


# --- sealing (both sides) ----------------------------------------------------


def _pieces(data: bytes, max_chunk: int) -> list[bytes]:
    return [data[i : i + max_chunk] for i in range(0, len(data), max_chunk)]


def _check_sizes(max_chunk: int, max_message: int) -> None:
    for value in (max_chunk, max_message):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError("chunk and message bounds must be positive integers")


class _Sealer:
    """Framing shared by both sealers: prefix once, length-prefixed chunks, the final chunk."""

    def __init__(self, prefix: bytes, max_chunk: int, max_message: int) -> None:
        _check_sizes(max_chunk, max_message)
        self._prefix = prefix
        self._max_chunk = max_chunk
        self._max_message = max_message
        self._sealed = 0
        self._started = False
        self._finished = False

    def seal(self, data: bytes) -> bytes:
        """Non-final chunks carrying ``data`` (split at the chunk bound), after the prefix if first.

        Empty ``data`` seals nothing: a non-final chunk MUST NOT be empty.
        """
        out = [self._start()]
        for piece in _pieces(bytes(data), self._max_chunk):
            sealed = self._seal_one(piece, final=False)
            out.append(varint.encode(len(sealed)) + sealed)
        return b"".join(out)

    def finish(self, data: bytes = b"") -> bytes:
        """The remaining chunks of the message, the last of them final (it may be empty)."""
        pieces = _pieces(bytes(data), self._max_chunk) or [b""]
        head = self.seal(b"".join(pieces[:-1]))
        final = self._seal_one(pieces[-1], final=True)
        self._finished = True
        return head + b"\x00" + final

    @property
    def finished(self) -> bool:
        return self._finished

    def _start(self) -> bytes:
        if self._finished:
            raise ValueError("the message is already finished")
        if self._started:
            return b""
        self._started = True
        return self._prefix

    def _seal_one(self, piece: bytes, *, final: bool) -> bytes:
        if self._finished:
            raise ValueError("the message is already finished")
        self._sealed += len(piece)
        if self._sealed > self._max_message:
            raise ChunkedLimitError("message exceeds limit")
        return self._aead(piece, FINAL_AAD if final else b"")

    def _aead(self, piece: bytes, aad: bytes) -> bytes:
        raise NotImplementedError


class RequestSealer(_Sealer):
    """The client's side of a chunked request: seals chunks as the request is produced.

    The first output starts with the request header; :meth:`finish` ends the
    message. :meth:`response_opener` opens the answer, whenever it comes.
    ``ephemeral_secret`` is for test vectors only.
    """

    def __init__(
        self,
        config: KeyConfig,
        *,
        suite: SymmetricSuite | None = None,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        max_message: int = DEFAULT_MAX_MESSAGE,
        ephemeral_secret: bytes | None = None,
    ) -> None:
        if suite is None:
            suite = config.supported_suite()
            if suite is None:
                raise KeyConfigRejectedError("no usable key configuration")
        header = request_header(config, suite)
        enc, self._ctx = hpke.setup_sender(
            config.public_key,
            REQUEST_LABEL + b"\x00" + header,
            suite=hpke.Suite(config.kem_id, suite.kdf_id, suite.aead_id),
            ephemeral_secret=ephemeral_secret,
        )
        super().__init__(header + enc, max_chunk, max_message)
        self._enc = enc

    def _aead(self, piece: bytes, aad: bytes) -> bytes:
        return self._ctx.seal(piece, aad)

    def response_opener(
        self, *, max_chunk: int = DEFAULT_MAX_CHUNK, max_message: int = DEFAULT_MAX_MESSAGE
    ) -> ResponseOpener:
        """An opener for the chunked response to this request."""
        secret = self._ctx.export(RESPONSE_LABEL, RESPONSE_NONCE_LEN)
        return ResponseOpener(self._enc, secret, max_chunk=max_chunk, max_message=max_message)


class ResponseSealer(_Sealer):
    """The gateway's side of a chunked response (from :meth:`RequestOpener.response_sealer`).

    The first output starts with the response nonce (fresh unless
    ``response_nonce`` is given, for test vectors only).
    """

    def __init__(
        self,
        enc: bytes,
        secret: bytes,
        *,
        response_nonce: bytes | None = None,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        nonce = secrets.token_bytes(RESPONSE_NONCE_LEN) if response_nonce is None else response_nonce
        if len(nonce) != RESPONSE_NONCE_LEN:
            raise ValueError("response nonce has the wrong length")
        key, aead_nonce = response_keys(secret, enc, nonce)
        super().__init__(nonce, max_chunk, max_message)
        self._aesgcm = AESGCM(key)
        self._nonce = int.from_bytes(aead_nonce, "big")
        self._counter = 0

    def _aead(self, piece: bytes, aad: bytes) -> bytes:
        if self._counter >= _MAX_RESPONSE_CHUNKS:  # pragma: no cover - 2^96 chunks
            raise ChunkedLimitError("too many chunks")
        nonce = (self._nonce ^ self._counter).to_bytes(_NN, "big")
        self._counter += 1
        return self._aesgcm.encrypt(nonce, piece, aad)


# --- opening (both sides) ------------------------------------------------------

_PREFIX, _LENGTH, _BODY, _FINAL, _DONE = range(5)


class _Opener:
    """The push-style framing state machine shared by both openers.

    States: the prefix (header or response nonce), then a chunk's length,
    then its body, until a zero length starts the final chunk, which runs
    to the end of the stream. Every chunk is opened as soon as it is whole.
    """

    def __init__(self, prefix_size: int, max_chunk: int, max_message: int) -> None:
        _check_sizes(max_chunk, max_message)
        if max_chunk < DEFAULT_MAX_CHUNK:
            raise ValueError("receivers must accept chunks of 2^14 bytes")
        self._prefix_size = prefix_size
        self._max_sealed = max_chunk + _NT
        self._max_message = max_message
        self._opened = 0
        self._buf = bytearray()
        self._state = _PREFIX
        self._want = 0
        self._eof = False
        self._error: ChunkedOhttpError | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Queue the next bytes of the stream, in whatever pieces they arrived."""
        self._check()
        if self._eof:
            raise ValueError("data after the end of the stream")
        self._buf += data
        if self._state == _FINAL and len(self._buf) > self._max_sealed:
            # The final chunk's length is only known at the end: never hold more than one chunk.
            self._error = ChunkedLimitError("chunk exceeds limit")
            self._buf.clear()
            raise self._error

    def receive_eof(self) -> None:
        """The stream has ended: the final chunk is complete (or the stream was cut short)."""
        self._check()
        self._eof = True

    def next_event(self) -> Event:
        """The next :class:`Chunk`, :data:`NEED_DATA` or :data:`END`; raises on any failure."""
        self._check()
        try:
            return self._step()
        except ChunkedOhttpError as err:
            self._error = err
            self._buf.clear()
            raise

    def feed(self, data: bytes | bytearray | memoryview) -> list[Chunk]:
        """:meth:`receive_data`, then every chunk that opens now.

        On failure the chunks opened by this call before it are lost with
        the exception; use :meth:`next_event` to see exactly where it stopped.
        """
        self.receive_data(data)
        return self._drain()

    def feed_eof(self) -> list[Chunk]:
        """:meth:`receive_eof`, then the remaining chunks (the final one last)."""
        self.receive_eof()
        return self._drain()

    @property
    def complete(self) -> bool:
        """Whether the final chunk has been delivered."""
        return self._state == _DONE and self._error is None

    def _drain(self) -> list[Chunk]:
        out: list[Chunk] = []
        while isinstance(event := self.next_event(), Chunk):
            out.append(event)
        return out

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _step(self) -> Event:
        while True:
            if self._state == _PREFIX:
                if len(self._buf) < self._prefix_size:
                    return self._need()
                prefix = bytes(self._buf[: self._prefix_size])
                del self._buf[: self._prefix_size]
                self._start(prefix)
                self._state = _LENGTH
            elif self._state == _LENGTH:
                if not self._buf or len(self._buf) < 1 << (self._buf[0] >> 6):
                    return self._need()
                length, size = varint.decode(self._buf)
                del self._buf[:size]
                if length == 0:
                    self._state = _FINAL
                    if len(self._buf) > self._max_sealed:
                        raise ChunkedLimitError("chunk exceeds limit")
                    continue
                if length > self._max_sealed:
                    raise ChunkedLimitError("chunk exceeds limit")
                if length <= _NT:
                    # An empty (or impossibly short) non-final chunk is a decryption error.
                    raise self._auth_error()
                self._want = length
                self._state = _BODY
            elif self._state == _BODY:
                if len(self._buf) < self._want:
                    return self._need()
                sealed = bytes(self._buf[: self._want])
                del self._buf[: self._want]
                self._state = _LENGTH
                return Chunk(self._open_counted(sealed, final=False), final=False)
            elif self._state == _FINAL:
                if not self._eof:
                    return NEED_DATA
                sealed = bytes(self._buf)
                self._buf.clear()
                if len(sealed) < _NT:
                    raise self._auth_error()
                plaintext = self._open_counted(sealed, final=True)
                self._state = _DONE
                return Chunk(plaintext, final=True)
            else:
                return END

    def _need(self) -> NeedData:
        if self._eof:
            raise ChunkedTruncatedError("stream ended before the final chunk")
        return NEED_DATA

    def _open_counted(self, sealed: bytes, *, final: bool) -> bytes:
        plaintext = self._open(sealed, FINAL_AAD if final else b"")
        if not plaintext and not final:  # pragma: no cover - ruled out by the length check
            raise self._auth_error()
        self._opened += len(plaintext)
        if self._opened > self._max_message:
            raise ChunkedLimitError("message exceeds limit")
        return plaintext

    def _start(self, prefix: bytes) -> None:
        raise NotImplementedError

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        raise NotImplementedError

    def _auth_error(self) -> ChunkedOhttpError:
        raise NotImplementedError


class RequestOpener(_Opener):
    """The gateway's side of a chunked request: each chunk's plaintext as it authenticates.

    Once the header is in (:attr:`header_received`), :meth:`response_sealer`
    gives the sealer for the answer, which may start before the request ends.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        super().__init__(REQUEST_HEADER_SIZE + hpke.NENC, max_chunk, max_message)
        self._keyring = keyring
        self._ctx: hpke.Context | None = None
        self._enc = b""
        self._any_opened = False

    @property
    def header_received(self) -> bool:
        return self._ctx is not None

    def _start(self, prefix: bytes) -> None:
        header, enc = prefix[:REQUEST_HEADER_SIZE], prefix[REQUEST_HEADER_SIZE:]
        try:
            self._ctx = self._keyring.recipient_context(header, enc, REQUEST_LABEL)
        except KeyConfigRejectedError:
            raise ChunkedKeyRejectedError("key configuration not acceptable") from None
        self._enc = enc

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        assert self._ctx is not None
        try:
            plaintext = self._ctx.open(sealed, aad)
        except CryptoError:
            raise self._auth_error() from None
        self._any_opened = True
        return plaintext

    def _auth_error(self) -> ChunkedOhttpError:
        if not self._any_opened:
            # Before anything opened, a wrong key and a bad chunk look alike (RFC 9458 §5.3).
            return ChunkedKeyRejectedError("key configuration not acceptable")
        return ChunkAuthenticationError("request chunk did not authenticate")

    def response_sealer(
        self,
        *,
        response_nonce: bytes | None = None,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> ResponseSealer:
        """The sealer for this request's chunked response (``response_nonce``: test vectors only)."""
        self._check()
        if self._ctx is None:
            raise ValueError("the request header has not arrived")
        secret = self._ctx.export(RESPONSE_LABEL, RESPONSE_NONCE_LEN)
        return ResponseSealer(
            self._enc, secret, response_nonce=response_nonce, max_chunk=max_chunk, max_message=max_message
        )


class ResponseOpener(_Opener):
    """The client's side of a chunked response (from :meth:`RequestSealer.response_opener`)."""

    def __init__(
        self,
        enc: bytes,
        secret: bytes,
        *,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        super().__init__(RESPONSE_NONCE_LEN, max_chunk, max_message)
        self._enc = enc
        self._secret = secret
        self._aesgcm: AESGCM | None = None
        self._nonce = 0
        self._counter = 0

    def _start(self, prefix: bytes) -> None:
        key, aead_nonce = response_keys(self._secret, self._enc, prefix)
        self._aesgcm = AESGCM(key)
        self._nonce = int.from_bytes(aead_nonce, "big")

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        assert self._aesgcm is not None
        if self._counter >= _MAX_RESPONSE_CHUNKS:  # pragma: no cover - 2^96 chunks
            raise ChunkedLimitError("too many chunks")
        nonce = (self._nonce ^ self._counter).to_bytes(_NN, "big")
        self._counter += 1
        try:
            return self._aesgcm.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise self._auth_error() from None

    def _auth_error(self) -> ChunkedOhttpError:
        return ChunkedResponseDecryptError("response chunk did not authenticate")
