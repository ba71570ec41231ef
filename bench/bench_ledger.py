"""The transparency ledger: append throughput and proof latency.

* Storage appends/s: ``LedgerStore.append_batch`` in batches of 1,000 (leaf
  hashes, every new stored hash, one fsync'd SQLite transaction per batch)
  against inserting the same rows into a plain SQLite table with the same
  durability settings.
* Service appends/s: publisher-signed ``Append`` calls over gRPC from a load
  generator in another process (128 calls in flight; one entry per call, or
  32 per ``AppendBatch``), sequenced in batches, each
  batch checkpointed and cosigned by a witness over HTTP — against the same
  generator calling gRPC health ``Check`` on the same server.
* Proofs at 10^6 entries (10^5 with --quick; 10^7 too with
  ``PRIVPROC_BENCH_LARGE=1``): inclusion and consistency proof generation
  from the SQLite store, against one SQLite point read of a stored hash.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench._common import Report, Result, Settings
from privproc.ledger.log import append_message
from privproc.ledger.server import LedgerConfig, LedgerService, WitnessEndpoint
from privproc.ledger.store import LedgerStore
from privproc.ledger.witness_server import WitnessConfig, WitnessService
from privproc.v1 import ledger_pb2, ledger_pb2_grpc
from privproc.wire import entries, note, tlog

GROUP = "ledger"
BATCH = 1000
IN_FLIGHT = 128
PER_CALL = 32


def secret_file(directory: Path, name: str, value: str) -> Path:
    """``value`` in ``directory/name``: the services read their keys from files."""
    path = directory / name
    path.write_text(value)
    return path


def _entry(i: int) -> bytes:
    return entries.OhttpKeyConfigEntry.describing(i.to_bytes(8, "big"), i % 256, i, i + 1).encode()


def _storage(settings: Settings, workdir: Path) -> Result:
    rounds = 3 if settings.quick else 5
    batches = 2 if settings.quick else 20
    samples, baseline = [], []
    counter = 0
    for r in range(rounds):
        store = LedgerStore(workdir / f"append-{r}.sqlite3")
        plain = sqlite3.connect(str(workdir / f"plain-{r}.sqlite3"), isolation_level=None)
        plain.execute("PRAGMA journal_mode=WAL")
        plain.execute("PRAGMA synchronous=FULL")
        plain.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        work = [[_entry(counter + b * BATCH + i) for i in range(BATCH)] for b in range(batches)]
        counter += batches * BATCH
        start = time.perf_counter()
        for batch in work:
            store.append_batch(batch)
        samples.append(batches * BATCH / (time.perf_counter() - start))
        start = time.perf_counter()
        for b, batch in enumerate(work):
            plain.execute("BEGIN")
            plain.executemany(
                "INSERT INTO entries VALUES (?, ?)", [(b * BATCH + i, e) for i, e in enumerate(batch)]
            )
            plain.execute("COMMIT")
        baseline.append(batches * BATCH / (time.perf_counter() - start))
        store.close()
        plain.close()
    return Result(
        GROUP, f"storage appends/s (batches of {BATCH}, fsync)", samples, "plain SQLite insert", baseline
    )


def _load(
    target: str, publisher_key: str, seconds: float, mode: str, out: multiprocessing.Queue[int]
) -> None:
    """Load generator (child process): IN_FLIGHT calls in flight for ``seconds``; reports items/s."""
    signer = note.parse_signer_key(publisher_key)
    base = random.randrange(1 << 40)

    def request(w: int, i: int) -> ledger_pb2.AppendRequest:
        entry = _entry(base + w * 10_000_000 + i)
        signature = signer.sign(append_message(entry))
        return ledger_pb2.AppendRequest(entry=entry, publisher_signature=signature, publisher="bench")

    async def run() -> int:
        done = 0
        deadline = time.perf_counter() + seconds
        async with aio.insecure_channel(target) as channel:
            stub = ledger_pb2_grpc.LedgerStub(channel)
            health_stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]

            async def worker(w: int) -> None:
                nonlocal done
                i = 0
                while time.perf_counter() < deadline:
                    if mode == "health":
                        await health_stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                        n = 1
                    elif mode == "batch":
                        batch = [request(w, i + k) for k in range(PER_CALL)]
                        reply = await stub.AppendBatch(
                            ledger_pb2.AppendBatchRequest(appends=batch), timeout=30
                        )
                        n = sum(1 for r in reply.results if r.WhichOneof("result") == "index")
                        if n != PER_CALL:
                            raise RuntimeError("appends refused during the benchmark")
                    else:
                        await stub.Append(request(w, i), timeout=30)
                        n = 1
                    i += n
                    done += n

            await asyncio.gather(*(worker(w) for w in range(IN_FLIGHT)))
        return done

    started = time.perf_counter()
    count = asyncio.run(run())
    out.put(int(count / (time.perf_counter() - started)))


async def _service(settings: Settings, workdir: Path) -> tuple[list[Result], list[str]]:
    log_key, log_vkey = note.generate_key("log.bench")
    witness_key, witness_vkey = note.generate_key("witness.bench", note.ALG_COSIGNATURE_V1)
    pub_key, pub_vkey = note.generate_key("bench")
    witness = WitnessService(
        WitnessConfig(workdir / "witness", secret_file(workdir, "witness.key", witness_key), (log_vkey,))
    )
    witness_ep = await witness.start()
    ledger = LedgerService(
        LedgerConfig(
            workdir / "ledger",
            secret_file(workdir, "log.key", log_key),
            ("ohttp-key-config:" + pub_vkey,),  # publisher keys are scoped to entry kinds
            (WitnessEndpoint(str(witness_ep["url"]), witness_vkey),),
        )
    )
    ledger_ep = await ledger.start()
    target = str(ledger_ep["grpc"])
    seconds = 0.5 if settings.quick else 3.0
    ctx = multiprocessing.get_context("spawn")
    samples: dict[str, list[float]] = {"append": [], "batch": [], "health": []}
    for r in range(1 if settings.quick else 3):
        order = ["append", "batch", "health"] if r % 2 == 0 else ["health", "batch", "append"]
        for mode in order:
            queue: multiprocessing.Queue[int] = ctx.Queue()
            process = ctx.Process(target=_load, args=(target, pub_key, seconds, mode, queue))
            process.start()
            await asyncio.to_thread(process.join)
            samples[mode].append(float(queue.get(timeout=10)))
    size = ledger.served_size
    await ledger.stop()
    await witness.stop()
    note_ = [f"ledger: load from another process, {IN_FLIGHT} calls in flight; {size} entries, all witnessed"]
    return [
        Result(GROUP, "service appends/s, Append (one per call)", samples["append"], "gRPC health Check",
               samples["health"], note="goal: >= 3,000/s"),
        Result(GROUP, f"service appends/s, AppendBatch ({PER_CALL} per call)", samples["batch"],
               "gRPC health Check", samples["health"], note="goal: >= 3,000/s"),
    ], note_  # fmt: skip


def _proofs(size: int, workdir: Path, repeats: int) -> tuple[Result, Result]:
    store = LedgerStore(workdir / f"proofs-{size}.sqlite3")
    done = 0
    while done < size:
        n = min(50_000, size - done)
        store.append_batch([b'{"kind":"bench","i":%d}' % (done + i) for i in range(n)])
        done += n
    rng = random.Random(size)
    count = 2000
    conn = sqlite3.connect(str(workdir / f"proofs-{size}.sqlite3"))
    total_hashes = tlog.stored_hash_count(size)

    def per_second(fn: object) -> list[float]:
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(count):
                fn()  # type: ignore[operator]
            out.append(count / (time.perf_counter() - start))
        return out

    def inclusion() -> None:
        tlog.prove_record(size, rng.randrange(size), store)

    def consistency() -> None:
        tlog.prove_tree(size, rng.randrange(1, size), store)

    def point_read() -> None:
        conn.execute("SELECT hash FROM hashes WHERE idx = ?", (rng.randrange(total_hashes),)).fetchone()

    base = per_second(point_read)
    incl = per_second(inclusion)
    cons = per_second(consistency)
    store.close()
    conn.close()
    label = f"10^{len(str(size)) - 1}"
    incl_ms = 1000 / statistics.median(incl)
    return (
        Result(GROUP, f"inclusion proofs/s at {label} entries", incl, "one SQLite point read", base,
               note=f"median {incl_ms:.3f} ms per proof; goal <= 1 ms"),
        Result(GROUP, f"consistency proofs/s at {label} entries", cons, "one SQLite point read", base),
    )  # fmt: skip


def run(settings: Settings) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="privproc-ledger-bench-"))
    results = [_storage(settings, workdir)]
    service, notes = asyncio.run(_service(settings, workdir))
    results.extend(service)
    sizes = [10**5] if settings.quick else [10**6]
    if os.environ.get("PRIVPROC_BENCH_LARGE") == "1":
        sizes.append(10**7)
    for size in sizes:
        results.extend(_proofs(size, workdir, 3 if settings.quick else 5))
    notes.append("ledger: proofs read stored hashes from SQLite (WAL) with one IN query per proof")
    return Report(results, notes)
