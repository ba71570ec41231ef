"""The predictor's session engine: RA-TLS in, one framed request answered, session dropped."""

from __future__ import annotations

import threading

import pytest

from privproc.attestation.appraisal import SnpPolicy
from privproc.attestation.evidence import Evidence
from privproc.attestation.ratls import AppraisalVerifier, RaTlsClient
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.errors import NotFoundError, UnavailableError
from privproc.predictor.protocol import Decoder, frame
from privproc.predictor.sessions import SessionEngine
from privproc.v1 import predictor_pb2

MEASUREMENT, HOST_DATA = b"\x42" * 48, b"\x24" * 32


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> DevelopmentRoot:
    return DevelopmentRoot.load_or_create(tmp_path_factory.mktemp("root"))


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


async def test_idle_sessions_expire_and_the_engine_is_bounded(root: DevelopmentRoot) -> None:
    now = [0.0]
    engine = _engine(root, [], ttl_seconds=5, max_sessions=1, clock=lambda: now[0])
    await engine.open(_client(root).start())
    with pytest.raises(UnavailableError):
        await engine.open(_client(root).start())
    now[0] = 6
    await engine.open(_client(root).start())  # the idle one was dropped
    assert len(engine) == 1


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
