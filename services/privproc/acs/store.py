"""The ACS's durable state: one SQLite database (WAL) in its state directory.

Tables: ``accounts`` (who may ask for tokens), ``issuance`` (per-account
counts per rate-limit window — the only per-account record), ``issuer_keys``
(token signing keys by epoch) and ``secrets`` (the credential MAC key). The
file is created 0600. Nothing about a token — blinded or not — is stored.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from privproc.runtime.sqlite import open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS issuance (
    account TEXT NOT NULL,
    window INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (account, window)
);
CREATE TABLE IF NOT EXISTS issuer_keys (
    token_type INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    secret BLOB NOT NULL,
    PRIMARY KEY (token_type, epoch)
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


class Database:
    """A thread-safe SQLite connection with the ACS schema."""

    def __init__(self, path: Path | str) -> None:
        self._conn = open_database(path, SCHEMA)
        self._lock = threading.Lock()

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()
