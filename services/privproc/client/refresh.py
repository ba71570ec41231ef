"""The client's log upkeep, kept apart from its sessions.

While a private session is open the device talks to nothing but the relay:
the log and the CDN would otherwise see its address at the moment the
gateway sees its session. Two pieces make that hold:

* :class:`SessionGuard` — sessions and log refreshes exclude each other. A
  session waits for a refresh in flight to end before it opens; a refresh
  waits until no session is open (and, once one waits, new sessions wait
  behind it, so refreshes are not starved). Every fetch the client makes
  from the log or the key CDN calls :meth:`SessionGuard.check_outside`, which
  refuses (:class:`FetchDuringSessionError`) while a session is open: a bug
  fails closed rather than leaking.
* :class:`LogRefresher` — outside sessions, at jittered intervals, it moves
  the stored checkpoint to the log's newest witnessed one (with a consistency
  proof from the stored one), audits the older checkpoints accepted from
  CVM staples (a failed audit is a split view: a loud alarm, and every later
  request is refused), and feeds the new log entries, in order, to an
  observer (the release registry learns revocations and supersessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import aiohttp

from privproc import events
from privproc.errors import PrivprocError, UpstreamError, WireError
from privproc.runtime.tasks import supervise
from privproc.wire import tlog, tlog_tiles
from privproc.wire.entries import Entry, parse_entry
from privproc.wire.tlogclient import TransparencyVerifier

#: Mean seconds between refreshes, and the jitter around it (a fraction of the mean).
REFRESH_SECONDS = 300.0
REFRESH_JITTER = 0.5


class FetchDuringSessionError(PrivprocError):
    """The client was about to contact the log or the CDN while a session is open (refused)."""

    reason = "fetch_during_session"


class EntryObserver(Protocol):
    """Learns every log entry, in log order (e.g. the release registry)."""

    def observe(self, index: int, entry: Entry) -> None: ...


class SessionTicket:
    """One session's hold on the guard: :meth:`open` before its first token-bearing request."""

    def __init__(self, guard: SessionGuard) -> None:
        self._guard = guard
        self._state = "new"

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    async def open(self) -> None:
        """Wait for any refresh in flight, then count this session as open (idempotent)."""
        if self._state == "new":
            await self._guard._enter()
            self._state = "open"

    def close(self) -> None:
        """The session ended (idempotent; a ticket never opened just retires)."""
        if self._state == "open":
            self._guard._leave()
        self._state = "closed"


class SessionGuard:
    """Sessions and log refreshes of one client, mutually exclusive (one event loop)."""

    def __init__(self) -> None:
        self._open = 0
        self._refreshing = False
        self._refresh_waiting = 0
        self._changed = asyncio.Event()

    @property
    def open_sessions(self) -> int:
        return self._open

    @property
    def refresh_held(self) -> bool:
        """A refresh holds the guard (no session is open)."""
        return self._refreshing

    def ticket(self) -> SessionTicket:
        return SessionTicket(self)

    def check_outside(self) -> None:
        """Refuse a fetch from the log or the CDN while a session is open."""
        if self._open:
            raise FetchDuringSessionError("no connection but the relay while a session is open")

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()

    async def _enter(self) -> None:
        while self._refreshing or self._refresh_waiting:
            await self._wait_change()
        self._open += 1

    def _leave(self) -> None:
        self._open -= 1
        self._notify()

    @contextlib.asynccontextmanager
    async def refreshing(self) -> AsyncIterator[None]:
        """Hold the log for a refresh: no session opens meanwhile, none is open."""
        self._refresh_waiting += 1
        try:
            while self._open or self._refreshing:
                await self._wait_change()
        finally:
            self._refresh_waiting -= 1
        self._refreshing = True
        try:
            yield
        finally:
            self._refreshing = False
            self._notify()


#: Fetches ``<tiles_url>/<path>`` (``checkpoint``, ``tile/...``) of the log.
TileFetcher = Callable[[str], Awaitable[bytes]]


class LogRefresher:
    """Keeps the client's checkpoint recent and audited, outside sessions."""

    def __init__(
        self,
        verifier: TransparencyVerifier,
        guard: SessionGuard,
        fetch: TileFetcher,
        *,
        observer: EntryObserver | None = None,
        interval: float = REFRESH_SECONDS,
        jitter: float = REFRESH_JITTER,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= jitter < 1 or interval <= 0:
            raise ValueError("interval is positive and jitter a fraction below 1")
        self.verifier = verifier
        self.guard = guard
        self.observer = observer
        self.interval = interval
        self._fetch = fetch
        self._jitter = jitter
        self._rng = rng or random.SystemRandom()
        self._clock = clock
        self._observed = 0  # entries below this index were given to the observer
        self._last: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def due(self) -> bool:
        """No successful refresh yet in this process, or none for two intervals (the background is late)."""
        return self._last is None or self._clock() - self._last >= 2 * self.interval

    def next_delay(self) -> float:
        """Seconds to the next refresh: the interval, jittered (so refreshes line up with nothing)."""
        return self.interval * (1 - self._jitter + 2 * self._jitter * self._rng.random())

    async def refresh(self) -> int:
        """One refresh, waiting until no session is open; returns the stored checkpoint's size."""
        async with self.guard.refreshing():
            return await self.refresh_held()

    async def refresh_held(self) -> int:
        """:meth:`refresh` for a caller already inside ``guard.refreshing()``."""
        if not self.guard.refresh_held:
            raise RuntimeError("refresh_held() outside guard.refreshing()")
        signed = await self._fetch("checkpoint")
        checkpoint, _ = self.verifier.open_checkpoint(signed)
        await self.verifier.accept(checkpoint)
        audited = await self.verifier.audit()
        stored = self.verifier.store.load(self.verifier.policy.origin)
        size = stored.size if stored is not None else 0
        if self.observer is not None and stored is not None:
            await self._observe(stored.size, stored.root)
        self._last = self._clock()
        events.emit(events.ClientCheckpointRefreshed(log_size=size, audits=min(audited, 1 << 16)))
        return size

    async def _observe(self, size: int, root: bytes) -> None:
        """Give the observer entries [observed, size), each checked against the signed root."""
        if size <= self._observed:
            return
        tiles: dict[str, bytes] = {}

        async def get(tile: tlog_tiles.Tile) -> bytes:
            path = tile.path()
            if path not in tiles:
                tiles[path] = await self._fetch(path)
            return tiles[path]

        for tile in tlog_tiles.tiles_for_size(size):
            await get(tile)
        if tlog_tiles.tree_hash_from_tiles(size, lambda t: tiles[t.path()]) != root:
            raise UpstreamError("the log's tiles do not hash to its signed checkpoint")
        assert self.observer is not None
        for bundle in tlog_tiles.bundles_for_size(size):
            first = bundle.n * tlog_tiles.TILE_WIDTH
            if first + bundle.width <= self._observed:
                continue
            try:
                items = tlog_tiles.decode_entry_bundle(await get(bundle), width=bundle.width)
            except WireError as err:
                raise UpstreamError("the log served a malformed entry bundle") from err
            leaves = await get(tlog_tiles.Tile(0, bundle.n, bundle.width))
            for offset, raw in enumerate(items):
                index = first + offset
                if tlog.leaf_hash(raw) != leaves[offset * tlog.HASH_SIZE : (offset + 1) * tlog.HASH_SIZE]:
                    raise UpstreamError("an entry bundle does not match the log's hash tiles")
                if index >= self._observed:
                    try:
                        entry = parse_entry(raw)
                    except WireError:
                        # An entry of an older format (or a kind this client does not know) cannot
                        # revoke or supersede anything it will admit: skip it, loudly.
                        events.emit(events.ClientEntryIgnored(index=index))
                    else:
                        self.observer.observe(index, entry)
                    self._observed = index + 1

    def start(self) -> asyncio.Task[None]:
        """Refresh forever in the background (supervised: failures are logged and retried)."""
        if self._task is None or self._task.done():
            self._task = supervise("client.log_refresh", self._forever, backoff_seconds=5.0)
        return self._task

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.next_delay())
            await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def http_tiles(session: aiohttp.ClientSession, tiles_url: str) -> TileFetcher:
    """Fetch the log's checkpoint and tiles over HTTP with ``session``."""
    base = tiles_url.rstrip("/")

    async def fetch(path: str) -> bytes:
        try:
            async with session.get(f"{base}/{path}") as resp:
                body = await resp.content.read(8 << 20)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            raise UpstreamError("log unreachable") from None
        if status != 200:
            raise UpstreamError("log unreachable")
        return bytes(body)

    return fetch
