"""The predictor's session engine: RA-TLS in, one request answered, session dropped; deadlines, admission."""

from __future__ import annotations

import threading

import pytest

from privproc.attestation.appraisal import SnpPolicy
from privproc.attestation.evidence import Evidence
from privproc.attestation.ratls import AppraisalVerifier
from privproc.attestation.ratls_session import RaTlsClient
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.errors import BadRequestError, NotFoundError, PrivprocError, UnavailableError
from privproc.predictor.sessions import SessionEngine, SessionState
from privproc.predictor.telemetry import PredictorTelemetry
from privproc.v1 import predictor_pb2
from privproc.wire.session import Decoder, frame

MEASUREMENT, HOST_DATA = b"\x42" * 48, b"\x24" * 32


def _engine(root: DevelopmentRoot, seen: list[predictor_pb2.ProcessRequest], **kw: object) -> SessionEngine:
    async def processor(request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        seen.append(request)
        return predictor_pb2.ProcessResponse(text=f"{len(request.messages)} messages", model_id="test")

    return SessionEngine(SimulatedSnp(root, measurement=MEASUREMENT, host_data=HOST_DATA), processor, **kw)  # type: ignore[arg-type]


def _client(root: DevelopmentRoot) -> RaTlsClient:
    policy = SnpPolicy(measurements={MEASUREMENT: 3}).with_development_root(root.ark_fingerprint)
    return RaTlsClient(AppraisalVerifier(policy))


async def test_one_request_per_session_then_forgotten(root: DevelopmentRoot) -> None:
    seen: list[predictor_pb2.ProcessRequest] = []
    engine = _engine(root, seen)
    client = _client(root)
    session_id, flight, closed = await engine.open(client.start())
    assert not closed and len(engine) == 1
    finished = client.receive(flight)  # the client verifies the evidence here, before anything else
    assert client.verified
    request = predictor_pb2.ProcessRequest(
        task=predictor_pb2.TASK_SUMMARIZE, messages=[predictor_pb2.ChatMessage(sender="a", text="hi")]
    )
    records, closed = await engine.resume(session_id, finished + client.send_application_data(frame(request)))
    assert closed and len(engine) == 0
    client.receive(records)
    [response] = Decoder(predictor_pb2.ProcessResponse).feed(client.read_application_data())
    assert response.text == "1 messages" and seen == [request]
    with pytest.raises(NotFoundError):
        await engine.resume(session_id, b"")


def _request() -> predictor_pb2.ProcessRequest:
    return predictor_pb2.ProcessRequest(
        task=predictor_pb2.TASK_SUMMARIZE, messages=[predictor_pb2.ChatMessage(sender="a", text="hi")]
    )


async def _handshake(engine: SessionEngine, client: RaTlsClient) -> tuple[bytes, bytes]:
    """Open a session and verify the CVM: ``(session_id, the client's Finished records)``."""
    session_id, flight, _ = await engine.open(client.start())
    return session_id, client.receive(flight)


async def test_deadlines_are_absolute_and_no_record_extends_them(root: DevelopmentRoot) -> None:
    now = [0.0]
    engine = _engine(root, [], clock=lambda: now[0])
    stalled, _, _ = await engine.open(_client(root).start())
    client = _client(root)
    waiting, finished = await _handshake(engine, client)
    await engine.resume(waiting, finished)  # handshake done, no request yet
    assert engine.state(stalled) is SessionState.HANDSHAKE
    assert engine.state(waiting) is SessionState.AWAITING_REQUEST
    now[0] = 9.0
    with pytest.raises(BadRequestError):
        await engine.resume(stalled, b"")  # empty batches are refused and extend nothing
    now[0] = 10.0
    with pytest.raises(NotFoundError):
        await engine.resume(stalled, b"")  # the handshake deadline passed
    now[0] = 119.0
    with pytest.raises(BadRequestError):
        await engine.resume(waiting, b"")
    assert engine.state(waiting) is SessionState.AWAITING_REQUEST
    now[0] = 120.0
    with pytest.raises(NotFoundError):
        await engine.resume(waiting, client.send_application_data(frame(_request())))
    assert len(engine) == 0


async def test_a_full_engine_evicts_the_oldest_stale_handshake_only(root: DevelopmentRoot) -> None:
    now = [0.0]
    seen: list[predictor_pb2.ProcessRequest] = []
    engine = _engine(root, seen, max_sessions=2, clock=lambda: now[0])
    first, _, _ = await engine.open(_client(root).start())
    now[0] = 0.5
    second, _, _ = await engine.open(_client(root).start())
    now[0] = 0.9
    with pytest.raises(UnavailableError):
        await engine.open(_client(root).start())  # both are younger than a handshake round trip
    now[0] = 1.2
    client = _client(root)
    third, finished = await _handshake(engine, client)  # evicts the oldest: first
    assert engine.state(first) is None and engine.state(second) is SessionState.HANDSHAKE
    _, closed = await engine.resume(third, finished + client.send_application_data(frame(_request())))
    assert closed and seen == [_request()]


async def test_a_malformed_hello_evicts_no_one(root: DevelopmentRoot) -> None:
    now = [0.0]
    engine = _engine(root, [], max_sessions=1, clock=lambda: now[0])
    held, _, _ = await engine.open(_client(root).start())
    now[0] = 2.0
    with pytest.raises(PrivprocError):  # a typed TLS error
        await engine.open(b"\x16\x03\x01\x00\x05hello")
    assert engine.state(held) is SessionState.HANDSHAKE


async def test_sessions_past_the_handshake_are_never_evicted(root: DevelopmentRoot) -> None:
    now = [0.0]
    engine = _engine(root, [], max_sessions=1, clock=lambda: now[0])
    client = _client(root)
    session_id, finished = await _handshake(engine, client)
    await engine.resume(session_id, finished)
    now[0] = 5.0
    with pytest.raises(UnavailableError):
        await engine.open(_client(root).start())
    assert engine.state(session_id) is SessionState.AWAITING_REQUEST


async def test_records_after_the_request_are_refused(root: DevelopmentRoot) -> None:
    seen: list[predictor_pb2.ProcessRequest] = []
    engine = _engine(root, seen)
    client = _client(root)
    session_id, finished = await _handshake(engine, client)
    two = client.send_application_data(frame(_request()) + frame(_request()))
    with pytest.raises(BadRequestError):
        await engine.resume(session_id, finished + two)  # two requests in one batch: refused whole
    assert seen == [] and len(engine) == 0


async def test_the_engine_counts_session_outcomes(root: DevelopmentRoot) -> None:
    now = [0.0]
    counters = PredictorTelemetry()
    engine = _engine(root, [], max_sessions=1, clock=lambda: now[0], telemetry=counters)
    await engine.open(_client(root).start())
    with pytest.raises(UnavailableError):
        await engine.open(_client(root).start())
    now[0] = 2.0
    client = _client(root)
    session_id, finished = await _handshake(engine, client)
    await engine.resume(session_id, finished + client.send_application_data(frame(_request())))
    await engine.open(_client(root).start())
    now[0] = 20.0
    with pytest.raises(NotFoundError):
        await engine.resume(b"\0" * 16, b"x")
    assert counters.take_session_totals() == {
        "opened": 3,
        "completed": 1,
        "expired": 1,
        "evicted": 1,
        "busy": 1,
        "failed": 0,
    }


@pytest.mark.parametrize(("blocking", "off_the_loop"), [(True, True), (False, False), (None, True)])
async def test_evidence_is_made_off_the_loop_only_when_the_source_waits(
    root: DevelopmentRoot, blocking: bool | None, off_the_loop: bool
) -> None:
    """Firmware-backed sources run in a thread; quick ones inline; a source that does not say, a thread."""
    simulator = SimulatedSnp(root, measurement=MEASUREMENT, host_data=HOST_DATA)
    threads: list[int] = []

    class Source:
        def evidence(self, report_data: bytes) -> Evidence:
            threads.append(threading.get_ident())
            return simulator.evidence(report_data)

    source = Source()
    if blocking is not None:
        source.blocking = blocking  # type: ignore[attr-defined]

    async def processor(request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        return predictor_pb2.ProcessResponse(text="ok")

    client = _client(root)
    _, flight, _ = await SessionEngine(source, processor).open(client.start())
    client.receive(flight)
    assert client.verified and len(threads) == 1
    assert (threads[0] != threading.get_ident()) is off_the_loop
