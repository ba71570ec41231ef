"""Transparency-log Merkle trees (RFC 6962 / RFC 9162): hashing, stored-hash layout, proofs — sans-I/O.

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

Tiles and entry bundles (c2sp.org/tlog-tiles) are in :mod:`privproc.wire.tlog_tiles`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from privproc.errors import BadRequestError, CryptoError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "HashReader",
    "MemoryHashStore",
    "ProofError",
    "TreeRangeError",
    "check_record",
    "check_tree",
    "leaf_hash",
    "node_hash",
    "prove_record",
    "prove_tree",
    "read_checked",
    "split_stored_hash_index",
    "stored_hash_count",
    "stored_hash_index",
    "stored_hashes",
    "stored_hashes_for_leaf_hash",
    "tree_hash",
]

HASH_SIZE = 32
#: MTH({}) = SHA-256() (RFC 6962 §2.1): the root of the empty tree.
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(CryptoError):
    """An inclusion or consistency proof that does not verify."""

    reason = "tlog_proof"


class TreeRangeError(BadRequestError):
    """A hash or proof asked of a tree for sizes or indexes it does not have."""

    reason = "tlog_range"


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
    left = read_checked(reader, indexes)
    out = [record_hash]
    h = record_hash
    for sibling in reversed(left):
        h = node_hash(sibling, h)
        out.append(h)
    return out


def read_checked(reader: HashReader, indexes: list[int]) -> list[bytes]:
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
    hashes = read_checked(reader, indexes)
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
