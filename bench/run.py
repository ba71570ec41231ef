"""Run every privproc benchmark and print ratios against same-run baselines.

Usage: ``python bench/run.py [--quick] [--json] [--only NAME ...]``

* ``--quick`` shortens every measurement (the smoke test; under a minute, most of it
  starting ``privproc up`` and importing torch).
* ``--json`` prints one JSON document instead of the table.
* ``--only NAME`` runs the named benchmarks alone (repeatable).

Figures are ops/s on this machine, now; only the ratios are meant to be
compared across runs or machines. Nothing here asserts a time. The exit
status is 1 if a benchmark saw a functional error (a failed call or an
answer that did not check out), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# ``python bench/run.py`` puts bench/ itself on sys.path; the package needs the repo root.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench import (  # noqa: E402
    bench_gateway,
    bench_ledger,
    bench_load,
    bench_ohttp,
    bench_policy,
    bench_private,
    bench_streaming,
    bench_summaries,
    bench_tokens,
)
from bench._common import Report, Result, Settings  # noqa: E402

BENCHMARKS = (
    ("ohttp", bench_ohttp.run),
    ("gateway", bench_gateway.run),
    ("tokens", bench_tokens.run),
    ("ledger", bench_ledger.run),
    ("policy", bench_policy.run),
    ("private", bench_private.run),
    ("streaming", bench_streaming.run),
    ("load", bench_load.run),
    ("summaries", bench_summaries.run),
)


def _format_table(results: list[Result]) -> str:
    header = ("name", "ops/s", "baseline", "baseline ops/s", "ratio")
    rows = [
        (r.name, f"{r.ops:,.0f}", r.baseline, f"{r.baseline_ops:,.0f}", f"{r.ratio:.3f}") for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = (False, True, False, True, True)

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short measurements (smoke test)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument(
        "--only", action="append", choices=[name for name, _ in BENCHMARKS], help="run only this benchmark"
    )
    args = parser.parse_args(argv)
    settings = Settings(quick=args.quick)

    reports: list[Report] = []
    started = time.perf_counter()
    for name, bench in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        reports.append(bench(settings))
    wall = time.perf_counter() - started

    results = [r for report in reports for r in report.results]
    notes = [n for report in reports for n in report.notes]
    errors = {r.name: r.errors for r in results if r.errors}
    if args.json:
        document = {
            "quick": settings.quick,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "wall_seconds": round(wall, 2),
            "statistic": "median of repeats; ratio = median of per-repeat ratios",
            "results": [r.to_json() for r in results],
            "notes": notes,
            "errors": errors,
        }
        print(json.dumps(document, indent=2))
    else:
        print(_format_table(results))
        print()
        for result in results:
            if result.note:
                print(f"* {result.name}: {result.note}")
        for note in notes:
            print(f"* {note}")
        print(
            f"* python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"{'quick' if settings.quick else 'full'} run, {wall:.1f} s"
        )
        for name, errs in errors.items():
            print(f"! ERRORS in {name}: {errs}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
