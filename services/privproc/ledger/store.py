"""The ledger's durable storage: SQLite in WAL mode, fsync on every commit.

A batch of entries is appended in one transaction — entries, their leaf
index, every new stored hash, and the new tree size — so after a crash the
database holds a whole number of batches and nothing else. An entry is
acknowledged only after its transaction commits. Checkpoints are written
after the tree they sign is durable, so a served checkpoint never names a
tree the log could lose.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from privproc.runtime.sqlite import open_database
from privproc.wire import tlog

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (hash BLOB PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hashes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

_CHUNK = 900  # SQLite's default limit on bound parameters is 999


class LedgerStore(tlog.HashReader):
    """Entries, stored hashes and the latest checkpoint of one log."""

    def __init__(self, path: Path | str) -> None:
        self._conn = open_database(path, SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- reads -----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE name = 'size'").fetchone()
        return 0 if row is None else int(row[0])

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        if not indexes:
            return []
        found: dict[int, bytes] = {}
        with self._lock:
            for start in range(0, len(indexes), _CHUNK):
                chunk = list(indexes[start : start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(f"SELECT idx, hash FROM hashes WHERE idx IN ({marks})", chunk)  # noqa: S608
                found.update((int(i), bytes(h)) for i, h in rows)
        try:
            return [found[i] for i in indexes]
        except KeyError:
            raise tlog.TreeRangeError("hash not stored") from None

    def entries(self, start: int, end: int) -> list[bytes]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def index_of(self, leaf_hash: bytes) -> int | None:
        with self._lock:
            row = self._conn.execute("SELECT idx FROM leaves WHERE hash = ?", (leaf_hash,)).fetchone()
        return None if row is None else int(row[0])

    def meta(self, name: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    # --- writes ----------------------------------------------------------------------------

    def append_batch(self, batch: Sequence[bytes]) -> int:
        """Append ``batch`` durably; returns the index of its first entry."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                start = self.size
                overlay = _Overlay(self, start)
                for offset, entry in enumerate(batch):
                    n = start + offset
                    leaf = tlog.leaf_hash(entry)
                    new = tlog.stored_hashes_for_leaf_hash(n, leaf, overlay)
                    overlay.extend(new)
                    conn.execute("INSERT INTO entries (idx, data) VALUES (?, ?)", (n, entry))
                    conn.execute("INSERT OR IGNORE INTO leaves (hash, idx) VALUES (?, ?)", (leaf, n))
                conn.executemany(
                    "INSERT INTO hashes (idx, hash) VALUES (?, ?)",
                    [(tlog.stored_hash_count(start) + i, h) for i, h in enumerate(overlay.pending)],
                )
                size = start + len(batch)
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('size', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    (size,),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return start

    def set_meta(self, name: str, value: bytes) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = ?",
                (name, value, value),
            )


class _Overlay(tlog.HashReader):
    """Stored hashes of the committed tree plus those computed in this batch."""

    def __init__(self, store: LedgerStore, size: int) -> None:
        self._store = store
        self._base = tlog.stored_hash_count(size)
        self.pending: list[bytes] = []

    def extend(self, hashes: list[bytes]) -> None:
        self.pending.extend(hashes)

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        old = [i for i in indexes if i < self._base]
        found = dict(zip(old, self._store.read_hashes(old), strict=True))
        return [found[i] if i < self._base else self.pending[i - self._base] for i in indexes]
