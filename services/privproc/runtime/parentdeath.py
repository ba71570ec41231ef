"""A supervised service process dies with its supervisor.

``privproc up`` starts each child in its own session (it decides the order of
shutdown), so a child would outlive an ``up`` that is SIGKILLed, or killed by
its own supervisor after a timeout, and keep holding its ports. The
supervisor puts its pid in the child's environment
(:data:`SUPERVISOR_PID_ENV`); the child then calls :func:`die_with_parent`
first thing:

* on Linux it asks the kernel for SIGTERM when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), so its usual graceful stop runs;
* elsewhere (or if that call fails) a daemon thread polls the parent pid and
  sends itself SIGTERM when the child has been re-parented.

Either way the parent may already be gone when the child starts: that is
checked after arming, and the child stops at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping

#: The environment variable a supervisor sets to its own pid for its children.
SUPERVISOR_PID_ENV = "PRIVPROC_SUPERVISOR_PID"
#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``.
PR_SET_PDEATHSIG = 1
#: How often the portable watchdog looks at the parent pid.
POLL_SECONDS = 0.5


def die_with_parent(
    environ: Mapping[str, str] = os.environ, *, linux: bool = sys.platform.startswith("linux")
) -> bool:
    """Arm the death signal if a supervisor is named in ``environ``; whether one was.

    ``linux=False`` uses the portable watchdog (what other systems get).
    """
    text = environ.get(SUPERVISOR_PID_ENV)
    if not text or not text.isdigit():
        return False
    supervisor = int(text)
    if not (linux and _set_pdeathsig(signal.SIGTERM)):
        threading.Thread(target=_watch, args=(supervisor,), name="parent-watchdog", daemon=True).start()
    if os.getppid() != supervisor:  # it died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def _set_pdeathsig(sig: signal.Signals) -> bool:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    return False


def _watch(supervisor: int) -> None:
    while os.getppid() == supervisor:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
