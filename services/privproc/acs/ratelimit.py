"""At most N tokens per account in any window of W seconds, durable across restarts.

A sliding window, not a fixed one: a fixed window resets at its boundary, so
N tokens just before it and N just after (2N within seconds) all pass. Here
each grant is kept with its time, and a request is granted only if the grants
in the last W seconds plus this one stay within N — whatever span one looks
at, no W-second span ever holds more than N.

Grants live in the ACS database; a grant is counted in the same transaction
that checks it (``BEGIN IMMEDIATE``), so concurrent requests and restarts can
never issue more than the limit. Grants older than the window are pruned as
time moves on: the only per-account record is "how many, when", for one window.
A clock that steps back counts grants "from the future" as recent: it can only
make the limit stricter.
"""

from __future__ import annotations

from privproc.acs.store import Database
from privproc.errors import RateLimitedError

#: Grants within 1/this of a window of each other are kept as one row.
GRANT_ROWS_PER_WINDOW = 1024


class IssuanceLimiter:
    def __init__(self, db: Database, *, tokens_per_window: int, window_seconds: float) -> None:
        if tokens_per_window < 1 or window_seconds <= 0:
            raise ValueError("limit and window must be positive")
        self._db = db
        self.tokens_per_window = tokens_per_window
        self.window_seconds = window_seconds

    def _used(self, account: str, now: float) -> int:
        row = self._db.conn.execute(
            "SELECT COALESCE(SUM(count), 0) FROM issuance WHERE account = ? AND granted > ?",
            (account, now - self.window_seconds),
        ).fetchone()
        return int(row[0])

    def consume(self, account: str, count: int, now: float) -> None:
        """Count ``count`` tokens for ``account``, or raise without counting any."""
        if count < 0:
            raise ValueError("count must not be negative")
        conn = self._db.conn
        with self._db.lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._used(account, now) + count > self.tokens_per_window:
                    conn.execute("ROLLBACK")
                    raise RateLimitedError("token issuance limit reached for this window")
                # Grants close together share a row stamped with the latest of them: they are
                # counted a little longer than each needs (stricter, never looser), and a window
                # holds at most ~GRANT_ROWS_PER_WINDOW rows per account whatever the limit.
                merged = conn.execute(
                    "UPDATE issuance SET count = count + ?, granted = MAX(granted, ?) "
                    "WHERE rowid = (SELECT rowid FROM issuance WHERE account = ? AND granted >= ? "
                    "ORDER BY granted DESC LIMIT 1)",
                    (count, now, account, now - self.window_seconds / GRANT_ROWS_PER_WINDOW),
                ).rowcount
                if not merged:
                    conn.execute(
                        "INSERT INTO issuance (account, granted, count) VALUES (?, ?, ?)",
                        (account, now, count),
                    )
                conn.execute("DELETE FROM issuance WHERE granted <= ?", (now - self.window_seconds,))
                conn.execute("COMMIT")
            except RateLimitedError:
                raise
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def remaining(self, account: str, now: float) -> int:
        """Tokens ``account`` may still get now (the window ending at ``now``)."""
        with self._db.lock:
            return self.tokens_per_window - self._used(account, now)
