"""C2SP tiles (c2sp.org/tlog-tiles) of a transparency-log Merkle tree, and entry bundles — sans-I/O.

Tiles (c2sp.org/tlog-tiles) are the same stored hashes cut into rows of 256:
the tile at level L holds the tree-level-8L hashes. :func:`tile_data` reads
one from stored hashes; :class:`TileHashReader` goes the other way and serves
stored hashes from fetched tiles, so the proof functions work unchanged on
top of a tile server. Entry bundles are the level-0 payloads, each entry
with a big-endian uint16 length.

The tree, its stored-hash layout and its proofs are in :mod:`privproc.wire.tlog`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from privproc.errors import TruncatedError, WireError
from privproc.wire.tlog import (
    HASH_SIZE,
    HashReader,
    TreeRangeError,
    node_hash,
    read_checked,
    split_stored_hash_index,
    stored_hash_index,
    tree_hash,
)

__all__ = [
    "ENTRIES_LEVEL",
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "EntryBundleError",
    "EntryBundleTruncatedError",
    "Tile",
    "TileFormatError",
    "TileHashReader",
    "bundles_for_size",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "tile_data",
    "tiles_changed",
    "tiles_for_size",
    "tree_hash_from_tiles",
]

#: c2sp.org/tlog-tiles: tiles are 2^8 = 256 hashes wide, at levels 0..63.
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_TILE_LEVEL = 63
#: The level :class:`Tile` uses for entry bundles (``tile/entries/...``).
ENTRIES_LEVEL = -1

#: Tile indexes stay below 2^64: at most 7 three-digit path elements.
_MAX_TILE_INDEX = (1 << 64) - 1
_MAX_ENTRY_SIZE = 0xFFFF


class TileFormatError(WireError):
    """A tile path or tile body that is not what c2sp.org/tlog-tiles allows."""


class EntryBundleError(WireError):
    """Bytes that are not a valid entry bundle."""


class EntryBundleTruncatedError(EntryBundleError, TruncatedError):
    """An entry bundle that ends inside an entry."""


@dataclass(frozen=True)
class Tile:
    """A tile (``level >= 0``) or an entry bundle (``level == ENTRIES_LEVEL``).

    Tile ``(L, N, W)`` holds the tree-level-8L hashes number ``N*256`` to
    ``N*256 + W - 1``; ``W == 256`` is a full tile, anything less a partial one.
    """

    level: int
    n: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not (self.level == ENTRIES_LEVEL or 0 <= self.level <= MAX_TILE_LEVEL):
            raise ValueError("tile level out of range")
        if not 0 <= self.n <= _MAX_TILE_INDEX:
            raise ValueError("tile index out of range")
        if not 1 <= self.width <= TILE_WIDTH:
            raise ValueError("tile width out of range")

    @property
    def is_partial(self) -> bool:
        return self.width < TILE_WIDTH

    def path(self) -> str:
        """``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``."""
        digits = str(self.n)
        digits = "0" * (-len(digits) % 3) + digits
        groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
        index = "/".join([*("x" + g for g in groups[:-1]), groups[-1]])
        level = "entries" if self.level == ENTRIES_LEVEL else str(self.level)
        suffix = f".p/{self.width}" if self.is_partial else ""
        return f"tile/{level}/{index}{suffix}"

    @classmethod
    def parse(cls, path: str) -> Tile:
        """The tile a path names; only the canonical spelling :meth:`path` writes is accepted."""
        parts = path.split("/")
        if len(parts) < 3 or parts[0] != "tile" or len(parts) > 11:
            raise TileFormatError("not a tile path")
        level_text = parts[1]
        if level_text == "entries":
            level = ENTRIES_LEVEL
        elif _is_decimal(level_text, 2) and int(level_text) <= MAX_TILE_LEVEL:
            level = int(level_text)
        else:
            raise TileFormatError("bad tile level")
        rest = parts[2:]
        width = TILE_WIDTH
        if len(rest) >= 2 and rest[-2].endswith(".p"):
            if not _is_decimal(rest[-1], 3) or not 1 <= int(rest[-1]) < TILE_WIDTH:
                raise TileFormatError("bad tile width")
            width = int(rest[-1])
            rest = [*rest[:-2], rest[-2][:-2]]
        if len(rest) > 7:
            raise TileFormatError("tile index too large")
        digits = []
        for element in rest[:-1]:
            if len(element) != 4 or element[0] != "x" or not _is_decimal(element[1:], 3):
                raise TileFormatError("bad tile index")
            digits.append(element[1:])
        if len(rest[-1]) != 3 or not _is_decimal(rest[-1], 3):
            raise TileFormatError("bad tile index")
        digits.append(rest[-1])
        n = int("".join(digits))
        if n > _MAX_TILE_INDEX:
            raise TileFormatError("tile index too large")
        tile = cls(level, n, width)
        if tile.path() != path:  # leading "x000/" groups and the like
            raise TileFormatError("tile path not canonical")
        return tile


def _is_decimal(text: str, max_len: int) -> bool:
    """ASCII digits only, 1 to ``max_len`` of them (``str.isdigit`` also takes other scripts)."""
    return 0 < len(text) <= max_len and all("0" <= ch <= "9" for ch in text)


def _level_tiles(size: int, level: int, first: int) -> list[Tile]:
    """Tiles of ``level`` from index ``first`` on, in a tree of ``size``."""
    count = size >> (TILE_HEIGHT * level)  # hashes at tree level 8*level
    full, partial = divmod(count, TILE_WIDTH)
    tiles = [Tile(level, n) for n in range(first, full)]
    if partial:
        tiles.append(Tile(level, full, partial))
    return tiles


def tiles_for_size(size: int) -> list[Tile]:
    """Every tile, full and partial, a tree of ``size`` has; level 0 first, then by index."""
    if size < 0:
        raise TreeRangeError("tree size must be non-negative")
    tiles: list[Tile] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        tiles += _level_tiles(size, level, 0)
        level += 1
    return tiles


def tiles_changed(old: int, new: int) -> list[Tile]:
    """The tiles of a tree of size ``new`` that a tree of size ``old`` does not have (new or wider)."""
    if not 0 <= old <= new:
        raise TreeRangeError("tree sizes out of order")
    tiles: list[Tile] = []
    level = 0
    while new >> (TILE_HEIGHT * level):
        old_count = old >> (TILE_HEIGHT * level)
        if old_count != new >> (TILE_HEIGHT * level):
            tiles += _level_tiles(new, level, old_count >> TILE_HEIGHT)
        level += 1
    return tiles


def bundles_for_size(size: int) -> list[Tile]:
    """The entry bundles of a tree of ``size`` (the level-0 tiles, at :data:`ENTRIES_LEVEL`)."""
    return [Tile(ENTRIES_LEVEL, t.n, t.width) for t in tiles_for_size(size) if t.level == 0]


def tile_data(tile: Tile, reader: HashReader) -> bytes:
    """The body of a hash tile: its ``width`` hashes, concatenated, read in one call."""
    if tile.level == ENTRIES_LEVEL:
        raise ValueError("entry bundles are not made of stored hashes")
    level = TILE_HEIGHT * tile.level
    start = tile.n << TILE_HEIGHT
    return b"".join(read_checked(reader, [stored_hash_index(level, start + i) for i in range(tile.width)]))


class TileHashReader:
    """A :class:`HashReader` over the tiles of a tree of ``size``, fetched with ``fetch``.

    ``fetch(tile)`` returns the tile's body, exactly ``tile.width`` hashes
    (slice a full tile if that is what the server had). Tiles are fetched
    once each per ``read_hashes`` call; hashes above a tile's bottom row are
    recomputed from it.

    Nothing here authenticates tiles: a root or proof computed from them is
    only as good as the check that follows, so compare a root with a signed
    checkpoint and run :func:`check_record` / :func:`check_tree` on proofs.
    """

    def __init__(self, size: int, fetch: Callable[[Tile], bytes]) -> None:
        if size < 0:
            raise TreeRangeError("tree size must be non-negative")
        self._size = size
        self._fetch = fetch

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        bodies: dict[Tile, bytes] = {}
        out = []
        for index in indexes:
            level, n = split_stored_hash_index(index)
            if (n + 1) << level > self._size:
                raise TreeRangeError("hash not in the tree of this size")
            tile_level, row = divmod(level, TILE_HEIGHT)
            first = n << row  # index of the first tile-bottom hash under the node
            tile_n = first >> TILE_HEIGHT
            available = (self._size >> (TILE_HEIGHT * tile_level)) - (tile_n << TILE_HEIGHT)
            tile = Tile(tile_level, tile_n, min(TILE_WIDTH, available))
            body = bodies.get(tile)
            if body is None:
                body = bytes(self._fetch(tile))
                if len(body) != tile.width * HASH_SIZE:
                    raise TileFormatError("tile body has the wrong size")
                bodies[tile] = body
            offset = (first & (TILE_WIDTH - 1)) * HASH_SIZE
            row_hashes = [
                body[i : i + HASH_SIZE] for i in range(offset, offset + (HASH_SIZE << row), HASH_SIZE)
            ]
            while len(row_hashes) > 1:
                row_hashes = [
                    node_hash(row_hashes[i], row_hashes[i + 1]) for i in range(0, len(row_hashes), 2)
                ]
            out.append(row_hashes[0])
        return out


def tree_hash_from_tiles(size: int, fetch: Callable[[Tile], bytes]) -> bytes:
    """MTH of the tree of ``size`` computed from its tiles (see :class:`TileHashReader`)."""
    return tree_hash(size, TileHashReader(size, fetch))


# --- entry bundles ---------------------------------------------------------------


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its bytes."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise ValueError("an entry bundle holds 1 to 256 entries")
    out = bytearray()
    for entry in entries:
        if len(entry) > _MAX_ENTRY_SIZE:
            raise ValueError("entry too large for an entry bundle")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_entry_bundle(data: bytes, *, width: int | None = None) -> list[bytes]:
    """The entries of a bundle; with ``width``, exactly that many are required."""
    entries: list[bytes] = []
    offset = 0
    end = len(data)
    while offset < end:
        if len(entries) == TILE_WIDTH:
            raise EntryBundleError("entry bundle holds more than 256 entries")
        if end - offset < 2:
            raise EntryBundleTruncatedError("entry bundle truncated")
        length = int.from_bytes(data[offset : offset + 2], "big")
        offset += 2
        if end - offset < length:
            raise EntryBundleTruncatedError("entry bundle truncated")
        entries.append(bytes(data[offset : offset + length]))
        offset += length
    if not entries:
        raise EntryBundleError("empty entry bundle")
    if width is not None and len(entries) != width:
        raise EntryBundleError("entry bundle has the wrong number of entries")
    return entries
