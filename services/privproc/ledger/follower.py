"""Following the log from its public tiles, as a monitor (or the verifier) does.

Each ``sync`` reads the newest checkpoint, checks it like a client does
(signature, cosignature quorum, consistency with the last one accepted),
recomputes its root from the hash tiles, checks every new entry against its
leaf hash, and returns the new entries. Nothing is taken on the server's
word: the tiles must hash to the signed root.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from privproc.errors import CryptoError, UpstreamError
from privproc.wire import note, tlog, tlog_tiles
from privproc.wire.tlogclient import TransparencyVerifier


class TileMismatchError(CryptoError):
    """The served tiles or entry bundles do not match the signed checkpoint."""

    reason = "tile_mismatch"


@dataclass(frozen=True)
class Synced:
    checkpoint: note.Checkpoint
    witnesses: tuple[str, ...]
    new_entries: tuple[tuple[int, bytes], ...]


def http_fetcher(tiles_url: str) -> Callable[[str], bytes]:
    """Fetch ``<tiles_url>/<path>`` (``checkpoint``, ``tile/...``) over HTTP."""
    base = tiles_url.rstrip("/")

    def fetch(path: str) -> bytes:
        try:
            with urllib.request.urlopen(f"{base}/{path}", timeout=10) as resp:  # noqa: S310 - configured URL
                return bytes(resp.read(8 << 20))
        except OSError as err:
            raise UpstreamError("log unreachable") from err

    return fetch


class LogFollower:
    def __init__(self, verifier: TransparencyVerifier, fetch: Callable[[str], bytes]) -> None:
        self.verifier = verifier
        self._fetch = fetch

    async def sync(self) -> Synced:
        previous = self.verifier.store.load(self.verifier.policy.origin)
        signed = await asyncio.to_thread(self._fetch, "checkpoint")
        checkpoint, witnesses = self.verifier.open_checkpoint(signed)
        await self.verifier.accept(checkpoint)

        def tile(t: tlog_tiles.Tile) -> bytes:
            return self._fetch(t.path())

        root = await asyncio.to_thread(tlog_tiles.tree_hash_from_tiles, checkpoint.size, tile)
        if root != checkpoint.root:
            raise TileMismatchError("the served tiles do not hash to the checkpoint's root")
        start = previous.size if previous is not None and previous.size <= checkpoint.size else 0
        new: list[tuple[int, bytes]] = []
        for bundle in tlog_tiles.bundles_for_size(checkpoint.size):
            first = bundle.n * tlog_tiles.TILE_WIDTH
            if first + bundle.width <= start:
                continue
            items = tlog_tiles.decode_entry_bundle(await asyncio.to_thread(tile, bundle), width=bundle.width)
            # Each entry must hash to its leaf in the level-0 tile the root was computed from.
            leaves = await asyncio.to_thread(tile, tlog_tiles.Tile(0, bundle.n, bundle.width))
            for offset, raw in enumerate(items):
                if tlog.leaf_hash(raw) != leaves[offset * tlog.HASH_SIZE : (offset + 1) * tlog.HASH_SIZE]:
                    raise TileMismatchError("an entry bundle does not match the hash tiles")
                if first + offset >= start:
                    new.append((first + offset, raw))
        return Synced(checkpoint, witnesses, tuple(new))
