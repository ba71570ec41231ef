"""RA-TLS in memory: a simulator-backed CVM, a device appraising its evidence, and every refusal.

Each attack asserts the server received no application data: the client never
hands over its Finished, so the server's handshake never completes.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc import errors
from privproc.attestation import ratls, ratls_session
from privproc.attestation.appraisal import Reason, SnpPolicy
from privproc.attestation.evidence import Evidence, ReleaseStaple
from privproc.attestation.ratls import (
    AppraisalVerifier,
    BindingError,
    CertificateError,
    EvidenceMalformedError,
    EvidenceMissingError,
    EvidenceRefusedError,
    HandshakeIncompleteError,
    NotVerifiedError,
    RaTlsError,
    ServerNameError,
    SessionClosedError,
    SessionFailedError,
    SessionStateError,
    StapleMalformedError,
    TlsProtocolError,
)
from privproc.attestation.ratls_session import RaTlsClient, RaTlsServer
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.attestation.sources import EvidenceSource
from privproc.errors import UnavailableError

MEASUREMENT = hashlib.sha384(b"predictor image").digest()
HOST_DATA = hashlib.sha256(b"predictor configuration").digest()
DEBUG_POLICY = 0x30000 | 1 << 19


@pytest.fixture
def snp(root: DevelopmentRoot) -> SimulatedSnp:
    return SimulatedSnp(root, measurement=MEASUREMENT, host_data=HOST_DATA)


def _policy(root: DevelopmentRoot, measurements: dict[bytes, int] | None = None) -> SnpPolicy:
    return dataclasses.replace(
        SnpPolicy().with_development_root(root.ark_fingerprint),
        measurements={MEASUREMENT: 7} if measurements is None else measurements,
        host_data=HOST_DATA,
    )


def _client(root: DevelopmentRoot, **kw: object) -> tuple[RaTlsClient, AppraisalVerifier]:
    verifier = AppraisalVerifier(_policy(root, **kw))  # type: ignore[arg-type]
    return RaTlsClient(verifier), verifier


def _refused_before_finished(server: RaTlsServer, client: RaTlsClient, error: type[RaTlsError]) -> RaTlsError:
    """Run the first exchange; the client must refuse the server flight and hand over nothing."""
    flight = server.receive(client.start())
    assert flight
    with pytest.raises(error) as caught:
        client.receive(flight)
    assert not client.verified and client.evidence is None and client.peer_certificate_sha256 is None
    _assert_client_dead(client)
    # Nothing reached the server: its handshake waits for a Finished that never comes.
    assert not server.handshake_complete
    assert server.read_application_data() == b""
    with pytest.raises(HandshakeIncompleteError):
        server.send_application_data(b"answer")
    return caught.value


def _assert_client_dead(client: RaTlsClient) -> None:
    calls: list[Callable[[], object]] = [
        client.start,
        lambda: client.receive(b"\x17\x03\x03\x00\x01\x00"),
        lambda: client.send_application_data(b"secret prompt"),
        client.read_application_data,
        client.close,
    ]
    for call in calls:
        with pytest.raises(SessionFailedError):
            call()


# --- evidence sources and servers that lie -----------------------------------------------------


class CountingSource:
    def __init__(self, inner: EvidenceSource) -> None:
        self.inner = inner
        self.report_data: list[bytes] = []

    def evidence(self, report_data: bytes) -> Evidence:
        self.report_data.append(report_data)
        return self.inner.evidence(report_data)


class IgnoresReportData:
    """Evidence genuine in every other way, bound to some other key."""

    def __init__(self, inner: EvidenceSource) -> None:
        self.inner = inner

    def evidence(self, report_data: bytes) -> Evidence:
        other = ec.generate_private_key(ec.SECP384R1()).public_key()
        return self.inner.evidence(ratls.report_data_for(b"\x00" * 32, ratls.spki_der(other)))


class Replaying:
    """Returns the evidence it captured for the first handshake, whatever it is asked for."""

    def __init__(self, inner: EvidenceSource) -> None:
        self.inner = inner
        self.captured: Evidence | None = None

    def evidence(self, report_data: bytes) -> Evidence:
        if self.captured is None:
            self.captured = self.inner.evidence(report_data)
        return self.captured


class Unavailable:
    def evidence(self, report_data: bytes) -> Evidence:
        raise UnavailableError("configfs-tsm unavailable")


def _certificate(
    key: ec.EllipticCurvePrivateKey,
    extension: bytes | None,
    *,
    lifetime: datetime.timedelta = datetime.timedelta(minutes=10),
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privproc RA-TLS")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now - datetime.timedelta(minutes=1) + lifetime)
    )
    if extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ratls.EVIDENCE_OID, extension), critical=False
        )
    return builder.sign(signer or key, hashes.SHA384())


class ForgingServer(RaTlsServer):
    def __init__(
        self,
        source: EvidenceSource,
        forge: Callable[[ec.EllipticCurvePrivateKey, Evidence], x509.Certificate],
    ) -> None:
        super().__init__(source)
        self.forge = forge

    def _make_certificate(self, key: ec.EllipticCurvePrivateKey, evidence: Evidence) -> x509.Certificate:
        return self.forge(key, evidence)


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1 :]


# --- the happy path ----------------------------------------------------------------------------


def test_two_exchanges_then_application_data_both_ways(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    source = CountingSource(snp)
    server = RaTlsServer(source)
    client, verifier = _client(root)

    # Exchange 1: ClientHello -> the server's whole flight (certificate with evidence included).
    hello = client.start()
    flight = server.receive(hello)
    assert len(source.report_data) == 1 and not server.handshake_complete
    finished = client.receive(flight)
    assert finished and client.verified

    # Exchange 2: client Finished + request -> response.
    request = client.send_application_data(b"summarise this chat")
    assert server.receive(finished + request) == b""  # no session tickets
    assert server.handshake_complete
    assert server.read_application_data() == b"summarise this chat"
    assert server.read_application_data() == b""
    assert client.receive(server.send_application_data(b"a summary")) == b""
    assert client.read_application_data() == b"a summary"

    # More data both ways, including records larger than one TLS record.
    big = os.urandom(100_000)
    server.receive(client.send_application_data(big) + client.send_application_data(b"!"))
    assert server.read_application_data() == big + b"!"
    client.receive(server.send_application_data(big[::-1]))
    assert client.read_application_data() == big[::-1]

    # What the client learnt: the evidence, its appraisal, the certificate it was bound to.
    assert client.evidence is not None
    assert verifier.appraisal is not None and verifier.appraisal.claims is not None
    assert verifier.appraisal.claims.measurement == MEASUREMENT
    assert verifier.appraisal.claims.release_log_index == 7
    assert verifier.appraisal.claims.report_data == source.report_data[0]
    assert client.peer_certificate_sha256 is not None and len(client.peer_certificate_sha256) == 32

    # Close: close_notify both ways, then every call says closed.
    assert server.receive(client.close()) == b"" and server.peer_closed
    assert server.close()
    for call in (lambda: client.send_application_data(b"x"), lambda: server.receive(b"")):
        with pytest.raises(SessionClosedError):
            call()
    assert client.close() == b"" and server.close() == b""


def test_verify_sees_the_binding_of_the_completed_handshake(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    seen: list[tuple[Evidence, bytes]] = []
    appraiser = AppraisalVerifier(_policy(root))

    def verify(evidence: Evidence, report_data: bytes) -> None:
        seen.append((evidence, report_data))
        appraiser(evidence, report_data)

    server, client = RaTlsServer(snp), RaTlsClient(verify)
    client.receive(server.receive(client.start()))
    ((evidence, report_data),) = seen
    # The expected REPORT_DATA is recomputed from this handshake's nonce and certificate key ...
    assert client.peer_certificate is not None
    assert client.peer_certificate_sha256 == hashlib.sha256(client.peer_certificate).digest()
    certificate = x509.load_der_x509_certificate(client.peer_certificate)
    key = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ratls.SESSION_CURVE)
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    nonce = ratls.nonce_from_server_name(client.server_name)
    assert report_data == ratls.report_data_for(nonce, ratls.spki_der(key))
    # ... and it is what the hardware signed.
    assert appraiser.appraisal is not None and appraiser.appraisal.claims is not None
    assert appraiser.appraisal.claims.report_data == report_data
    # The certificate: self-signed, short-lived, the evidence in its non-critical extension.
    extension = certificate.extensions.get_extension_for_oid(ratls.EVIDENCE_OID)
    assert not extension.critical and isinstance(extension.value, x509.UnrecognizedExtension)
    assert extension.value.value == evidence.encode() and client.evidence == evidence
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == datetime.timedelta(minutes=11)


def test_server_flight_in_pieces(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    server = RaTlsServer(snp)
    client, _ = _client(root)
    flight = server.receive(client.start())
    assert client.receive(flight[:100]) == b"" and not client.verified
    with pytest.raises(NotVerifiedError):
        client.send_application_data(b"too early")
    finished = client.receive(flight[100:])
    assert client.verified
    server.receive(finished)
    assert server.handshake_complete


def test_interleaved_sessions_each_present_their_own_certificate(
    root: DevelopmentRoot, snp: SimulatedSnp
) -> None:
    """Servers share the context their handshakes start in; each still answers with its own session."""
    sources = [CountingSource(snp) for _ in range(3)]
    servers = [RaTlsServer(source) for source in sources]
    clients = [_client(root)[0] for _ in servers]
    hellos = [client.start() for client in clients]
    # ClientHellos reach the servers in another order than they were made.
    flights = {i: servers[i].receive(hellos[i]) for i in (2, 0, 1)}
    for i, client in enumerate(clients):
        finished = client.receive(flights[i])
        assert client.verified and client.peer_certificate is not None
        # Its server was asked for evidence over this client's nonce and that server's key.
        key = x509.load_der_x509_certificate(client.peer_certificate).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        nonce = ratls.nonce_from_server_name(client.server_name)
        assert sources[i].report_data == [ratls.report_data_for(nonce, ratls.spki_der(key))]
        servers[i].receive(finished + client.send_application_data(b"to %d" % i))
        assert servers[i].read_application_data() == b"to %d" % i
    assert len({client.peer_certificate for client in clients}) == 3
    # A server dropped mid-handshake leaves nothing for the shared context to call.
    dropped = RaTlsServer(snp)
    dropped.close()
    assert dropped not in [ref() for ref in ratls_session._SERVERS.values()]


# --- attacks: each leaves the server without application data ----------------------------------


def test_evidence_bound_to_another_key_is_refused(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    client, _ = _client(root)
    error = _refused_before_finished(RaTlsServer(IgnoresReportData(snp)), client, BindingError)
    assert isinstance(error, BindingError) and error.reasons == (Reason.REPORT_DATA,)


def test_replayed_evidence_is_refused(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    replaying = Replaying(snp)
    first, _ = _client(root)
    server = RaTlsServer(replaying)
    first.receive(server.receive(first.start()))
    assert first.verified and replaying.captured is not None
    # Same genuine evidence, same CVM: but it binds the first handshake's nonce and key.
    second, _ = _client(root)
    _refused_before_finished(RaTlsServer(replaying), second, BindingError)


def test_debug_evidence_is_refused(root: DevelopmentRoot) -> None:
    debug = SimulatedSnp(root, measurement=MEASUREMENT, host_data=HOST_DATA, policy=DEBUG_POLICY)
    client, _ = _client(root)
    error = _refused_before_finished(RaTlsServer(debug), client, EvidenceRefusedError)
    assert not isinstance(error, BindingError)
    assert isinstance(error, EvidenceRefusedError) and error.reasons == (Reason.DEBUG,)


def test_unlogged_measurement_is_refused(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    client, _ = _client(root, measurements={hashlib.sha384(b"another release").digest(): 1})
    error = _refused_before_finished(RaTlsServer(snp), client, EvidenceRefusedError)
    assert isinstance(error, EvidenceRefusedError) and error.reasons == (Reason.MEASUREMENT_UNKNOWN,)


def test_certificate_without_evidence_is_refused(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    server = ForgingServer(snp, lambda key, _evidence: _certificate(key, None))
    _refused_before_finished(server, _client(root)[0], EvidenceMissingError)


def test_tampered_evidence_in_a_resigned_certificate_is_refused(
    root: DevelopmentRoot, snp: SimulatedSnp
) -> None:
    def forge(key: ec.EllipticCurvePrivateKey, evidence: Evidence) -> x509.Certificate:
        # Claim another measurement; the server can sign its own certificate, not the report.
        tampered = dataclasses.replace(evidence, report=_flip(evidence.report, 0x90))
        return ratls.build_certificate(key, tampered)

    error = _refused_before_finished(ForgingServer(snp, forge), _client(root)[0], EvidenceRefusedError)
    assert isinstance(error, EvidenceRefusedError) and error.reasons == (Reason.SIGNATURE,)


def test_tampered_extension_without_resigning_is_refused(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    def forge(key: ec.EllipticCurvePrivateKey, evidence: Evidence) -> x509.Certificate:
        der = ratls.build_certificate(key, evidence).public_bytes(serialization.Encoding.DER)
        at = der.index(evidence.encode()) + 0x90
        return x509.load_der_x509_certificate(_flip(der, at))

    _refused_before_finished(ForgingServer(snp, forge), _client(root)[0], CertificateError)


def test_undecodable_evidence_is_refused(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    server = ForgingServer(snp, lambda key, _evidence: _certificate(key, b"\xff" * 40))
    _refused_before_finished(server, _client(root)[0], EvidenceMalformedError)


def test_certificate_signed_by_another_key_is_refused(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    server = ForgingServer(snp, lambda key, evidence: _certificate(key, evidence.encode(), signer=other))
    _refused_before_finished(server, _client(root)[0], CertificateError)


def test_long_lived_certificate_is_refused(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    lifetime = datetime.timedelta(days=2)
    server = ForgingServer(snp, lambda key, evidence: _certificate(key, evidence.encode(), lifetime=lifetime))
    _refused_before_finished(server, _client(root)[0], CertificateError)


@pytest.mark.parametrize("skew", [datetime.timedelta(minutes=-5), datetime.timedelta(minutes=20)])
def test_certificate_outside_its_validity_is_refused(
    root: DevelopmentRoot, snp: SimulatedSnp, skew: datetime.timedelta
) -> None:
    client = RaTlsClient(
        AppraisalVerifier(_policy(root)), clock=lambda: datetime.datetime.now(datetime.UTC) + skew
    )
    _refused_before_finished(RaTlsServer(snp), client, CertificateError)


def test_a_failing_verify_of_any_kind_fails_closed(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    def broken(_evidence: Evidence, _report_data: bytes) -> None:
        raise RuntimeError("a bug in the verifier")

    server = RaTlsServer(snp)
    client = RaTlsClient(broken)
    flight = server.receive(client.start())
    with pytest.raises(RuntimeError):
        client.receive(flight)
    _assert_client_dead(client)
    assert not server.handshake_complete


# --- the server refuses what is not an RA-TLS ClientHello ----------------------------------------


def _raw_client_hello(server_name: str | None, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> bytes:
    """A plain TLS client's ClientHello (any server name, any version)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


_VALID_NAME = ratls.server_name_for(bytes(range(32)))


@pytest.mark.parametrize(
    "server_name",
    [
        None,
        "example.com",
        "predictor.privproc.local",
        _VALID_NAME.replace(".ratls.", ".other."),
        _VALID_NAME[1:],  # 51 characters
        "a" + _VALID_NAME,  # 53 characters
        _VALID_NAME[:51] + "r" + _VALID_NAME[52:],  # non-zero padding bits: a second name for one nonce
        _VALID_NAME.replace("a", "1", 1),  # not base32
    ],
)
def test_server_refuses_any_other_server_name(snp: SimulatedSnp, server_name: str | None) -> None:
    source = CountingSource(snp)
    server = RaTlsServer(source)
    hello = _raw_client_hello(server_name)
    with pytest.raises(ServerNameError):
        server.receive(hello)
    assert source.report_data == []  # no evidence was made for it
    assert not server.handshake_complete
    calls: list[Callable[[], object]] = [
        lambda: server.receive(hello),
        server.read_application_data,
        server.close,
    ]
    for call in calls:
        with pytest.raises(SessionFailedError):
            call()


def test_server_refuses_tls_1_2(snp: SimulatedSnp) -> None:
    hello = _raw_client_hello(_VALID_NAME, ssl.TLSVersion.TLSv1_2)
    server = RaTlsServer(snp)
    with pytest.raises(TlsProtocolError):
        server.receive(hello)


def test_evidence_source_failure_aborts_the_handshake() -> None:
    server = RaTlsServer(Unavailable())
    hello = _raw_client_hello(_VALID_NAME)
    with pytest.raises(UnavailableError):
        server.receive(hello)
    with pytest.raises(SessionFailedError):
        server.receive(b"")


def test_server_bounds_the_handshake(snp: SimulatedSnp) -> None:
    with pytest.raises(TlsProtocolError):
        RaTlsServer(snp).receive(bytes(ratls.MAX_HANDSHAKE_BYTES + 1))


# --- state rules ---------------------------------------------------------------------------------


def test_nothing_is_sent_before_verification(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    client, _ = _client(root)
    with pytest.raises(NotVerifiedError):
        client.send_application_data(b"prompt")
    with pytest.raises(SessionStateError):
        client.receive(b"\x16\x03\x03")
    assert client.read_application_data() == b""
    server = RaTlsServer(snp)
    flight = server.receive(client.start())
    with pytest.raises(SessionStateError):
        client.start()
    with pytest.raises(NotVerifiedError):
        client.send_application_data(b"prompt")
    with pytest.raises(HandshakeIncompleteError):
        server.send_application_data(b"answer")
    client.receive(flight)
    assert client.send_application_data(b"prompt")


def test_closing_before_verification_sends_nothing(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    client, _ = _client(root)
    RaTlsServer(snp).receive(client.start())
    assert client.close() == b""
    with pytest.raises(SessionClosedError):
        client.send_application_data(b"prompt")


def test_tampered_record_fails_the_session(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    server = RaTlsServer(snp)
    client, _ = _client(root)
    server.receive(client.receive(server.receive(client.start())))
    response = server.send_application_data(b"a summary")
    with pytest.raises(TlsProtocolError):
        client.receive(_flip(response, len(response) - 1))
    _assert_client_dead(client)


# --- the ephemeral key never stays on disk -------------------------------------------------------


def _memfds() -> list[str]:
    found: list[str] = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{entry}"))
        except OSError:
            continue
    return [link for link in found if "privproc-ratls" in link]


def _handshake(server: RaTlsServer, client: RaTlsClient) -> None:
    server.receive(client.receive(server.receive(client.start())))
    assert client.verified and server.handshake_complete


@pytest.mark.skipif(not ratls._USE_MEMFD, reason="no memfd here")
def test_memfd_holding_the_key_is_closed(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    _handshake(RaTlsServer(snp), _client(root)[0])
    assert _memfds() == []


def test_temporary_key_file_is_private_encrypted_and_gone(
    root: DevelopmentRoot, snp: SimulatedSnp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratls, "_USE_MEMFD", False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[tuple[int, int, bytes]] = []
    load = ssl.SSLContext.load_cert_chain

    def spy(context: ssl.SSLContext, certfile: str, *args: object, **kwargs: object) -> None:
        seen.append(
            (
                os.stat(os.path.dirname(certfile)).st_mode & 0o777,
                os.stat(certfile).st_mode & 0o777,
                Path(certfile).read_bytes(),
            )
        )
        load(context, certfile, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    _handshake(RaTlsServer(snp), _client(root)[0])
    ((directory_mode, file_mode, pem),) = seen
    assert directory_mode == 0o700 and file_mode == 0o600
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in pem and b"BEGIN PRIVATE KEY" not in pem
    assert list(tmp_path.iterdir()) == []


# --- names and errors ---------------------------------------------------------------------------


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32))
def test_server_name_round_trip(nonce: bytes) -> None:
    name = ratls.server_name_for(nonce)
    label = name.split(".")[0]
    assert len(label) == 52 and label == label.lower() and name.endswith(".ratls.privproc.local")
    assert ratls.nonce_from_server_name(name) == nonce


def test_each_error_has_its_own_reason_and_maps_back() -> None:
    classes = [RaTlsError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    reasons = [cls.reason for cls in classes]
    assert len(set(reasons)) == len(reasons) and all(r.startswith("ratls") for r in reasons)
    for cls in classes:
        rebuilt = errors.error_from_status(errors.public_message(cls("fixed text")))
        assert type(rebuilt) is cls


# --- the release staple (a second extension, covered by the handshake like the evidence) -------


class Stapling:
    """An evidence source that staples a release proof, as the predictor's StapledSource does."""

    blocking = False

    def __init__(self, inner: EvidenceSource, staple: ReleaseStaple | None) -> None:
        self.inner = inner
        self.staple = staple

    def evidence(self, report_data: bytes) -> Evidence:
        return self.inner.evidence(report_data)

    def release_staple(self) -> ReleaseStaple | None:
        return self.staple


def test_the_staple_rides_in_the_certificate(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    staple = ReleaseStaple(b"c2sp.org/tlog-proof@v1\n...", ((7, (bytes(32),)), (9, ())))
    server = RaTlsServer(Stapling(snp, staple))
    client, _ = _client(root)
    assert client.staple is None  # nothing before verification
    _handshake(server, client)
    assert client.staple == staple
    certificate = x509.load_der_x509_certificate(client.peer_certificate or b"")
    extension = certificate.extensions.get_extension_for_oid(ratls.STAPLE_OID)
    assert not extension.critical and ReleaseStaple.decode(extension.value.value) == staple  # type: ignore[attr-defined]


def test_no_staple_is_reported_as_none(root: DevelopmentRoot, snp: SimulatedSnp) -> None:
    for source in (snp, Stapling(snp, None)):
        client, _ = _client(root)
        _handshake(RaTlsServer(source), client)
        assert client.verified and client.staple is None


@pytest.mark.parametrize(
    "garbage", [b"", b"\xff\xff", ReleaseStaple(b"", ()).encode(), b"\x12\x05" + b"x" * 5]
)
def test_a_malformed_staple_is_refused_before_anything_is_sent(
    root: DevelopmentRoot, snp: SimulatedSnp, garbage: bytes
) -> None:
    def forge(key: ec.EllipticCurvePrivateKey, evidence: Evidence) -> x509.Certificate:
        certificate = ratls.build_certificate(key, evidence)
        builder = (
            x509.CertificateBuilder()
            .subject_name(certificate.subject)
            .issuer_name(certificate.issuer)
            .public_key(key.public_key())
            .serial_number(certificate.serial_number)
            .not_valid_before(certificate.not_valid_before_utc)
            .not_valid_after(certificate.not_valid_after_utc)
        )
        for extension in certificate.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        builder = builder.add_extension(x509.UnrecognizedExtension(ratls.STAPLE_OID, garbage), critical=False)
        return builder.sign(key, hashes.SHA256())

    client, _ = _client(root)
    _refused_before_finished(ForgingServer(snp, forge), client, StapleMalformedError)
