"""``privproc stats``: a short live table of the stack's telemetry files.

``privproc up`` without ``--otlp-endpoint`` has each service write
``STATE_DIR/telemetry/<service>.metrics.jsonl`` (one line per data point per export; the
values are cumulative). This command reads the end of each file and prints, per service:
requests per second (between its last two exports), p50 and p99 latency (from the
duration histograms' buckets over that interval, or since start when nothing came in it:
the upper bound of the bucket the quantile falls in), and errors by reason (since start);
then the log sidecar's drops by reason. ``--once`` prints the table once (for scripts
and tests); otherwise it is redrawn every ``--interval`` seconds until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privproc.runtime import telemetry_files as files
from privproc.stackfile import DEFAULT_STATE_DIR

#: The duration histograms a request is counted in.
REQUEST_DURATIONS = (files.RPC_SERVER_DURATION, files.HTTP_SERVER_DURATION)
#: Read at most this much of the end of a file: enough for several exports.
TAIL_BYTES = 512 << 10


def register(sub: Any) -> None:
    stats = sub.add_parser("stats", help="a live table of the stack's telemetry files")
    stats.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="privproc up's state directory"
    )
    stats.add_argument("--once", action="store_true", help="print the table once and exit")
    stats.add_argument("--interval", type=float, default=5.0, help="seconds between two redraws")
    stats.set_defaults(func=stats_cmd)


def tail_records(path: Path, limit: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The whole JSON lines at the end of ``path`` (a partial first or last line is skipped)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if size > limit:
        lines = lines[1:]
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


@dataclass
class Export:
    """One export of one service: its data points, by metric name."""

    ts: float
    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def requests(self) -> int:
        return sum(int(p.get("count", 0)) for name in REQUEST_DURATIONS for p in self.points.get(name, ()))

    def buckets(self) -> tuple[list[float], list[int]]:
        """The request duration histograms' bounds and bucket counts, summed over every point."""
        bounds: list[float] = []
        counts: list[int] = []
        for name in REQUEST_DURATIONS:
            for point in self.points.get(name, ()):
                if not counts:
                    bounds, counts = list(point["bounds"]), [0] * len(point["buckets"])
                if list(point["bounds"]) == bounds:
                    counts = [a + b for a, b in zip(counts, point["buckets"], strict=True)]
        return bounds, counts

    def errors(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for point in self.points.get(files.REQUEST_ERRORS, ()):
            found[str(point["attributes"].get("error.type", "other"))] += int(point.get("value", 0))
        return found

    def sidecar(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for point in self.points.get(files.SIDECAR_RECORDS, ()):
            found[str(point["attributes"].get("privproc.field", "other"))] += int(point.get("value", 0))
        return found


def exports(records: Iterable[Mapping[str, Any]]) -> list[Export]:
    """Records grouped by export (one ``ts`` per export), oldest first."""
    by_ts: dict[float, Export] = {}
    for record in records:
        ts, metric = record.get("ts"), record.get("metric")
        if not isinstance(ts, int | float) or not isinstance(metric, str):
            continue
        by_ts.setdefault(float(ts), Export(float(ts))).points.setdefault(metric, []).append(dict(record))
    return [by_ts[ts] for ts in sorted(by_ts)]


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The upper bound (seconds) of the bucket holding the ``q`` quantile; inf past the last bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return bounds[index] if index < len(bounds) else float("inf")
    return float("inf")


@dataclass(frozen=True)
class Row:
    service: str
    rate: float | None
    requests: int
    p50: float | None
    p99: float | None
    errors: Counter[str]


def service_row(service: str, history: Sequence[Export]) -> Row | None:
    if not history:
        return None
    last = history[-1]
    bounds, counts = last.buckets()
    rate = None
    if len(history) > 1:
        before = history[-2]
        elapsed = last.ts - before.ts
        delta = last.requests() - before.requests()
        rate = delta / elapsed if elapsed > 0 else None
        old_bounds, old_counts = before.buckets()
        if delta > 0 and old_bounds == bounds and len(old_counts) == len(counts):
            counts = [a - b for a, b in zip(counts, old_counts, strict=True)]
    return Row(
        service,
        rate,
        last.requests(),
        quantile(bounds, counts, 0.5),
        quantile(bounds, counts, 0.99),
        last.errors(),
    )


def _millis(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return ">max"
    return f"{seconds * 1000:g}"


def render(rows: Sequence[Row], sidecar: Mapping[str, int] | None) -> str:
    """The table ``privproc stats`` prints."""
    lines = [f"{'service':<10} {'req/s':>8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}  errors by reason"]
    for row in rows:
        rate = "-" if row.rate is None else f"{row.rate:.2f}"
        errors = " ".join(f"{reason}={count}" for reason, count in sorted(row.errors.items())) or "-"
        lines.append(
            f"{row.service:<10} {rate:>8} {row.requests:>9} {_millis(row.p50):>8} {_millis(row.p99):>8}"
            f"  {errors}"
        )
    if not rows:
        lines.append("(no telemetry files yet)")
    if sidecar is not None:
        accepted = sidecar.get("accepted", 0)
        drops = " ".join(
            f"{reason}={count}" for reason, count in sorted(sidecar.items()) if reason != "accepted"
        )
        lines.append(f"log sidecar: accepted={accepted} drops: {drops or '-'}")
    return "\n".join(lines)


def _sidecar_from_events(path: Path) -> dict[str, int] | None:
    """The last ``sidecar.dropped`` event in the sidecar's JSON-lines output, if any."""
    for record in reversed(tail_records(path)):
        if record.get("event") == "sidecar.dropped":
            return {key: value for key, value in record.items() if isinstance(value, int) and key != "ts"}
    return None


def table(directory: Path) -> str:
    """The table for the telemetry files in ``directory``."""
    rows = []
    sidecar: dict[str, int] | None = None
    for path in sorted(directory.glob(f"*{files.METRICS_SUFFIX}")):
        service = path.name.removesuffix(files.METRICS_SUFFIX)
        history = exports(tail_records(path))
        if service == "log-sidecar":
            if history:
                sidecar = dict(history[-1].sidecar())
            continue
        row = service_row(service, history)
        if row is not None:
            rows.append(row)
    if sidecar is None:
        sidecar = _sidecar_from_events(directory / files.PREDICTOR_EVENTS_FILE)
    return render(rows, sidecar)


def stats_cmd(args: argparse.Namespace) -> int:
    directory = args.state_dir / files.STATE_SUBDIR
    if args.once:
        print(table(directory))
        return 0
    while True:
        # Clear the terminal and draw again: a live view until Ctrl-C.
        print("\x1b[H\x1b[2J" + table(directory), flush=True)
        time.sleep(args.interval)
