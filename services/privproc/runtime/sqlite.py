"""Opening a service's SQLite database: created 0600, WAL, fsync on every commit."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def open_database(path: Path | str, schema: str) -> sqlite3.Connection:
    """A connection (autocommit; callers open their own transactions) with ``schema`` applied.

    ``:memory:`` is accepted for tests. The file is created owner-only before
    SQLite touches it, so no secret it will hold is ever world-readable.
    """
    if str(path) != ":memory:":
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a commit is durable before it is acknowledged
    conn.executescript(schema)
    return conn
