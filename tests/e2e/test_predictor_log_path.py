"""The predictor's only log path is its sidecar: once its socket is set, nothing reaches its stderr.

Every channel a library writes to stderr by is exercised in a real process with a canary in
the text, with no sidecar listening: events are dropped and counted by the sink, everything
else by :mod:`privproc.runtime.quiet`, and stderr stays empty. Then ``privproc serve
predictor --log-socket`` itself, failing to start (no verifier), with and without its sidecar.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.e2e.test_log_sidecar import lines, short_dir, start_sidecar, stop

__all__ = ["short_dir"]  # the fixture, imported for the tests below

CANARY = "CANARY-4b1d"

#: Runs in a fresh interpreter: route to a socket nobody listens on, then try every channel.
_EVERY_CHANNEL = textwrap.dedent(
    """
    import asyncio, gc, json, logging, os, sys, threading, warnings
    from pathlib import Path

    from privproc import events
    from privproc.runtime import logsink, quiet

    CANARY = sys.argv[2]
    events.configure_logging("predictor", logging.DEBUG)  # as `privproc serve` does first
    sink = logsink.route_process_to_sidecar(Path(sys.argv[1]), capacity=10)
    for n in range(25):
        events.emit(events.PredictorSessionOpened(sessions=n))
    print(CANARY, file=sys.stderr)
    sys.__stderr__.write(CANARY)
    os.write(2, CANARY.encode())  # what C code does
    warnings.warn(CANARY)
    warnings.filterwarnings("always", message=CANARY)  # a library turning its warnings back on
    warnings.warn(CANARY)
    logging.warning(CANARY)
    logging.getLogger("grpc._server").error(CANARY)
    logging.getLogger("privproc.something").error(CANARY)

    def fail() -> None:
        raise ValueError(CANARY)

    thread = threading.Thread(target=fail)
    thread.start()
    thread.join()

    async def never_retrieved() -> None:
        task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
        failing = asyncio.ensure_future(asyncio.to_thread(fail))
        await asyncio.sleep(0.2)
        del failing, task

    asyncio.run(never_retrieved())
    gc.collect()  # "Task exception was never retrieved" is logged when the task is collected
    # Libraries loaded after the switch: their own handlers, progress bars, warnings.
    from transformers.utils import logging as transformers_logging
    transformers_logging.get_logger("transformers.generation").warning(CANARY)
    import torch  # noqa: F401  (its import, and its C++ side's warnings, are the point)
    from tqdm import tqdm
    for _ in tqdm(range(3), desc=CANARY, disable=False):
        pass
    counts = sink.close(timeout=5)
    print(json.dumps({"sink": counts.__dict__, "silenced": quiet.SILENCED.snapshot()}), flush=True)
    # An exception nobody catches, quoting content (as a tokenizer's can): the main thread's hook.
    raise RuntimeError(CANARY)
    """
)


def test_with_its_socket_set_and_no_sidecar_nothing_reaches_stderr_and_drops_are_counted(
    short_dir: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _EVERY_CHANNEL, str(short_dir / "nobody.sock"), CANARY],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert result.stderr == b""
    assert result.returncode == 1  # the uncaught exception still fails the process
    report = json.loads(result.stdout.decode().splitlines()[-1])
    sink = report["sink"]
    # Queue of 10: the first ten wait for a sidecar that never comes (lost at close), the rest dropped.
    assert sink == {"offered": 25, "sent": 0, "dropped": 15, "lost": 10, "queued": 0}
    silenced = report["silenced"]
    assert silenced["stderr"] >= 3  # print, sys.__stderr__, tqdm
    assert silenced["warnings"] >= 1  # the one a library's own filter let through
    # The root's record, privproc.something's, and the sink's own "log_sink.unavailable" report
    # (its fallback: dropped, never written). grpc's, asyncio's ("Task exception was never
    # retrieved") and transformers' are below their loggers' levels: never even made.
    assert silenced["logging"] >= 3
    assert silenced["uncaught"] >= 1  # the thread's (the main thread's comes after the report)
    assert CANARY.encode() not in result.stdout


_PREDICTOR = (
    "serve", "predictor", "--verifier", "127.0.0.1:9", "--model", "tiny-random", "--embedder", "none",
)  # fmt: skip


def _predictor(directory: Path, socket_path: Path) -> subprocess.CompletedProcess[bytes]:
    """``privproc serve predictor`` with its sidecar socket set; it cannot reach its verifier."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "privproc",
            *_PREDICTOR,
            "--log-socket",
            str(socket_path),
            "--verifier-ca-file",
            str(directory / "ca.pem"),
            "--state-dir",
            str(directory / "state"),
            "--simulator-dir",
            str(directory / "simulator"),
        ],
        capture_output=True,
        timeout=180,
        check=False,
    )


def test_a_predictor_that_cannot_start_writes_nothing_to_stderr_its_sidecar_gets_the_reason(
    short_dir: Path,
) -> None:
    # No sidecar listening: the failure and every event are dropped, nothing is written.
    alone = _predictor(short_dir, short_dir / "nobody.sock")
    assert alone.returncode == 2 and alone.stderr == b"" and alone.stdout == b""
    # With its sidecar: what it did, and why it stopped (a reason, never a text).
    process, socket_path, output = start_sidecar(short_dir)
    try:
        watched = _predictor(short_dir, socket_path)
    finally:
        stop(process)
    assert watched.returncode == 2 and watched.stderr == b""
    records = lines(output)
    assert {"event": "predictor.hardened", "write_guard": True, "core_dumps_off": True} in [
        {k: v for k, v in record.items() if k != "ts"} for record in records
    ]
    failed = [record for record in records if record["event"] == "service.start_failed"]
    assert [(r["service"], r["reason"]) for r in failed] == [("predictor", "upstream")]
