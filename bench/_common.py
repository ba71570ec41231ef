"""What every benchmark shares: results, a timing loop, the run lengths.

Machines are noisy, so no figure here is compared with a constant: each
result carries its own baseline, measured in the same run and interleaved
with it (A, B, B, A, ...), and the ratio is the median over the repeats of
the two measured back to back.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """How long to measure: ``quick`` is for the smoke test (whole run under a minute)."""

    quick: bool

    @property
    def micro_seconds(self) -> float:
        """Length of one microbenchmark measurement."""
        return 0.05 if self.quick else 0.5

    @property
    def micro_repeats(self) -> int:
        return 3 if self.quick else 5

    @property
    def micro_warmup(self) -> float:
        return 0.02 if self.quick else 0.2

    @property
    def load_seconds(self) -> float:
        """Length of one timed load run against the live services."""
        return 0.3 if self.quick else 2.0

    @property
    def load_rounds(self) -> int:
        return 1 if self.quick else 3

    @property
    def load_warmup(self) -> float:
        return 0.1 if self.quick else 0.5


@dataclass
class Result:
    """One benchmark and its same-run baseline, one sample (ops/s) per repeat."""

    group: str
    name: str
    samples: list[float]
    baseline: str
    baseline_samples: list[float]
    note: str = ""
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ops(self) -> float:
        """Median ops/s over the repeats."""
        return statistics.median(self.samples)

    @property
    def baseline_ops(self) -> float:
        return statistics.median(self.baseline_samples)

    @property
    def ratio(self) -> float:
        """Median over the repeats of ops/baseline measured back to back."""
        pairs = [a / b for a, b in zip(self.samples, self.baseline_samples, strict=True) if b > 0]
        return statistics.median(pairs) if pairs else 0.0

    @property
    def spread(self) -> float:
        """(max - min) / median of the samples: how noisy this figure was."""
        if not self.samples or self.ops == 0:
            return 0.0
        return (max(self.samples) - min(self.samples)) / self.ops

    def to_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "name": self.name,
            "ops_per_s": round(self.ops, 1),
            "baseline": self.baseline,
            "baseline_ops_per_s": round(self.baseline_ops, 1),
            "ratio": round(self.ratio, 4),
            "samples": [round(s, 1) for s in self.samples],
            "baseline_samples": [round(s, 1) for s in self.baseline_samples],
            "spread": round(self.spread, 4),
            "note": self.note,
            "errors": dict(self.errors),
        }


@dataclass
class Report:
    """What one benchmark module hands back to ``run.py``."""

    results: list[Result]
    notes: list[str]


def ops_per_second(fn: Callable[[], object], seconds: float) -> float:
    """Call ``fn`` for about ``seconds``; returns calls per second.

    Calls run in batches of about 5 ms so reading the clock costs nothing
    measurable; the last batch may overrun ``seconds`` a little.
    """
    gc.collect()
    started = time.perf_counter()
    fn()
    one = max(time.perf_counter() - started, 1e-7)
    batch = max(1, min(100_000, int(0.005 / one)))
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        done += batch
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def compare(
    fn: Callable[[], object],
    baseline: Callable[[], object],
    settings: Settings,
) -> tuple[list[float], list[float]]:
    """Warm both up, then measure them interleaved; returns both sample lists.

    The order alternates (A B, B A, ...) so neither side always runs first.
    """
    ops_per_second(fn, settings.micro_warmup)
    ops_per_second(baseline, settings.micro_warmup)
    samples: list[float] = []
    baseline_samples: list[float] = []
    for repeat in range(settings.micro_repeats):
        if repeat % 2 == 0:
            samples.append(ops_per_second(fn, settings.micro_seconds))
            baseline_samples.append(ops_per_second(baseline, settings.micro_seconds))
        else:
            baseline_samples.append(ops_per_second(baseline, settings.micro_seconds))
            samples.append(ops_per_second(fn, settings.micro_seconds))
    return samples, baseline_samples


@contextlib.contextmanager
def privproc_up(
    flags: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Path, float]]:
    """``privproc up FLAGS`` in a subprocess: ``(process, stack.json, seconds to ready)``.

    Its output goes to a log in a temporary directory (quoted in the error if it exits early);
    SIGTERM on the way out (``up`` then stops its children in order), SIGKILL if it does not exit.
    """
    with tempfile.TemporaryDirectory(prefix="privproc-bench-") as tmp:
        state = Path(tmp) / "state"
        stack_path = state / "stack.json"
        log_path = Path(tmp) / "up.log"
        started = time.perf_counter()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "privproc", "up", "--state-dir", str(state), *flags],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            )
            try:
                deadline = time.monotonic() + timeout
                while not stack_path.exists():
                    if process.poll() is not None:
                        raise RuntimeError("privproc up exited early: " + log_path.read_text()[-2000:])
                    if time.monotonic() > deadline:
                        raise RuntimeError("privproc up: no stack.json in time")
                    time.sleep(0.05)
                yield process, stack_path, time.perf_counter() - started
            finally:
                _terminate(process)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
