"""The ACS's durable state: one SQLite database (WAL) in its state directory.

Tables: ``accounts`` (who may ask for tokens), ``issuance`` (per-account
grants, each a time and a count, kept for one rate-limit window — the only
per-account record), ``issuer_keys``
(token signing keys by epoch), ``secrets`` (the credential MAC key) and
``account_credentials`` (the SHA-256 of a credential an operator chose for an
account, never the credential). The file is created 0600. Nothing about a token — blinded or not — is stored.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from privproc.runtime.sqlite import open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS account_credentials (
    account TEXT PRIMARY KEY,
    sha256 BLOB NOT NULL
);
"""

#: The sliding window's grants (see :mod:`privproc.acs.ratelimit`).
_ISSUANCE_TABLE = """CREATE TABLE IF NOT EXISTS issuance (
    account TEXT NOT NULL,
    granted REAL NOT NULL,
    count INTEGER NOT NULL
)"""
_ISSUANCE_INDEX = "CREATE INDEX IF NOT EXISTS issuance_by_account ON issuance (account, granted)"


def _migrate_fixed_windows(conn: sqlite3.Connection) -> None:
    """Turn a fixed-window ``issuance`` table (account, window, count) into grants.

    The window length is not stored, so each account's counts are taken as
    granted now: for one window after the upgrade it may get fewer tokens,
    never more.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(issuance)").fetchall()}
    if "window" not in columns:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute("SELECT account, SUM(count) FROM issuance GROUP BY account").fetchall()
        conn.execute("DROP TABLE issuance")
        conn.execute(_ISSUANCE_TABLE)
        now = time.time()
        conn.executemany(
            "INSERT INTO issuance (account, granted, count) VALUES (?, ?, ?)",
            [(account, now, int(total)) for account, total in rows],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class Database:
    """A thread-safe SQLite connection with the ACS schema."""

    def __init__(self, path: Path | str) -> None:
        self._conn = open_database(path, SCHEMA)
        _migrate_fixed_windows(self._conn)
        self._conn.execute(_ISSUANCE_TABLE)
        self._conn.execute(_ISSUANCE_INDEX)
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
