"""Per-client rate limiting at the relay — pure, with an injected clock.

The relay is the only party that may see a client's address, so it is the
only place a per-client limit can live. Even here the address is not kept:
the table is keyed by a keyed hash (HMAC with a per-process random key), so
the limiter's memory holds no address a dump could reveal, and the table is
bounded so a flood of sources cannot grow it without limit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per client: ``rate`` requests/s sustained, ``burst`` at once."""

    def __init__(self, *, rate: float, burst: int, max_clients: int = 100_000) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate, burst and max_clients must be positive")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._key = secrets.token_bytes(32)
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()

    def _client_key(self, client: str) -> bytes:
        return hmac.new(self._key, client.encode(), hashlib.sha256).digest()[:16]

    def allow(self, client: str, now: float) -> bool:
        """Take one token for ``client`` at time ``now``; False if none is left."""
        key = self._client_key(client)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_clients:
                # Evicting the least recently seen client forgets its debt;
                # that only errs towards serving, never towards leaking.
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def __len__(self) -> int:
        return len(self._buckets)


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")]
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0]
    return peer
