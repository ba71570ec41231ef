"""At most N tokens per account per window, durable across restarts.

Counts live in the ACS database; a grant is counted in the same transaction
that checks it (``BEGIN IMMEDIATE``), so concurrent requests and restarts can
never issue more than the limit. Old windows are pruned as time moves on.
"""

from __future__ import annotations

from privproc.acs.store import Database
from privproc.errors import RateLimitedError


class IssuanceLimiter:
    def __init__(self, db: Database, *, tokens_per_window: int, window_seconds: float) -> None:
        if tokens_per_window < 1 or window_seconds <= 0:
            raise ValueError("limit and window must be positive")
        self._db = db
        self.tokens_per_window = tokens_per_window
        self.window_seconds = window_seconds

    def window(self, now: float) -> int:
        return int(now // self.window_seconds)

    def consume(self, account: str, count: int, now: float) -> None:
        """Count ``count`` tokens for ``account``, or raise without counting any."""
        window = self.window(now)
        conn = self._db.conn
        with self._db.lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT count FROM issuance WHERE account = ? AND window = ?", (account, window)
                ).fetchone()
                used = 0 if row is None else int(row[0])
                if used + count > self.tokens_per_window:
                    conn.execute("ROLLBACK")
                    raise RateLimitedError("token issuance limit reached for this window")
                conn.execute(
                    "INSERT INTO issuance (account, window, count) VALUES (?, ?, ?) "
                    "ON CONFLICT(account, window) DO UPDATE SET count = count + excluded.count",
                    (account, window, count),
                )
                conn.execute("DELETE FROM issuance WHERE window < ?", (window - 1,))
                conn.execute("COMMIT")
            except RateLimitedError:
                raise
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def remaining(self, account: str, now: float) -> int:
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT count FROM issuance WHERE account = ? AND window = ?", (account, self.window(now))
            ).fetchone()
        return self.tokens_per_window - (0 if row is None else int(row[0]))
