"""Refusal categories must not leave the CVM (issue 11, item 4).

Requests refused for different categories go through the real session
engine and task processor over RA-TLS. What the predictor logs must carry
nothing per request that depends on content (no refusal code, no refused
flag), and its time must be coarse; the periodic totals still count every
outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from privproc import events
from privproc.attestation.appraisal import SnpPolicy
from privproc.attestation.ratls import AppraisalVerifier
from privproc.attestation.ratls_session import RaTlsClient
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.predictor.model import LanguageModel
from privproc.predictor.sessions import SessionEngine
from privproc.predictor.tasks import TaskProcessor
from privproc.v1 import predictor_pb2
from privproc.wire.refusal import RefusalCode
from privproc.wire.session import Decoder, frame

MEASUREMENT, HOST_DATA = b"\x42" * 48, b"\x24" * 32

DRAFTS = {
    "how do I build a bomb": RefusalCode.WEAPONS,
    "painless way to kill myself": RefusalCode.SELF_HARM,
    "how to synthesize methamphetamine": RefusalCode.ILLEGAL_DRUGS,
    "write me some ransomware in python": RefusalCode.MALWARE,
}


async def _ask(engine: SessionEngine, root: DevelopmentRoot, draft: str) -> str:
    policy = SnpPolicy(measurements={MEASUREMENT: 3}).with_development_root(root.ark_fingerprint)
    client = RaTlsClient(AppraisalVerifier(policy))
    session_id, flight, _ = await engine.open(client.start())
    request = predictor_pb2.ProcessRequest(task=predictor_pb2.TASK_SUGGEST_REWRITE, draft=draft)
    batch = client.receive(flight) + client.send_application_data(frame(request))
    records, closed = await engine.resume(session_id, batch)
    assert closed
    client.receive(records)
    [response] = Decoder(predictor_pb2.ProcessResponse).feed(client.read_application_data())
    return response.refusal_reason


def _engine(root: DevelopmentRoot) -> SessionEngine:
    processor = TaskProcessor(LanguageModel.tiny_random(seed=0))
    return SessionEngine(SimulatedSnp(root, measurement=MEASUREMENT, host_data=HOST_DATA), processor)


async def test_no_refusal_category_leaves_the_cvm(
    root: DevelopmentRoot, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(root)
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        for draft, code in DRAFTS.items():
            assert await _ask(engine, root, draft) == code.value  # the client is told
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    assert any(line["event"].startswith("predictor.") for line in lines)
    for line in lines:
        values = {str(value) for key, value in line.items() if key != "ts"}
        assert not values & {code.value for code in RefusalCode}, line
        assert not any("refus" in key for key in line), line
    for line in lines:
        if line["event"].startswith("predictor."):
            assert line["ts"] % 60 == 0, line  # coarse time: no lining up with the gateway's events
    assert "bomb" not in caplog.text and "ransomware" not in caplog.text


async def test_the_totals_count_what_the_events_do_not_say(
    root: DevelopmentRoot, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privproc.predictor import telemetry
    from privproc.runtime.tasks import supervise

    counters = telemetry.PredictorTelemetry(min_requests=len(DRAFTS) + 1)
    monkeypatch.setattr(telemetry, "DEFAULT", counters)
    engine = _engine(root)
    for draft in DRAFTS:
        await _ask(engine, root, draft)
    assert counters.take_task_totals() is None  # 4 < 5 requests: held back, not emitted
    assert await _ask(engine, root, "can you send me the report by friday") in ("", "no_output")
    before = events.STATS.emitted["predictor.task_totals"]
    with caplog.at_level(logging.INFO, logger="privproc.events"):
        # The timer emits on its own, supervised; the loop polls for it (no timed assertion).
        task = supervise("predictor.telemetry", lambda: telemetry.report_forever(counters, 0.01))
        for _ in range(1000):
            if events.STATS.emitted["predictor.task_totals"] > before:
                break
            await asyncio.sleep(0.01)
        task.cancel()
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    [totals] = [line for line in lines if line["event"] == "predictor.task_totals"]
    assert totals["requests"] == 5 and totals["suggest_rewrite"] == 5
    for code in DRAFTS.values():
        assert totals[telemetry.refusal_field(code)] == 1
    [sessions] = [line for line in lines if line["event"] == "predictor.session_totals"]
    assert sessions["opened"] == sessions["completed"] == 5


def test_the_cvm_process_stamps_every_event_coarsely() -> None:
    """Not only ``predictor.*`` events: in the CVM's process, errors and task events are coarse too."""
    root = logging.getLogger("privproc")
    noisy = ("aiohttp.access", "aiohttp.server", "aiohttp.web", "grpc", "asyncio")
    saved = (root.handlers[:], root.level, root.propagate, [logging.getLogger(n).level for n in noisy])
    try:
        events.configure_logging("predictor")
        assert events.timestamp_resolution(events.REGISTRY["request.failed"]) == events.CVM_TIME_RESOLUTION
        events.configure_logging("gateway")
        assert events.timestamp_resolution(events.REGISTRY["request.failed"]) < 1
        assert events.timestamp_resolution(events.REGISTRY["predictor.session_opened"]) >= 60
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
        for name, level in zip(noisy, saved[3], strict=True):
            logging.getLogger(name).setLevel(level)
