"""Transparency-log Merkle trees (RFC 6962 / RFC 9162) and C2SP tiles — sans-I/O.

The tree is the RFC 6962 §2.1 Merkle Tree Hash over SHA-256: a leaf hashes
as ``SHA-256(0x00 || entry)``, an interior node as ``SHA-256(0x01 || l || r)``,
and a tree of n > 1 leaves splits at the largest power of two below n.

Storage follows the layout of Go's ``golang.org/x/mod/sumdb/tlog`` (after
Crosby and Wallach, "Efficient Data Structures for Tamper-Evident Logging",
§3.3): every *complete* subtree hash is stored exactly once, in append order,
at a dense index computed by :func:`stored_hash_index`. Appending record n
stores its leaf hash and the hashes of the subtrees it completes
(:func:`stored_hashes`); nothing already stored ever changes. Any root,
inclusion proof or consistency proof is then a function of at most
O(log n) stored hashes, and every such function here asks its
:class:`HashReader` for them in exactly **one** ``read_hashes`` call, so a
database-backed reader answers a proof with one query.

Verification (:func:`check_record`, :func:`check_tree`) takes no reader: it
runs the RFC 9162 §2.1.3.2 and §2.1.4.2 algorithms on the proof alone and
raises :class:`ProofError` on any mismatch.

Tiles (c2sp.org/tlog-tiles) are the same stored hashes cut into rows of 256:
the tile at level L holds the tree-level-8L hashes. :func:`tile_data` reads
one from stored hashes; :class:`TileHashReader` goes the other way and serves
stored hashes from fetched tiles, so the proof functions work unchanged on
top of a tile server. Entry bundles are the level-0 payloads, each entry
with a big-endian uint16 length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from privproc.errors import BadRequestError, CryptoError, TruncatedError, WireError

__all__ = [
    "EMPTY_ROOT",
    "ENTRIES_LEVEL",
    "HASH_SIZE",
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "EntryBundleError",
    "EntryBundleTruncatedError",
    "HashReader",
    "MemoryHashStore",
    "ProofError",
    "Tile",
    "TileFormatError",
    "TileHashReader",
    "TreeRangeError",
    "bundles_for_size",
    "check_record",
    "check_tree",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "leaf_hash",
    "node_hash",
    "prove_record",
    "prove_tree",
    "split_stored_hash_index",
    "stored_hash_count",
    "stored_hash_index",
    "stored_hashes",
    "stored_hashes_for_leaf_hash",
    "tile_data",
    "tiles_changed",
    "tiles_for_size",
    "tree_hash",
    "tree_hash_from_tiles",
]

HASH_SIZE = 32
#: MTH({}) = SHA-256() (RFC 6962 §2.1): the root of the empty tree.
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: c2sp.org/tlog-tiles: tiles are 2^8 = 256 hashes wide, at levels 0..63.
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_TILE_LEVEL = 63
#: The level :class:`Tile` uses for entry bundles (``tile/entries/...``).
ENTRIES_LEVEL = -1

#: Tile indexes stay below 2^64: at most 7 three-digit path elements.
_MAX_TILE_INDEX = (1 << 64) - 1
_MAX_ENTRY_SIZE = 0xFFFF


class ProofError(CryptoError):
    """An inclusion or consistency proof that does not verify."""

    reason = "tlog_proof"


class TreeRangeError(BadRequestError):
    """A hash or proof asked of a tree for sizes or indexes it does not have."""

    reason = "tlog_range"


class TileFormatError(WireError):
    """A tile path or tile body that is not what c2sp.org/tlog-tiles allows."""


class EntryBundleError(WireError):
    """Bytes that are not a valid entry bundle."""


class EntryBundleTruncatedError(EntryBundleError, TruncatedError):
    """An entry bundle that ends inside an entry."""


class HashReader(Protocol):
    """Reads stored hashes by their :func:`stored_hash_index`.

    ``read_hashes`` returns one 32-byte hash per index, in the order asked.
    Callers here pass the indexes of one operation in a single call, distinct
    and in increasing order, so an implementation can answer with one query.
    """

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]: ...


# --- hashing ---------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``: the hash of a record (RFC 6962 §2.1)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: an interior node (RFC 6962 §2.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly below ``size`` (``size >= 2``): the RFC's k."""
    return 1 << ((size - 1).bit_length() - 1)


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


# --- stored-hash layout --------------------------------------------------------


def stored_hash_index(level: int, n: int) -> int:
    """Where the hash of the ``n``-th complete subtree of height ``level`` is stored.

    Level 0 holds leaf hashes; the node (level, n) covers records
    ``[n * 2**level, (n + 1) * 2**level)``. A level-L hash is stored right
    after the level-(L-1) hash that completes it.
    """
    if level < 0 or n < 0:
        raise ValueError("level and n must be non-negative")
    # The last leaf of the subtree, and how many hashes precede it: leaf m is
    # stored at m + m/2 + m/4 + ... = 2m - popcount(m); the subtree's own
    # hash comes `level` places after that leaf.
    last_leaf = ((n + 1) << level) - 1
    return 2 * last_leaf - last_leaf.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of :func:`stored_hash_index`: ``(level, n)``."""
    if index < 0:
        raise ValueError("index must be non-negative")
    # stored_hash_index(0, m) <= 2m, so the record that wrote `index` is in
    # [index // 2, index // 2 + log2(index)]; walk up to it.
    m = index // 2
    at = stored_hash_index(0, m)
    while True:
        # Record m writes its leaf and then one hash per subtree it completes.
        following = at + 1 + _trailing_zeros(m + 1)
        if following > index:
            break
        m += 1
        at = following
    level = index - at
    return level, m >> level


def stored_hash_count(n: int) -> int:
    """How many hashes a tree of ``n`` records has stored."""
    if n < 0:
        raise ValueError("n must be non-negative")
    if n == 0:
        return 0
    # Up to the last leaf, plus the subtrees that leaf completed.
    return stored_hash_index(0, n - 1) + 1 + _trailing_zeros(n)


def stored_hashes(n: int, entry: bytes, reader: HashReader) -> list[bytes]:
    """The hashes to store, from :func:`stored_hash_index` ``(0, n)`` on, when appending record ``n``.

    Reads the at most log2(n) earlier subtree hashes it combines with, in one
    ``read_hashes`` call (none when ``n`` is even).
    """
    return stored_hashes_for_leaf_hash(n, leaf_hash(entry), reader)


def stored_hashes_for_leaf_hash(n: int, record_hash: bytes, reader: HashReader) -> list[bytes]:
    """Like :func:`stored_hashes`, given ``leaf_hash(entry)`` instead of the entry."""
    if n < 0:
        raise ValueError("n must be non-negative")
    if len(record_hash) != HASH_SIZE:
        raise ValueError("record hash must be 32 bytes")
    # Each trailing 1 bit of n completes a subtree with its left neighbour.
    completed = _trailing_zeros(n + 1)
    indexes = [stored_hash_index(level, (n >> level) - 1) for level in reversed(range(completed))]
    left = _read(reader, indexes)
    out = [record_hash]
    h = record_hash
    for sibling in reversed(left):
        h = node_hash(sibling, h)
        out.append(h)
    return out


def _read(reader: HashReader, indexes: list[int]) -> list[bytes]:
    """One ``read_hashes`` call for distinct indexes in increasing order, checked.

    No call at all for no indexes. A database reader can answer the sorted
    list with one range-friendly query.
    """
    if not indexes:
        return []
    wanted = sorted(set(indexes))
    hashes = reader.read_hashes(wanted)
    if len(hashes) != len(wanted) or any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError("hash reader returned the wrong number or size of hashes")
    if wanted == indexes:
        return hashes
    by_index = dict(zip(wanted, hashes, strict=True))
    return [by_index[i] for i in indexes]


# --- roots and proofs ------------------------------------------------------------


def _subtree_indexes(lo: int, hi: int, out: list[int]) -> int:
    """Append the stored indexes of the complete subtrees covering ``[lo, hi)``; return how many.

    ``lo`` must be aligned to the largest power of two that fits, which holds
    for every range the RFC 6962 recursion produces.
    """
    count = 0
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        out.append(stored_hash_index(level, lo >> level))
        lo += 1 << level
        count += 1
    return count


def _fold(hashes: list[bytes], start: int, count: int) -> bytes:
    """MTH of a range from its complete-subtree hashes (largest first)."""
    h = hashes[start + count - 1]
    for i in range(start + count - 2, start - 1, -1):
        h = node_hash(hashes[i], h)
    return h


def _hashes_of_ranges(ranges: list[tuple[int, int]], reader: HashReader) -> list[bytes]:
    """MTH of each ``[lo, hi)`` range, from one ``read_hashes`` call."""
    indexes: list[int] = []
    counts = [_subtree_indexes(lo, hi, indexes) for lo, hi in ranges]
    hashes = _read(reader, indexes)
    out = []
    start = 0
    for count in counts:
        out.append(_fold(hashes, start, count))
        start += count
    return out


def tree_hash(n: int, reader: HashReader) -> bytes:
    """MTH of the first ``n`` records; :data:`EMPTY_ROOT` for ``n == 0``."""
    if n < 0:
        raise TreeRangeError("tree size must be non-negative")
    if n == 0:
        return EMPTY_ROOT
    return _hashes_of_ranges([(0, n)], reader)[0]


def prove_record(t: int, n: int, reader: HashReader) -> list[bytes]:
    """The inclusion proof (RFC 9162 §2.1.3.1 audit path) of record ``n`` in the tree of size ``t``.

    Hashes are ordered from the leaf up, as RFC 6962 ``PATH`` lists them.
    """
    if not 0 <= n < t:
        raise TreeRangeError("record index not in tree")
    # Walk down from the root; record the sibling range not taken at each step.
    siblings: list[tuple[int, int]] = []
    lo, hi = 0, t
    while hi - lo > 1:
        k = _split(hi - lo)
        if n < lo + k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
    siblings.reverse()
    return _hashes_of_ranges(siblings, reader)


def prove_tree(t: int, n: int, reader: HashReader) -> list[bytes]:
    """The consistency proof (RFC 9162 §2.1.4.1) that the tree of size ``n`` is a prefix of size ``t``.

    RFC 9162 defines proofs for ``0 < n < t``; for ``n == 0`` and ``n == t``
    the proof is empty (the prefix relation is then trivial), as
    :func:`check_tree` expects.
    """
    if not 0 <= n <= t:
        raise TreeRangeError("tree sizes out of order")
    if n in (0, t):
        return []
    # SUBPROOF(m, D[lo:hi], b): b is true exactly while lo == 0.
    nodes: list[tuple[int, int]] = []
    lo, hi = 0, t
    while n != hi:
        k = _split(hi - lo)
        if n <= lo + k:
            nodes.append((lo + k, hi))
            hi = lo + k
        else:
            nodes.append((lo, lo + k))
            lo += k
    if lo != 0:
        nodes.append((lo, hi))
    nodes.reverse()
    return _hashes_of_ranges(nodes, reader)


def _check_sizes(proof: Sequence[bytes], *hashes: bytes) -> None:
    if any(len(h) != HASH_SIZE for h in hashes) or any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("proof hash of the wrong size")


def check_record(proof: Sequence[bytes], t: int, root: bytes, n: int, leaf: bytes) -> None:
    """Check that ``proof`` puts leaf hash ``leaf`` at index ``n`` of the tree (``t``, ``root``).

    RFC 9162 §2.1.3.2, step for step. Raises :class:`ProofError` otherwise.
    """
    if not 0 <= n < t:
        raise ProofError("record index not in tree")
    _check_sizes(proof, root, leaf)
    fn, sn = n, t - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof too short")
    if r != root:
        raise ProofError("inclusion proof does not match the root")


def check_tree(proof: Sequence[bytes], t: int, root_t: bytes, n: int, root_n: bytes) -> None:
    """Check that ``proof`` shows the tree (``n``, ``root_n``) is a prefix of (``t``, ``root_t``).

    RFC 9162 §2.1.4.2 for ``0 < n < t``. The trivial cases take an empty
    proof only: ``n == t`` needs equal roots, ``n == 0`` needs ``root_n`` to
    be the empty-tree hash. Raises :class:`ProofError` otherwise.
    """
    if not 0 <= n <= t:
        raise ProofError("tree sizes out of order")
    _check_sizes(proof, root_t, root_n)
    if n in (0, t):
        if proof:
            raise ProofError("consistency proof too long")
        if n == 0 and root_n != EMPTY_ROOT:
            raise ProofError("consistency proof does not match the old root")
        if n == t and root_t != root_n:
            raise ProofError("consistency proof does not match the new root")
        return
    if not proof:
        raise ProofError("consistency proof too short")
    path = list(proof)
    if n & (n - 1) == 0:
        path.insert(0, root_n)
    fn, sn = n - 1, t - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof too short")
    if fr != root_n:
        raise ProofError("consistency proof does not match the old root")
    if sr != root_t:
        raise ProofError("consistency proof does not match the new root")


class MemoryHashStore:
    """A list of stored hashes: a :class:`HashReader` for tests and small logs."""

    def __init__(self) -> None:
        self._hashes: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        """Records appended so far."""
        return self._size

    def append(self, entry: bytes) -> int:
        """Append a record; returns its index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def append_leaf_hash(self, record_hash: bytes) -> int:
        """Append a record given its :func:`leaf_hash`; returns its index."""
        index = self._size
        self._hashes.extend(stored_hashes_for_leaf_hash(index, record_hash, self))
        self._size += 1
        return index

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        stored = self._hashes
        if any(not 0 <= i < len(stored) for i in indexes):
            raise TreeRangeError("stored hash index not in the store")
        return [stored[i] for i in indexes]


# --- tiles -------------------------------------------------------------------------


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
    return b"".join(_read(reader, [stored_hash_index(level, start + i) for i in range(tile.width)]))


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
