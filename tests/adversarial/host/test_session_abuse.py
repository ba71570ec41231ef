"""Attacks on the predictor's session engine (issue 11, items 5 and 6, CVM side).

Item 5: handshake-only sessions, kept alive with empty or handshake-only
records, used to hold every slot of a predictor for ever. Item 6: several
``ContinueSession`` calls on one session each ran the model, so one token
bought many model runs.
"""

from __future__ import annotations

import asyncio
import contextlib

from privproc.attestation.appraisal import SnpPolicy
from privproc.attestation.ratls import AppraisalVerifier
from privproc.attestation.ratls_session import RaTlsClient
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.errors import PrivprocError
from privproc.predictor.sessions import SessionEngine
from privproc.v1 import predictor_pb2
from privproc.wire.session import Decoder, frame

MEASUREMENT, HOST_DATA = b"\x42" * 48, b"\x24" * 32
SLOTS = 64


def _client(root: DevelopmentRoot) -> RaTlsClient:
    policy = SnpPolicy(measurements={MEASUREMENT: 3}).with_development_root(root.ark_fingerprint)
    return RaTlsClient(AppraisalVerifier(policy))


def _request(text: str = "the venue is booked") -> predictor_pb2.ProcessRequest:
    return predictor_pb2.ProcessRequest(
        task=predictor_pb2.TASK_SUMMARIZE, messages=[predictor_pb2.ChatMessage(sender="a", text=text)]
    )


class CountingModel:
    """A processor that counts its runs and yields to the loop while "generating"."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self, request: predictor_pb2.ProcessRequest) -> predictor_pb2.ProcessResponse:
        self.runs += 1
        await asyncio.sleep(0.01)  # a model takes time: concurrent calls overlap with this one
        return predictor_pb2.ProcessResponse(text="summary", model_id="test")


def _engine(root: DevelopmentRoot, model: CountingModel, now: list[float]) -> SessionEngine:
    source = SimulatedSnp(root, measurement=MEASUREMENT, host_data=HOST_DATA)
    return SessionEngine(source, model, max_sessions=SLOTS, clock=lambda: now[0])


async def _victim_gets_a_summary(engine: SessionEngine, root: DevelopmentRoot) -> str:
    client = _client(root)
    session_id, flight, _ = await engine.open(client.start())
    finished = client.receive(flight)
    records, closed = await engine.resume(
        session_id, finished + client.send_application_data(frame(_request()))
    )
    assert closed
    client.receive(records)
    [response] = Decoder(predictor_pb2.ProcessResponse).feed(client.read_application_data())
    return response.text


async def _hold(engine: SessionEngine, root: DevelopmentRoot) -> list[bytes]:
    """The attacker opens every slot with real ClientHellos and never finishes a handshake."""
    held = []
    for _ in range(SLOTS):
        session_id, _, _ = await engine.open(_client(root).start())
        held.append(session_id)
    return held


# Two bytes of a TLS record header: handshake-only input that completes nothing and breaks nothing.
PARTIAL_RECORD = b"\x17\x03"


async def _keep_alive(engine: SessionEngine, held: list[bytes], records: bytes) -> None:
    """``records`` on every held session (a refusal costs the attacker nothing)."""
    for session_id in held:
        with contextlib.suppress(PrivprocError):
            await engine.resume(session_id, records)


async def test_kept_alive_handshakes_do_not_lock_the_predictor(root: DevelopmentRoot) -> None:
    now = [0.0]
    model = CountingModel()
    engine = _engine(root, model, now)
    held = await _hold(engine, root)
    # The attacker refreshes every held session every 5 s for a minute, then a victim arrives.
    for tick in range(1, 13):
        now[0] = tick * 5.0
        await _keep_alive(engine, held, PARTIAL_RECORD if tick == 1 else b"")
    now[0] = 61.0
    assert await _victim_gets_a_summary(engine, root) == "summary"
    assert model.runs == 1


async def test_a_new_client_is_admitted_beside_64_fresh_handshakes(root: DevelopmentRoot) -> None:
    now = [0.0]
    model = CountingModel()
    engine = _engine(root, model, now)
    held = await _hold(engine, root)
    now[0] = 2.0  # a real client finishes its handshake in one round trip: these are stale
    await _keep_alive(engine, held, PARTIAL_RECORD)
    assert await _victim_gets_a_summary(engine, root) == "summary"
    assert len(engine) <= SLOTS


async def test_concurrent_resumes_run_the_model_once(root: DevelopmentRoot) -> None:
    now = [0.0]
    model = CountingModel()
    engine = _engine(root, model, now)
    client = _client(root)
    session_id, flight, _ = await engine.open(client.start())
    finished = client.receive(flight)
    # The first batch completes the request; each further batch carries another whole request.
    batches = [finished + client.send_application_data(frame(_request()))]
    batches += [client.send_application_data(frame(_request(f"again {n}"))) for n in range(5)]
    results = await asyncio.gather(
        *(engine.resume(session_id, batch) for batch in batches), return_exceptions=True
    )
    assert model.runs == 1
    answered = [result for result in results if not isinstance(result, BaseException)]
    assert len(answered) == 1 and answered[0][1] is True
    refused = [result for result in results if isinstance(result, BaseException)]
    assert len(refused) == 5 and all(isinstance(error, PrivprocError) for error in refused)


async def test_a_replayed_batch_does_not_run_the_model_again(root: DevelopmentRoot) -> None:
    now = [0.0]
    model = CountingModel()
    engine = _engine(root, model, now)
    client = _client(root)
    session_id, flight, _ = await engine.open(client.start())
    batch = client.receive(flight) + client.send_application_data(frame(_request()))
    results = await asyncio.gather(
        *(engine.resume(session_id, batch) for _ in range(4)), return_exceptions=True
    )
    assert model.runs == 1
    assert sum(1 for result in results if not isinstance(result, BaseException)) == 1
