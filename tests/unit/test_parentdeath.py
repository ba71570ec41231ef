"""A supervised process dies with its supervisor, on Linux (prctl) and with the portable watchdog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privproc.runtime import parentdeath

#: The child: arm, say so, then sleep far longer than the test waits.
CHILD = """
import sys, time
from privproc.runtime import parentdeath
assert parentdeath.die_with_parent(linux=sys.argv[1] == "linux")
print("armed", flush=True)
time.sleep(120)
"""

#: The supervisor: start the child in its own session (as `privproc up` does), print its pid, wait.
SUPERVISOR = """
import os, subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], sys.argv[2]],
    env={**os.environ, "PRIVPROC_SUPERVISOR_PID": str(os.getpid())},
    start_new_session=True,
)
print(child.pid, flush=True)
child.wait()
"""


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("mode", ["linux", "watchdog"])
def test_the_child_of_a_sigkilled_supervisor_stops(mode: str) -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, CHILD, mode], stdout=subprocess.PIPE, text=True
    )
    assert supervisor.stdout is not None
    child = int(supervisor.stdout.readline())
    assert supervisor.stdout.readline().strip() == "armed"
    time.sleep(0.3)
    assert _alive(child)  # armed, not fired: its supervisor lives
    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(child):
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the child outlived its supervisor")


def test_without_a_supervisor_nothing_is_armed() -> None:
    assert parentdeath.die_with_parent({}) is False
    assert parentdeath.die_with_parent({parentdeath.SUPERVISOR_PID_ENV: "not-a-pid"}) is False
