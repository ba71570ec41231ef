"""``privproc serve log-sidecar`` as a process on a real Unix socket, and the log sink writing to it."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from privproc import events
from privproc.runtime.logsink import LogSink
from privproc.wire import logrecord


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path is at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pps"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_sidecar(directory: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    socket_path, output = directory / "events.sock", directory / "events.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privproc",
            "serve",
            "log-sidecar",
            "--socket-path",
            str(socket_path),
            "--output",
            str(output),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline())
    assert ready == {"service": "log-sidecar", "ready": {"socket": str(socket_path)}}
    return process, socket_path, output


def stop(process: subprocess.Popen[bytes]) -> bytes:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_for(condition: Any, timeout: float = 30.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)


def test_only_allowed_records_reach_the_output_and_drops_are_reported(short_dir: Path) -> None:
    process, socket_path, output = start_sidecar(short_dir, "--interval-seconds", "0.3")
    try:
        good = [
            logrecord.encode("predictor.session_opened", {"sessions": 3}),
            logrecord.encode("gateway.key_retired", {"key_id": 7}),
        ]
        bad = [
            logrecord.encode("predictor.session_opened", {"sessions": "Dear Bob, my secret"}),  # value
            logrecord.encode("predictor.session_opened ", {"sessions": 3}),  # undeclared look-alike
            logrecord.encode("predictor.session_opened", {"sessions": 3, "text": "hi"}),  # fields
            (5).to_bytes(4, "big") + b"\n{}\n\x00",  # malformed
            (8000).to_bytes(4, "big") + b"CANARY" * 1333 + b"xx",  # oversize, skipped
        ]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as one, socket.socket(socket.AF_UNIX) as two:
            one.connect(str(socket_path))
            two.connect(str(socket_path))
            one.sendall(good[0] + bad[0] + bad[1])
            two.sendall(bad[2] + bad[3] + bad[4] + good[1])
            # A length far over any bound: that connection is closed, the other goes on.
            two.sendall((1 << 30).to_bytes(4, "big") + good[0])
            one.sendall(good[1])

        def reported() -> bool:
            return output.exists() and any(
                r["event"] == "sidecar.dropped" and r["accepted"] == 3 and r["oversize"] == 2
                for r in lines(output)
            )

        wait_for(reported)
    finally:
        stderr = stop(process)
    records = lines(output)
    text = output.read_text()
    assert "CANARY" not in text and "secret" not in text and "Bob" not in text
    passed = [r for r in records if r["event"] not in ("sidecar.dropped", "service.stopping")]
    # Two connections: their records interleave in any order.
    assert sorted((r["event"], r.get("sessions"), r.get("key_id")) for r in passed) == [
        ("gateway.key_retired", None, 7),
        ("gateway.key_retired", None, 7),
        ("predictor.session_opened", 3, None),
    ]
    last = [r for r in records if r["event"] == "sidecar.dropped"][-1]
    assert {k: v for k, v in last.items() if k != "ts"} == {
        "event": "sidecar.dropped",
        "accepted": 3,
        "oversize": 2,
        "malformed": 1,
        "undeclared": 1,
        "fields": 1,
        "value": 1,
    }
    # Coarse time: every exported line is stamped on the minute.
    assert all(isinstance(r["ts"], int) and r["ts"] % 60 == 0 for r in records)
    assert b"CANARY" not in stderr


def test_a_sidecar_refuses_to_start_with_another_allowlist(short_dir: Path) -> None:
    base = [sys.executable, "-m", "privproc", "serve", "log-sidecar", "--socket-path", str(short_dir / "s")]
    wrong = subprocess.run(
        [*base, "--allowlist-digest", "00" * 32], capture_output=True, timeout=60, check=False
    )
    assert wrong.returncode == 2
    assert b"allow-list differs" in wrong.stderr and wrong.stdout == b""
    process, _, _ = start_sidecar(short_dir, "--allowlist-digest", events.allowlist_digest())
    stop(process)


def test_the_sink_reports_once_retries_and_delivers_when_the_sidecar_comes_up(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    socket_path = short_dir / "events.sock"
    sink = LogSink(socket_path, capacity=100, backoff_seconds=0.01, max_backoff_seconds=0.05).start()
    events.install_sink(sink)
    try:
        with caplog.at_level("DEBUG", logger="privproc.events"):
            time.sleep(0.3)  # several connection attempts fail
            for n in range(150):
                events.emit(events.PredictorSessionOpened(sessions=n))
            process, _, output = start_sidecar(short_dir)
            try:
                counts = sink.close(timeout=10)
                wait_for(lambda: output.exists() and len(lines(output)) >= counts.sent)
            finally:
                stop(process)
    finally:
        events.install_sink(None)
    # The outage was reported once, through the fallback log; nothing else went there.
    reports = [r for r in caplog.records if "log_sink.unavailable" in r.getMessage()]
    assert len(reports) == 1 and "predictor.session_opened" not in caplog.text
    assert counts.offered == 150 and counts.dropped == 50  # the queue holds 100
    assert counts.offered == counts.sent + counts.dropped + counts.lost
    assert counts.sent == 100 and counts.lost == 0
    delivered = [r for r in lines(output) if r["event"] == "predictor.session_opened"]
    assert [r["sessions"] for r in delivered] == list(range(100))


def test_flood_the_emitter_never_blocks_drops_are_counted_and_memory_stays_flat(short_dir: Path) -> None:
    """Offer events as fast as one thread can for 10 s to a real sidecar process."""
    process, socket_path, output = start_sidecar(short_dir)
    try:
        time.sleep(0.5)
        rss_start = rss_kib(process.pid)
        sink = LogSink(socket_path, capacity=10_000).start()
        spec = events.PredictorSessionOpened.spec
        values = [{"sessions": n} for n in range(1000)]
        offered = 0
        longest = 0.0
        started = time.monotonic()
        rss_peak = rss_start
        next_sample = started + 1
        while (now := time.monotonic()) - started < 10:
            for value in values:
                t0 = time.perf_counter()
                sink(spec, value)
                longest = max(longest, time.perf_counter() - t0)
            offered += len(values)
            if now >= next_sample:
                rss_peak = max(rss_peak, rss_kib(process.pid))
                next_sample = now + 1
        elapsed = time.monotonic() - started
        counts = sink.close(timeout=30)
        wait_for(lambda: sum(1 for _ in output.open()) >= counts.sent, timeout=120, interval=0.5)
        rss_end = rss_kib(process.pid)
    finally:
        stop(process)
    delivered = sum(1 for r in lines(output) if r["event"] == "predictor.session_opened")
    figures = {
        "offered_per_second": round(offered / elapsed),
        "delivered_per_second": round(delivered / elapsed),
        "offered": offered,
        "delivered": delivered,
        "dropped": counts.dropped,
        "lost": counts.lost,
        "max_queued": sink.max_queued,
        "longest_offer_ms": round(longest * 1000, 3),
        "rss_start_kib": rss_start,
        "rss_peak_kib": rss_peak,
        "rss_end_kib": rss_end,
    }
    print("flood figures:", json.dumps(figures))
    assert counts.offered == offered
    assert counts.offered == counts.sent + counts.dropped + counts.lost
    assert counts.lost == 0 and delivered == counts.sent
    assert sink.max_queued <= sink.capacity
    assert counts.dropped > 0 or delivered == offered
    assert max(rss_peak, rss_end) - rss_start < 50 * 1024
    last = [r for r in lines(output) if r["event"] == "sidecar.dropped"][-1]
    assert last["accepted"] == delivered and last["value"] == last["malformed"] == last["oversize"] == 0


def test_a_connection_lost_mid_stream_is_counted_and_the_sink_reconnects(short_dir: Path) -> None:
    path = short_dir / "events.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        sink = LogSink(path, capacity=1000, backoff_seconds=0.01, max_backoff_seconds=0.02).start()
        spec = events.PredictorSessionOpened.spec
        first, _ = server.accept()
        first.close()  # the sidecar went away: what the sink sends now fails
        deadline = time.monotonic() + 30
        while sink.counts().lost == 0:
            assert time.monotonic() < deadline
            sink(spec, {"sessions": 1})
            time.sleep(0.001)
        second, _ = server.accept()  # it came back: the sink reconnects
        for n in range(500):
            sink(spec, {"sessions": n})
        counts = sink.close(timeout=10)
        received = bytearray()
        second.settimeout(10)
        while chunk := second.recv(65536):
            received += chunk
        second.close()
    decoder = logrecord.Decoder()
    delivered = [logrecord.parse(body) for body in decoder.feed(bytes(received)) if isinstance(body, bytes)]
    assert counts.lost > 0
    assert counts.offered == counts.sent + counts.dropped + counts.lost
    assert len(delivered) == counts.sent
    assert delivered[-500:] == [("predictor.session_opened", {"sessions": n}) for n in range(500)]
