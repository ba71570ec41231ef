"""RA-TLS: the protocol, its certificate carrying evidence for the handshake, and its errors.

The device (client) and the predictor CVM (server) run a TLS 1.3 handshake in
memory (the sans-I/O sessions of :mod:`privproc.attestation.ratls_session`);
the server's per-session certificate carries evidence bound to this
handshake, defined here with what it takes to make and to check it.

Protocol
--------
* **Nonce.** The client draws 32 random bytes per session and sends them as
  the SNI host name ``<base32(nonce), lowercase, unpadded>.ratls.privproc.local``
  (52 base32 characters: one DNS label). The server refuses any other name
  (``unrecognized_name`` alert, :class:`ServerNameError`).
* **Per-session key and certificate.** In its SNI callback the server makes a
  fresh EC P-256 key (:data:`SESSION_CURVE`), asks its :class:`~privproc.attestation.sources.EvidenceSource`
  for evidence over ``report_data = SHA-512(b"privproc-ratls/v1\\n" || nonce ||
  SubjectPublicKeyInfo DER of the key)`` (64 bytes, the SNP REPORT_DATA), and
  presents a self-signed certificate for that key (ECDSA with SHA-256), valid
  10 minutes and backdated one minute, then switches the connection to a per-session
  ``SSLContext`` holding that key (``sslobj.context = session_context``).
* **Evidence extension.** OID ``2.25.181151614622402956304097145028456848469``
  (:data:`EVIDENCE_OID`; UUID arc, generated once for privproc), non-critical.
  The extension's ``extnValue`` OCTET STRING holds the protobuf encoding of
  ``privproc.v1.Evidence`` (:meth:`Evidence.encode`) directly, with no inner
  DER wrapper (``x509.UnrecognizedExtension(EVIDENCE_OID, evidence.encode())``).
* **Release staple extension.** OID ``2.25.61891006905387755112347256427338659378``
  (:data:`STAPLE_OID`), non-critical, present when the CVM has one: the
  protobuf ``privproc.v1.ReleaseStaple`` (:class:`~privproc.attestation.evidence.ReleaseStaple`)
  — the C2SP tlog-proof that the CVM's release is logged at its newest
  witnessed checkpoint, and consistency proofs to that checkpoint from its
  previous few. As a TLS server staples SCTs, this lets the client check that
  the measurement is logged without talking to the log or the CDN while the
  session is open (they would see its address at the moment the gateway sees
  its session). It sits inside the certificate, so the handshake covers it:
  the same CertificateVerify argument as for the evidence below.

Why the evidence belongs to this handshake
------------------------------------------
1. In TLS 1.3 the server's CertificateVerify is a signature, by the private
   key of the certificate's SubjectPublicKeyInfo, over the transcript hash of
   this handshake (ClientHello with its random, SNI and key shares included).
   OpenSSL checks it against the certificate's key even with ``CERT_NONE``
   (``CERT_NONE`` only skips the CA chain, which we replace), and the Finished
   MACs tie the traffic keys to the same transcript. So the peer that holds
   this session's keys holds the certificate's private key.
2. The evidence's REPORT_DATA is signed by the hardware (chain to the pinned
   AMD root, checked by ``verify``) and hashes that same SubjectPublicKeyInfo:
   the measured CVM asked for a report over this key. The measured code makes
   the key inside the CVM and never exports it.
3. The same REPORT_DATA hashes the client's fresh nonce, which did not exist
   before this ClientHello: the report was made for this handshake, not
   replayed from an earlier one (an earlier report binds an earlier nonce and
   key, and fails the comparison).
TLS 1.3 has no renegotiation and a server cannot change its certificate after
the handshake, so the certificate checked is the session's for its whole
life. Resumption would skip the certificate: the server issues no tickets
(``num_tickets = 0``, ``OP_NO_TICKET``), so a client never holds a session to
offer (the clients share one ``SSLContext``, which keeps no client sessions
and is never handed one).

Why P-256 for the session key: it signs one handshake and is then dropped, so
128-bit security is ample, and OpenSSL's constant-time P-256 code signs and
verifies several times faster than P-384 — three such operations sit on every
request's critical path (the certificate's self-signature, CertificateVerify,
and its check). The client accepts P-256 and P-384 keys. The SEV-SNP report
itself stays ECDSA P-384, as AMD defines it.

Loading the ephemeral key
-------------------------
Python's ``ssl`` loads a certificate and key only from a path. The key is
written PEM (PKCS#8) into an anonymous ``memfd`` (``os.memfd_create``: pages
of this process's memory, never a file system entry, reachable through
``/proc`` only by who could read the process's memory anyway — and the
predictor is not dumpable) and loaded from ``/proc/self/fd/<n>``; the
descriptor is closed right after ``load_cert_chain``. There the key sits in
the clear, as it does in the key object itself: encrypting it would protect
nothing and cost a key derivation each way (~0.7 ms per handshake). Where
``memfd`` is unavailable, a private temporary directory (mode 0700, file
0600) is used and removed before the callback returns, and the PEM written
there is encrypted under a random 32-byte password kept only in memory.
Either way the key is on no disk after the handshake. Python cannot wipe
memory: ``close()`` drops every reference to the key and TLS state.
Errors are :class:`RaTlsError` subclasses (each with its own ``reason``);
messages are fixed and hold no data.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import os
import re
import secrets
import ssl
import tempfile
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from privproc.attestation.appraisal import Appraisal, ChainCache, Reason, SnpPolicy, appraise
from privproc.attestation.evidence import Evidence, EvidenceFormatError, ReleaseStaple, StapleFormatError
from privproc.errors import CryptoError

#: The certificate extension carrying ``Evidence.encode()`` (UUID arc 2.25, generated once).
EVIDENCE_OID = x509.ObjectIdentifier("2.25.181151614622402956304097145028456848469")
#: The certificate extension carrying ``ReleaseStaple.encode()`` (UUID arc 2.25, generated once).
STAPLE_OID = x509.ObjectIdentifier("2.25.61891006905387755112347256427338659378")
BINDING_DOMAIN = b"privproc-ratls/v1\n"
NONCE_SIZE = 32
SERVER_NAME_SUFFIX = ".ratls.privproc.local"
CERTIFICATE_VALIDITY = datetime.timedelta(minutes=10)
CERTIFICATE_BACKDATE = datetime.timedelta(minutes=1)
#: The client refuses certificates that could live longer than this.
MAX_CERTIFICATE_LIFETIME = datetime.timedelta(hours=1)
#: Bytes either end accepts before its handshake completes (the server flight is ~6 KiB).
MAX_HANDSHAKE_BYTES = 256 << 10
_NONCE_LABEL = re.compile(r"[a-z2-7]{52}")
_CURVES = (ec.SECP256R1, ec.SECP384R1)
#: The curve of the server's per-session key (see "Why P-256" above).
SESSION_CURVE = ec.SECP256R1
#: memfd where the kernel has it and /proc shows descriptors; else a private temporary directory.
_USE_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
#: memfd where the kernel has it and /proc shows descriptors; else a private temporary directory.


# --- errors -----------------------------------------------------------------------------------


class RaTlsError(CryptoError):
    """An RA-TLS session failed or was used wrongly."""

    reason = "ratls"


class TlsProtocolError(RaTlsError):
    """The TLS handshake or record layer failed."""

    reason = "ratls_tls"


class ServerNameError(RaTlsError):
    """The ClientHello's server name is not an RA-TLS nonce name."""

    reason = "ratls_server_name"


class CertificateError(RaTlsError):
    """The server certificate is not a well-formed, self-signed, currently valid RA-TLS certificate."""

    reason = "ratls_certificate"


class EvidenceMissingError(RaTlsError):
    """The server certificate carries no evidence extension."""

    reason = "ratls_evidence_missing"


class EvidenceMalformedError(RaTlsError):
    """The evidence extension does not decode."""

    reason = "ratls_evidence_malformed"


class EvidenceRefusedError(RaTlsError):
    """The evidence did not appraise; ``reasons`` says why (kept out of the message)."""

    reason = "ratls_evidence_refused"

    def __init__(self, message: str = "", reasons: tuple[Reason, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class BindingError(EvidenceRefusedError):
    """The evidence's REPORT_DATA does not bind this handshake's nonce and certificate key."""

    reason = "ratls_binding"


class StapleMalformedError(RaTlsError):
    """The release staple extension does not decode."""

    reason = "ratls_staple_malformed"


class SessionStateError(RaTlsError):
    """A call the session's state does not allow."""

    reason = "ratls_state"


class HandshakeIncompleteError(SessionStateError):
    reason = "ratls_handshake_incomplete"


class NotVerifiedError(HandshakeIncompleteError):
    """Application data before the server's evidence verified."""

    reason = "ratls_not_verified"


class SessionFailedError(SessionStateError):
    """The session failed earlier: it sends and accepts nothing more."""

    reason = "ratls_failed"


class SessionClosedError(SessionStateError):
    reason = "ratls_closed"


# --- shared pieces ----------------------------------------------------------------------------


def server_name_for(nonce: bytes) -> str:
    """The SNI host name that carries ``nonce``."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError("the RA-TLS nonce is 32 bytes")
    return base64.b32encode(nonce).decode("ascii").rstrip("=").lower() + SERVER_NAME_SUFFIX


def nonce_from_server_name(server_name: str | None) -> bytes:
    """The nonce in an RA-TLS server name; :class:`ServerNameError` for anything else."""
    if server_name is None or not server_name.endswith(SERVER_NAME_SUFFIX):
        raise ServerNameError("not an RA-TLS server name")
    label = server_name[: -len(SERVER_NAME_SUFFIX)]
    if not _NONCE_LABEL.fullmatch(label):
        raise ServerNameError("not an RA-TLS server name")
    try:
        nonce = base64.b32decode(label.upper() + "====")
    except binascii.Error:
        raise ServerNameError("not an RA-TLS server name") from None
    if server_name_for(nonce) != server_name:  # non-zero padding bits: one nonce, one name
        raise ServerNameError("not an RA-TLS server name")
    return nonce


def spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def report_data_for(nonce: bytes, spki: bytes) -> bytes:
    """``SHA-512("privproc-ratls/v1\\n" || nonce || SubjectPublicKeyInfo DER)``: the 64-byte REPORT_DATA."""
    return hashlib.sha512(BINDING_DOMAIN + nonce + spki).digest()


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def build_certificate(
    key: ec.EllipticCurvePrivateKey,
    evidence: Evidence,
    *,
    now: datetime.datetime | None = None,
    staple: ReleaseStaple | None = None,
) -> x509.Certificate:
    """The self-signed RA-TLS certificate for ``key``, carrying ``evidence`` (and ``staple``, if any)."""
    now = now or _utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privproc RA-TLS")])
    builder = x509.CertificateBuilder()
    if staple is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(STAPLE_OID, staple.encode()), critical=False
        )
    return (
        builder.subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CERTIFICATE_BACKDATE)
        .not_valid_after(now + CERTIFICATE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.UnrecognizedExtension(EVIDENCE_OID, evidence.encode()), critical=False)
        .sign(key, hashes.SHA256() if key.curve.key_size <= 256 else hashes.SHA384())
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def load_ephemeral_chain(
    context: ssl.SSLContext, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    """Load ``certificate`` and ``key`` into ``context`` leaving no file behind (see the module doc)."""
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    if _USE_MEMFD:
        pem = certificate_pem + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.memfd_create("privproc-ratls", os.MFD_CLOEXEC)
        try:
            _write_all(fd, pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    password = secrets.token_bytes(32)
    pem = certificate_pem + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="privproc-ratls-") as directory:  # mkdtemp: mode 0700
        path = os.path.join(directory, "chain.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, pem)
        finally:
            os.close(fd)
        try:
            context.load_cert_chain(path, password=password)
        finally:
            os.unlink(path)


@dataclasses.dataclass(frozen=True)
class RaTlsCertificate:
    """What a checked server certificate carries: its key, its evidence and its staple (None if none)."""

    public_key: ec.EllipticCurvePublicKey
    evidence: Evidence
    staple: ReleaseStaple | None


def read_certificate(der: bytes, *, now: datetime.datetime) -> RaTlsCertificate:
    """Parse a server certificate: self-signed by its P-256/P-384 key, valid at ``now``, carrying evidence.

    The evidence is not appraised here: the caller checks it binds this
    handshake (:func:`report_data_for`) and appraises it.
    """
    try:
        certificate = x509.load_der_x509_certificate(der)
        public_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError("the server certificate does not parse") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, _CURVES):
        raise CertificateError("the server key is not ECDSA P-256 or P-384")
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise CertificateError("the server certificate is not self-signed by its key") from None
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if not not_before <= now <= not_after:
        raise CertificateError("the server certificate is not currently valid")
    if not_after - not_before > MAX_CERTIFICATE_LIFETIME:
        raise CertificateError("the server certificate lives too long")
    try:
        extension = certificate.extensions.get_extension_for_oid(EVIDENCE_OID)
    except x509.ExtensionNotFound:
        raise EvidenceMissingError("the server certificate carries no evidence") from None
    except (ValueError, x509.DuplicateExtension):
        raise CertificateError("the server certificate's extensions do not parse") from None
    if not isinstance(extension.value, x509.UnrecognizedExtension):
        raise EvidenceMalformedError("the evidence extension does not decode")
    try:
        evidence = Evidence.decode(extension.value.value)
    except EvidenceFormatError:
        raise EvidenceMalformedError("the evidence extension does not decode") from None
    return RaTlsCertificate(public_key, evidence, _staple_of(certificate))


def _staple_of(certificate: x509.Certificate) -> ReleaseStaple | None:
    """The release staple extension of ``certificate`` (None without one)."""
    try:
        extension = certificate.extensions.get_extension_for_oid(STAPLE_OID)
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension):
        raise CertificateError("the server certificate's extensions do not parse") from None
    if not isinstance(extension.value, x509.UnrecognizedExtension):
        raise StapleMalformedError("the release staple does not decode")
    try:
        return ReleaseStaple.decode(extension.value.value)
    except StapleFormatError:
        raise StapleMalformedError("the release staple does not decode") from None


class AppraisalVerifier:
    """A client ``verify`` that appraises SEV-SNP evidence against ``policy``.

    Refuses with :class:`BindingError` when REPORT_DATA is not the expected
    binding, else :class:`EvidenceRefusedError`; the appraisal of the evidence
    it accepted is kept in :attr:`appraisal` (claims, release log index).
    A client that appraises many sessions passes one :class:`ChainCache` to all.
    """

    def __init__(
        self,
        policy: SnpPolicy,
        *,
        clock: Callable[[], datetime.datetime] | None = None,
        chains: ChainCache | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.chains = chains
        self.appraisal: Appraisal | None = None

    def __call__(self, evidence: Evidence, report_data: bytes) -> None:
        now = self.clock() if self.clock is not None else None
        appraisal = appraise(evidence, self.policy, report_data=report_data, now=now, chains=self.chains)
        if appraisal.verified:
            self.appraisal = appraisal
            return
        if Reason.REPORT_DATA in appraisal.reasons:
            raise BindingError("evidence is bound to another handshake or key", appraisal.reasons)
        raise EvidenceRefusedError("evidence refused", appraisal.reasons)
