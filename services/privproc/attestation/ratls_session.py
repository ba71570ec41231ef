"""RA-TLS sessions: in-memory TLS 1.3 state machines over bytes, the device's and the CVM's.

Both ends are sans-I/O state machines over bytes (like h11): :class:`RaTlsClient`
(the device) and :class:`RaTlsServer` (the predictor CVM) each own an
``ssl.SSLObject`` over two ``ssl.MemoryBIO`` and return the TLS records to
send; the caller carries them (inside OHTTP, through the gateway). Two
exchanges make a session::

    client.start()                      -> ClientHello, the nonce in SNI (~520 bytes)
    server.receive(ClientHello)         -> ServerHello .. Certificate, CertificateVerify, Finished (~6 KiB)
    client.receive(server flight)       -> client Finished (only after the evidence verified)
    client.send_application_data(req)   -> request records (sent with the Finished)
    server.receive(Finished + request)  -> b"" (no session tickets); read_application_data() == req
    server.send_application_data(resp)  -> response records
    client.receive(response records)    -> b""; client.read_application_data() == resp

The protocol, its certificate and its errors are in :mod:`privproc.attestation.ratls`.

Ordering on the client
----------------------
With TLS 1.3 the client's handshake completes on the server's first flight:
``do_handshake()`` returns and the client Finished waits in the outgoing
``MemoryBIO``. :meth:`RaTlsClient.receive` reads that BIO only after
``getpeercert(binary_form=True)`` of the completed handshake parsed, was
self-signed by its own key, currently valid, carried evidence, and
``verify(evidence, expected_report_data)`` returned. Application data is
refused (:class:`NotVerifiedError`) until then. On any failure the client
drops its TLS state without reading the BIO, so nothing more leaves it (the
server never completes its handshake), and every later call raises
:class:`SessionFailedError`.
"""

from __future__ import annotations

import datetime
import enum
import functools
import hashlib
import secrets
import ssl
import weakref
from collections.abc import Callable
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from privproc.attestation.evidence import Evidence, ReleaseStaple
from privproc.attestation.ratls import (
    MAX_HANDSHAKE_BYTES,
    NONCE_SIZE,
    SESSION_CURVE,
    CertificateError,
    HandshakeIncompleteError,
    NotVerifiedError,
    ServerNameError,
    SessionClosedError,
    SessionFailedError,
    SessionStateError,
    TlsProtocolError,
    build_certificate,
    load_ephemeral_chain,
    nonce_from_server_name,
    read_certificate,
    report_data_for,
    server_name_for,
    spki_der,
)
from privproc.attestation.sources import EvidenceSource

_READ_CHUNK = 64 << 10


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _tls13(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_TICKET
    return context


def _server_context() -> ssl.SSLContext:
    context = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.num_tickets = 0  # no resumption: every session shows its certificate
    return context


@functools.cache
def _client_context() -> ssl.SSLContext:
    """The one client context: never changed after this, so every session may share it."""
    context = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    # The certificate is authenticated by its evidence, not by a CA or a host name.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _State(enum.Enum):
    NEW = "new"
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"  # client: the evidence verified
    FAILED = "failed"
    CLOSED = "closed"


class _Session:
    """What both ends share: the TLS object over two memory BIOs, the state, and the plaintext received."""

    def __init__(self, state: _State) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj: ssl.SSLObject | None = None
        self._state = state
        self._handshake_bytes = 0
        self._plaintext = bytearray()
        self._peer_closed = False

    @property
    def peer_closed(self) -> bool:
        """The peer sent close_notify."""
        return self._peer_closed

    def _live(self) -> ssl.SSLObject:
        if self._state is _State.FAILED:
            raise SessionFailedError("the session failed")
        if self._state is _State.CLOSED or self._sslobj is None:
            raise SessionClosedError("the session is closed")
        return self._sslobj

    def _drop(self) -> None:
        self._sslobj = None
        self._plaintext.clear()

    def _fail(self) -> None:
        self._drop()
        self._state = _State.FAILED

    def _count_handshake(self, data: bytes) -> None:
        self._handshake_bytes += len(data)
        if self._handshake_bytes > MAX_HANDSHAKE_BYTES:
            self._fail()
            raise TlsProtocolError("handshake too large")

    def _read_records(self, sslobj: ssl.SSLObject) -> bytes:
        """Decrypt every complete record received; return the records to send back."""
        try:
            while True:
                try:
                    chunk = sslobj.read(_READ_CHUNK)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    self._peer_closed = True
                    break
                if not chunk:  # Python reports a received close_notify as b""
                    self._peer_closed = True
                    break
                self._plaintext += chunk
        except ssl.SSLError as err:
            self._fail()
            raise TlsProtocolError("TLS record failed") from err
        return self._outgoing.read()

    def _encrypt(self, sslobj: ssl.SSLObject, data: bytes) -> bytes:
        view = memoryview(data)
        while view:
            view = view[sslobj.write(view) :]
        return self._outgoing.read()

    def read_application_data(self) -> bytes:
        """The plaintext the peer sent since the last call (``b""`` before the handshake completed)."""
        self._live()
        data = bytes(self._plaintext)
        self._plaintext.clear()
        return data

    def close(self) -> bytes:
        """close_notify records once established (else ``b""``: nothing unverified is sent); drops state."""
        if self._state is _State.FAILED:
            raise SessionFailedError("the session failed")
        if self._state is _State.CLOSED or self._sslobj is None:
            return b""
        records = b""
        if self._state is _State.ESTABLISHED:
            try:
                self._sslobj.unwrap()
            except ssl.SSLWantReadError:  # waits for the peer's close_notify, which we do not need
                records = self._outgoing.read()
            except ssl.SSLError:
                pass
            else:
                records = self._outgoing.read()
        self._drop()
        self._state = _State.CLOSED
        return records


# --- server -----------------------------------------------------------------------------------


class StaplingSource(EvidenceSource, Protocol):
    """An evidence source that also has its release's staple (:class:`ReleaseStaple`), or None yet."""

    def release_staple(self) -> ReleaseStaple | None: ...


#: The servers whose handshake the shared hello context runs, by their SSL object (weakly both ways:
#: a session dropped mid-handshake leaves nothing behind).
_SERVERS: weakref.WeakKeyDictionary[ssl.SSLObject, weakref.ref[RaTlsServer]] = weakref.WeakKeyDictionary()


def _server_name_callback(
    sslobj: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
) -> int | None:
    """The hello context's SNI callback: hands the ClientHello's name to the session it belongs to."""
    ref = _SERVERS.get(sslobj)
    server = ref() if ref is not None else None
    if server is None:  # no live session owns this connection: nothing to present
        return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR.value
    return server._on_server_name(sslobj, server_name, context)


@functools.cache
def _hello_context() -> ssl.SSLContext:
    """The context every server connection starts in, shared: it holds no certificate and never changes.

    Its SNI callback moves the connection to the session's own context (its
    fresh key and certificate) before anything is sent, so sharing it shares
    nothing a session presents; it saves building one ``SSLContext`` (~0.25 ms)
    per handshake.
    """
    context = _server_context()
    context.sni_callback = _server_name_callback
    return context


class RaTlsServer(_Session):
    """The CVM end: presents a per-session certificate carrying evidence bound to the client's nonce.

    When ``source`` also has ``release_staple()`` (:class:`StaplingSource`), the
    certificate carries the staple it returns at the handshake.
    """

    def __init__(self, source: EvidenceSource) -> None:
        super().__init__(_State.HANDSHAKING)
        self._source = source
        self._staple: Callable[[], ReleaseStaple | None] | None = getattr(source, "release_staple", None)
        self._sslobj = _hello_context().wrap_bio(self._incoming, self._outgoing, server_side=True)
        _SERVERS[self._sslobj] = weakref.ref(self)
        self._session_ready = False
        self._callback_error: Exception | None = None

    @property
    def handshake_complete(self) -> bool:
        return self._state is _State.ESTABLISHED

    def _make_certificate(self, key: ec.EllipticCurvePrivateKey, evidence: Evidence) -> x509.Certificate:
        """The certificate to present (tests override it to present forged ones)."""
        return build_certificate(key, evidence, staple=self._staple() if self._staple is not None else None)

    def _on_server_name(
        self, sslobj: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext
    ) -> int | None:
        try:
            nonce = nonce_from_server_name(server_name)
            key = ec.generate_private_key(SESSION_CURVE())
            evidence = self._source.evidence(report_data_for(nonce, spki_der(key.public_key())))
            session_context = _server_context()
            load_ephemeral_chain(session_context, self._make_certificate(key, evidence), key)
            sslobj.context = session_context
        except ServerNameError as err:
            self._callback_error = err
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME.value
        except Exception as err:  # re-raised by receive(); an exception escaping here would be lost
            self._callback_error = err
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR.value
        self._session_ready = True
        return None

    def _drop(self) -> None:
        if self._sslobj is not None:
            _SERVERS.pop(self._sslobj, None)
        super()._drop()

    def receive(self, data: bytes) -> bytes:
        """Feed client records; return the records to send back (possibly ``b""``)."""
        sslobj = self._live()
        if self._state is _State.HANDSHAKING:
            self._count_handshake(data)
        self._incoming.write(data)
        if self._state is _State.HANDSHAKING:
            try:
                sslobj.do_handshake()
            except ssl.SSLWantReadError:
                return self._outgoing.read()
            except ssl.SSLError as err:
                self._fail()
                if self._callback_error is None:
                    raise TlsProtocolError("TLS handshake failed") from err
            if self._callback_error is not None:  # raised outside the except: keeps the error's own cause
                self._fail()
                raise self._callback_error
            if not self._session_ready or sslobj.version() != "TLSv1.3":
                self._fail()
                raise TlsProtocolError("TLS handshake failed")
            self._state = _State.ESTABLISHED
        return self._read_records(sslobj)

    def send_application_data(self, data: bytes) -> bytes:
        """Encrypt ``data``; return the TLS records."""
        sslobj = self._live()
        if self._state is not _State.ESTABLISHED:
            raise HandshakeIncompleteError("the handshake is not complete")
        return self._encrypt(sslobj, data)


# --- client -----------------------------------------------------------------------------------


class RaTlsClient(_Session):
    """The device end: sends nothing but its handshake until the server's evidence verified.

    ``verify(evidence, expected_report_data)`` raises a :class:`CryptoError`
    subclass to refuse (e.g. :class:`~privproc.attestation.ratls.AppraisalVerifier`).
    It must check the evidence's REPORT_DATA equals ``expected_report_data``:
    that comparison is the binding to this handshake.
    """

    def __init__(
        self,
        verify: Callable[[Evidence, bytes], None],
        *,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        super().__init__(_State.NEW)
        self._verify = verify
        self._clock = clock or _utcnow
        self._nonce = secrets.token_bytes(NONCE_SIZE)
        self._sslobj = _client_context().wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=self.server_name
        )
        self._evidence: Evidence | None = None
        self._staple: ReleaseStaple | None = None
        self._certificate: bytes | None = None

    @property
    def server_name(self) -> str:
        """The SNI name carrying this session's nonce."""
        return server_name_for(self._nonce)

    @property
    def verified(self) -> bool:
        return self._state is _State.ESTABLISHED

    @property
    def evidence(self) -> Evidence | None:
        """The server's evidence, once verified."""
        return self._evidence if self.verified else None

    @property
    def staple(self) -> ReleaseStaple | None:
        """The release staple the server's certificate carried (None if none), once verified.

        The caller checks it (:meth:`TransparencyVerifier.verify_staple`) before
        sending anything: this class only parses it.
        """
        return self._staple if self.verified else None

    @property
    def peer_certificate(self) -> bytes | None:
        """The server certificate (DER) the evidence was bound to, once verified."""
        return self._certificate if self.verified else None

    @property
    def peer_certificate_sha256(self) -> bytes | None:
        """SHA-256 of the server certificate's DER, once verified."""
        return hashlib.sha256(self._certificate).digest() if self.verified and self._certificate else None

    def _drop(self) -> None:
        super()._drop()
        self._outgoing = ssl.MemoryBIO()  # whatever the handshake left there is never sent

    def _fail(self) -> None:
        super()._fail()
        self._evidence = None
        self._staple = None
        self._certificate = None

    def _handshake(self, sslobj: ssl.SSLObject) -> bool:
        """Advance the handshake: True once complete, False while it waits for the server; fails on error."""
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as err:
            self._fail()
            raise TlsProtocolError("TLS handshake failed") from err
        return True

    def start(self) -> bytes:
        """The ClientHello records (the nonce in SNI)."""
        sslobj = self._live()
        if self._state is not _State.NEW:
            raise SessionStateError("the handshake already started")
        self._state = _State.HANDSHAKING
        if not self._handshake(sslobj):
            return self._outgoing.read()
        self._fail()  # a handshake cannot complete without the server
        raise TlsProtocolError("TLS handshake failed")

    def receive(self, data: bytes) -> bytes:
        """Feed server records; return records to send (the client Finished, only once verified)."""
        sslobj = self._live()
        if self._state is _State.NEW:
            raise SessionStateError("start() was not called")
        if self._state is _State.HANDSHAKING:
            self._count_handshake(data)
            self._incoming.write(data)
            if not self._handshake(sslobj):
                # Mid-flight; only a HelloRetryRequest makes the client send here (a new ClientHello).
                return self._outgoing.read()
            # The handshake completed and the client Finished waits in the outgoing BIO, unread.
            try:
                self._check_server(sslobj)
            except BaseException:
                self._fail()
                raise
            self._state = _State.ESTABLISHED
        else:
            self._incoming.write(data)
        return self._read_records(sslobj)

    def _check_server(self, sslobj: ssl.SSLObject) -> None:
        if sslobj.version() != "TLSv1.3":
            raise TlsProtocolError("not TLS 1.3")
        der = sslobj.getpeercert(binary_form=True)
        if not der:
            raise CertificateError("the server sent no certificate")
        certificate = read_certificate(der, now=self._clock())
        self._verify(certificate.evidence, report_data_for(self._nonce, spki_der(certificate.public_key)))
        self._evidence = certificate.evidence
        self._staple = certificate.staple
        self._certificate = der

    def send_application_data(self, data: bytes) -> bytes:
        """Encrypt ``data``; raises :class:`NotVerifiedError` until the server's evidence verified."""
        sslobj = self._live()
        if self._state is not _State.ESTABLISHED:
            raise NotVerifiedError("the server is not verified")
        return self._encrypt(sslobj, data)
