"""Attack: burst token issuance at a rate-limit window boundary.

With a fixed window, 1,000 tokens just before midnight and 1,000 just after
were all granted — 2,000 within 2 seconds under a 1,000-per-day limit. The
sliding window counts every grant of the last 24 hours, wherever the
boundary falls.
"""

from __future__ import annotations

from pathlib import Path

from privproc.acs.ratelimit import IssuanceLimiter
from privproc.acs.store import Database
from privproc.errors import RateLimitedError

DAY = 86400.0
LIMIT = 1000


def _grants(limiter: IssuanceLimiter, times: list[float], per_request: int) -> list[float]:
    granted = []
    for at in times:
        try:
            limiter.consume("mallory", per_request, now=at)
        except RateLimitedError:
            continue
        granted.extend([at] * per_request)
    return granted


def test_two_thousand_requests_around_a_window_boundary_never_exceed_the_limit(tmp_path: Path) -> None:
    limiter = IssuanceLimiter(Database(tmp_path / "acs.sqlite3"), tokens_per_window=LIMIT, window_seconds=DAY)
    boundary = 20_000 * DAY  # where the old fixed window reset its count
    # 2,000 one-token requests in the 2 seconds around the boundary, 1 ms apart.
    times = [boundary - 1.0 + i * 0.001 for i in range(2000)]
    granted = _grants(limiter, times, 1)
    assert len(granted) == LIMIT  # the first thousand; every later one refused
    # The same day-long span later, in batches: still nothing beyond the limit in any 24 hours.
    later = [boundary + DAY - 1.0 + i * 0.002 for i in range(1000)]
    granted += _grants(limiter, later, 2)
    granted.sort()
    start = 0
    for end, at in enumerate(granted):
        while granted[start] <= at - DAY:
            start += 1
        assert end - start + 1 <= LIMIT, "more than the limit within one window-long span"
    assert limiter.remaining("mallory", now=boundary + 3 * DAY) == LIMIT
