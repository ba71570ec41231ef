"""Merkle tree math: published RFC 6962 vectors and real CT proofs, a brute-force reference, tiles."""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import PrivprocError, TruncatedError, WireError
from privproc.runtime import status
from privproc.wire import tlog, tlog_tiles
from privproc.wire.tlog import ProofError, TreeRangeError
from privproc.wire.tlog_tiles import Tile, TileFormatError
from tests.support import load_vector

V = load_vector("rfc6962-merkle.json")
CT = load_vector("ct-argon2020.json")
C2SP = load_vector("c2sp-examples.json")
h = bytes.fromhex
b64 = base64.b64decode
FAST = settings(max_examples=200, deadline=None)

# --- the 8-leaf RFC 6962 tree of the published vectors ------------------------------------------


def vector_store() -> tlog.MemoryHashStore:
    store = tlog.MemoryHashStore()
    for leaf in V["leaves"]:
        store.append(h(leaf))
    return store


def test_vector_roots_for_every_prefix() -> None:
    store = vector_store()
    assert h(V["roots"][0]) == tlog.EMPTY_ROOT
    for size, root in enumerate(V["roots"]):
        assert tlog.tree_hash(size, store) == h(root)


def test_vector_node_hashes_are_the_stored_hashes() -> None:
    store = vector_store()
    assert store.read_hashes([tlog.stored_hash_index(0, i) for i in range(8)]) == [
        tlog.leaf_hash(h(x)) for x in V["leaves"]
    ]
    for level, row in enumerate(V["node_hashes"]):
        for n, node in enumerate(row):
            assert store.read_hashes([tlog.stored_hash_index(level, n)]) == [h(node)]
    assert tlog.stored_hash_count(8) == 15


@pytest.mark.parametrize("case", V["inclusion"], ids=lambda c: f"{c['index']}of{c['size']}")
def test_vector_inclusion_proofs(case: dict[str, Any]) -> None:
    store = vector_store()
    index, size = case["index"], case["size"]
    proof = [h(p) for p in case["proof"]]
    assert tlog.prove_record(size, index, store) == proof
    root, leaf = h(V["roots"][size]), tlog.leaf_hash(h(V["leaves"][index]))
    tlog.check_record(proof, size, root, index, leaf)
    for probe in inclusion_probes(proof, size, root, index, leaf):
        with pytest.raises(ProofError):
            tlog.check_record(*probe)


@pytest.mark.parametrize("case", V["consistency"], ids=lambda c: f"{c['size1']}to{c['size2']}")
def test_vector_consistency_proofs(case: dict[str, Any]) -> None:
    store = vector_store()
    n, t = case["size1"], case["size2"]
    proof = [h(p) for p in case["proof"]]
    assert tlog.prove_tree(t, n, store) == proof
    root_n, root_t = h(V["roots"][n]), h(V["roots"][t])
    tlog.check_tree(proof, t, root_t, n, root_n)
    if proof:
        for probe in consistency_probes(proof, t, root_t, n, root_n):
            with pytest.raises(ProofError):
                tlog.check_tree(*probe)


SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def inclusion_probes(
    proof: list[bytes], t: int, root: bytes, n: int, leaf: bytes
) -> list[tuple[list[bytes], int, bytes, int, bytes]]:
    """Corruptions after transparency-dev/merkle proof/verify_test.go corruptInclusionProof."""
    probes = [
        (proof, t, root, n - 1, leaf),
        (proof, t, root, n + 1, leaf),
        (proof, t, root, n ^ 2, leaf),
        (proof, t * 2, root, n, leaf),
        (proof, t // 2, root, n, leaf),
        (proof, t, root, n, tlog.leaf_hash(b"WrongLeaf")),
        (proof, t, tlog.EMPTY_ROOT, n, leaf),
        (proof, t, SOME_HASH, n, leaf),
        ([*proof, b""], t, root, n, leaf),
        ([*proof, root], t, root, n, leaf),
        ([b"", *proof], t, root, n, leaf),
        ([root, *proof], t, root, n, leaf),
    ]
    for i in range(len(proof)):
        probes.append((flip(proof, i), t, root, n, leaf))
    if proof:
        probes.append((proof[:-1], t, root, n, leaf))
    if len(proof) > 1:
        probes.append(([proof[0], SOME_HASH, *proof[1:]], t, root, n, leaf))
    return probes


def consistency_probes(
    proof: list[bytes], t: int, root_t: bytes, n: int, root_n: bytes
) -> list[tuple[list[bytes], int, bytes, int, bytes]]:
    """Corruptions after transparency-dev/merkle proof/verify_test.go corruptConsistencyProof."""
    probes = [
        (proof, t, root_t, n - 1, root_n),
        (proof, t, root_t, n + 1, root_n),
        (proof, t, root_t, n ^ 2, root_n),
        (proof, t * 2, root_t, n, root_n),
        (proof, t // 2, root_t, n, root_n),
        (proof, t, root_t, n, SOME_HASH),
        (proof, t, SOME_HASH, n, root_n),
        (proof, t, root_n, n, root_t),
        ([], t, root_t, n, root_n),
        ([*proof, b""], t, root_t, n, root_n),
        ([*proof, root_n], t, root_t, n, root_n),
        ([*proof, root_t], t, root_t, n, root_n),
        ([b"", *proof], t, root_t, n, root_n),
        ([root_n, *proof], t, root_t, n, root_n),
        ([root_t, *proof], t, root_t, n, root_n),
        ([proof[0], *proof], t, root_t, n, root_n),
        (proof[:-1], t, root_t, n, root_n),
    ]
    for i in range(len(proof)):
        probes.append((flip(proof, i), t, root_t, n, root_n))
    return probes


def flip(proof: list[bytes], i: int, bit: int = 0) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ (1 << bit)]) + out[i][1:]
    return out


# --- real Certificate Transparency proofs (Google Argon 2020) -------------------------------------


def test_ct_argon2020_inclusion_and_consistency() -> None:
    size, root = CT["tree_size"], b64(CT["sha256_root_hash"])
    leaf = tlog.leaf_hash(b64(CT["leaf_input"]))
    path = [b64(x) for x in CT["audit_path"]]
    tlog.check_record(path, size, root, CT["leaf_index"], leaf)
    consistency = [b64(x) for x in CT["consistency"]]
    old_size, old_root = CT["old_tree_size"], b64(CT["old_root_hash"])
    tlog.check_tree(consistency, size, root, old_size, old_root)
    for probe in inclusion_probes(path, size, root, CT["leaf_index"], leaf):
        with pytest.raises(ProofError):
            tlog.check_record(*probe)
    for cprobe in consistency_probes(consistency, size, root, old_size, old_root):
        with pytest.raises(ProofError):
            tlog.check_tree(*cprobe)


# --- a brute-force reference: RFC 6962 §2.1 MTH, PATH and PROOF as written -------------------------

MAX_SIZE = 700
ENTRIES = [b"entry %d" % i for i in range(MAX_SIZE)]


@functools.cache
def store_of_all() -> tlog.MemoryHashStore:
    store = tlog.MemoryHashStore()
    for entry in ENTRIES:
        store.append(entry)
    return store


def ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@functools.cache
def ref_mth(lo: int, hi: int) -> bytes:
    if hi == lo:
        return hashlib.sha256(b"").digest()
    if hi - lo == 1:
        return hashlib.sha256(b"\x00" + ENTRIES[lo]).digest()
    k = ref_k(hi - lo)
    return hashlib.sha256(b"\x01" + ref_mth(lo, lo + k) + ref_mth(lo + k, hi)).digest()


def ref_path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi]), RFC 6962 §2.1.1."""
    if hi - lo == 1:
        return []
    k = ref_k(hi - lo)
    if m < k:
        return [*ref_path(m, lo, lo + k), ref_mth(lo + k, hi)]
    return [*ref_path(m - k, lo + k, hi), ref_mth(lo, lo + k)]


def ref_subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b), RFC 6962 §2.1.2."""
    if m == hi - lo:
        return [] if b else [ref_mth(lo, hi)]
    k = ref_k(hi - lo)
    if m <= k:
        return [*ref_subproof(m, lo, lo + k, b), ref_mth(lo + k, hi)]
    return [*ref_subproof(m - k, lo + k, hi, False), ref_mth(lo, lo + k)]


def check_inclusion_against_reference(t: int, n: int) -> None:
    store = store_of_all()
    proof = tlog.prove_record(t, n, store)
    assert proof == ref_path(n, 0, t)
    root, leaf = ref_mth(0, t), tlog.leaf_hash(ENTRIES[n])
    tlog.check_record(proof, t, root, n, leaf)
    for other in range(max(0, n - 3), min(t, n + 4)):
        if other != n:
            with pytest.raises(ProofError):
                tlog.check_record(proof, t, root, other, leaf)


def check_consistency_against_reference(t: int, n: int) -> None:
    store = store_of_all()
    proof = tlog.prove_tree(t, n, store)
    assert proof == (ref_subproof(n, 0, t, True) if 0 < n < t else [])
    tlog.check_tree(proof, t, ref_mth(0, t), n, ref_mth(0, n))


def test_tree_hash_matches_reference_for_every_size() -> None:
    store = store_of_all()
    for size in range(MAX_SIZE + 1):
        assert tlog.tree_hash(size, store) == ref_mth(0, size)


def test_every_proof_of_small_trees_matches_reference() -> None:
    for t in range(1, 34):
        for n in range(t):
            check_inclusion_against_reference(t, n)
        for n in range(t + 1):
            check_consistency_against_reference(t, n)


@pytest.mark.parametrize("t", [255, 256, 257, 511, 512, 513, 700])
def test_proofs_at_tile_boundaries_match_reference(t: int) -> None:
    for n in {0, 1, 127, 128, 254, 255, 256, t // 2, t - 2, t - 1}:
        if 0 <= n < t:
            check_inclusion_against_reference(t, n)
            check_consistency_against_reference(t, n)
    check_consistency_against_reference(t, t)


sizes_and_index = st.integers(1, 300).flatmap(lambda t: st.tuples(st.just(t), st.integers(0, t - 1)))


@FAST
@given(sizes_and_index)
def test_inclusion_matches_reference(case: tuple[int, int]) -> None:
    check_inclusion_against_reference(*case)


@FAST
@given(sizes_and_index.map(lambda c: (c[0], c[1] + 1)))
def test_consistency_matches_reference(case: tuple[int, int]) -> None:
    check_consistency_against_reference(*case)


@FAST
@given(sizes_and_index, st.data())
def test_mutated_inclusion_proofs_are_rejected(case: tuple[int, int], data: st.DataObject) -> None:
    t, n = case
    proof = tlog.prove_record(t, n, store_of_all())
    root, leaf = ref_mth(0, t), tlog.leaf_hash(ENTRIES[n])
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        mutated = list(proof)
        mutated[i] = (int.from_bytes(proof[i], "big") ^ (1 << bit)).to_bytes(32, "big")
        with pytest.raises(ProofError):
            tlog.check_record(mutated, t, root, n, leaf)
        with pytest.raises(ProofError):
            tlog.check_record(proof[:-1], t, root, n, leaf)
    with pytest.raises(ProofError):
        tlog.check_record([*proof, data.draw(st.binary(min_size=32, max_size=32))], t, root, n, leaf)
    with pytest.raises(ProofError):
        tlog.check_record(proof, t, root, n, tlog.leaf_hash(b"not the entry"))
    # A proof does not bind the tree size beyond its shape (RFC 9162 proofs never do);
    # a size whose audit path has another length must fail.
    other_t = data.draw(st.integers(n + 1, 2 * t + 2))
    if len(ref_path(n, 0, other_t)) != len(proof):
        with pytest.raises(ProofError):
            tlog.check_record(proof, other_t, root, n, leaf)


@FAST
@given(sizes_and_index, st.data())
def test_mutated_consistency_proofs_are_rejected(case: tuple[int, int], data: st.DataObject) -> None:
    t, n = case[0] + 1, case[1] + 1  # 0 < n < t
    proof = tlog.prove_tree(t, n, store_of_all())
    root_t, root_n = ref_mth(0, t), ref_mth(0, n)
    i = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    mutated = list(proof)
    mutated[i] = (int.from_bytes(proof[i], "big") ^ (1 << bit)).to_bytes(32, "big")
    for bad in (mutated, proof[:-1], [*proof, SOME_HASH], [SOME_HASH, *proof]):
        with pytest.raises(ProofError):
            tlog.check_tree(bad, t, root_t, n, root_n)
    with pytest.raises(ProofError):
        tlog.check_tree(proof, t, root_n, n, root_t)
    other_n = data.draw(st.integers(1, t - 1))
    if other_n != n and len(ref_subproof(other_n, 0, t, True)) != len(proof):
        with pytest.raises(ProofError):
            tlog.check_tree(proof, t, root_t, other_n, root_n)


# --- edge cases -------------------------------------------------------------------------------------


def test_inclusion_edge_cases() -> None:
    store = store_of_all()
    leaf = tlog.leaf_hash(ENTRIES[0])
    assert tlog.prove_record(1, 0, store) == []
    tlog.check_record([], 1, leaf, 0, leaf)
    for t, n in [(0, 0), (1, 1), (5, 5), (5, -1), (-1, 0)]:
        with pytest.raises(TreeRangeError):
            tlog.prove_record(t, n, store)
        with pytest.raises(ProofError):
            tlog.check_record([], t, leaf, n, leaf)
    with pytest.raises(ProofError):
        tlog.check_record([], 1, leaf[:31], 0, leaf[:31])
    with pytest.raises(ProofError):
        tlog.check_record([], 1, leaf, 0, tlog.EMPTY_ROOT)


def test_consistency_edge_cases() -> None:
    store = store_of_all()
    root5 = tlog.tree_hash(5, store)
    assert tlog.prove_tree(5, 5, store) == [] and tlog.prove_tree(5, 0, store) == []
    assert tlog.prove_tree(0, 0, store) == []
    tlog.check_tree([], 5, root5, 5, root5)
    tlog.check_tree([], 5, root5, 0, tlog.EMPTY_ROOT)
    tlog.check_tree([], 0, tlog.EMPTY_ROOT, 0, tlog.EMPTY_ROOT)
    bad = [
        ([], 5, root5, 5, SOME_HASH),  # equal sizes, different roots
        ([root5], 5, root5, 5, root5),  # equal sizes, non-empty proof
        ([], 5, root5, 0, SOME_HASH),  # the empty tree has one root
        ([tlog.EMPTY_ROOT], 5, root5, 0, tlog.EMPTY_ROOT),
        ([], 0, SOME_HASH, 0, tlog.EMPTY_ROOT),
        ([], 4, root5, 5, root5),  # time travel
        ([], 5, root5, -1, root5),
        ([], 6, root5, 5, root5),  # 0 < n < t needs a proof
    ]
    for args in bad:
        with pytest.raises(ProofError):
            tlog.check_tree(*args)
    for t, n in [(4, 5), (5, -1), (-1, -1)]:
        with pytest.raises(TreeRangeError):
            tlog.prove_tree(t, n, store)
    with pytest.raises(TreeRangeError):
        tlog.tree_hash(-1, store)
    assert tlog.tree_hash(0, store) == hashlib.sha256(b"").digest()


# --- the stored-hash layout and the reader contract -------------------------------------------------


def test_stored_hash_layout_is_dense_and_invertible() -> None:
    store = tlog.MemoryHashStore()
    for size in range(1, 300):
        store.append(ENTRIES[size - 1])
        # Every complete subtree of a tree of `size` is stored once, and nothing else.
        indexes = sorted(
            tlog.stored_hash_index(level, k)
            for level in range(size.bit_length())
            for k in range(size >> level)
        )
        assert indexes == list(range(tlog.stored_hash_count(size)))
        assert tlog.stored_hash_count(size) == len(store.read_hashes(range(tlog.stored_hash_count(size))))
    for index in range(5000):
        level, n = tlog.split_stored_hash_index(index)
        assert tlog.stored_hash_index(level, n) == index
    assert tlog.stored_hash_count(0) == 0
    for bad in [(-1, 0), (0, -1)]:
        with pytest.raises(ValueError):
            tlog.stored_hash_index(*bad)


def test_stored_hashes_for_an_append() -> None:
    store = vector_store()
    # Appending record 7 completes subtrees of 2, 4 and 8 leaves.
    new = tlog.stored_hashes(7, h(V["leaves"][7]), store)
    assert new == [h(V["node_hashes"][level][7 >> level]) for level in range(4)]
    assert len(tlog.stored_hashes(8, b"x", store)) == 1


class CountingReader:
    """Serves made-up hashes and records each read_hashes call."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        self.calls.append(list(indexes))
        return [hashlib.sha256(b"%d" % i).digest() for i in indexes]


@pytest.mark.parametrize("t", [10**7, 2**40 + 12345])
def test_one_read_per_operation_with_logarithmic_hashes(t: int) -> None:
    depth = (t - 1).bit_length()
    for n in (0, 1, t // 3, t - 2, t - 1):
        reader = CountingReader()
        tlog.prove_record(t, n, reader)
        assert len(reader.calls) == 1 and len(reader.calls[0]) <= 2 * depth
        assert reader.calls[0] == sorted(set(reader.calls[0]))  # one range-friendly query
        reader = CountingReader()
        tlog.prove_tree(t, n + 1, reader)
        assert len(reader.calls) <= 1 and all(len(c) <= 2 * depth for c in reader.calls)
    reader = CountingReader()
    tlog.tree_hash(t, reader)
    assert len(reader.calls) == 1 and len(reader.calls[0]) == t.bit_count()
    reader = CountingReader()
    tlog.stored_hashes(t - 1, b"x", reader)
    assert len(reader.calls) <= 1


def test_reader_answers_are_checked() -> None:
    class Short:
        def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
            return [b"\x00" * 32] * (len(indexes) - 1)

    with pytest.raises(ValueError):
        tlog.tree_hash(3, Short())
    with pytest.raises(TreeRangeError):
        tlog.MemoryHashStore().read_hashes([0])
    with pytest.raises(TreeRangeError):
        vector_store().read_hashes([-1])


# --- tiles ---------------------------------------------------------------------------------------


def test_tile_paths_from_the_spec() -> None:
    for case in C2SP["tile_paths"]:
        tile = Tile(case["level"], case["n"], case["width"])
        assert tile.path() == case["path"]
        assert Tile.parse(case["path"]) == tile
    assert Tile(0, 0).path() == "tile/0/000"
    assert Tile(3, 5, 7).path() == "tile/3/005.p/7"
    assert Tile(63, 1000).path() == "tile/63/x001/000"
    assert Tile(tlog_tiles.ENTRIES_LEVEL, 1234067, 255).path() == "tile/entries/x001/x234/067.p/255"
    assert Tile.parse("tile/entries/000.p/1") == Tile(tlog_tiles.ENTRIES_LEVEL, 0, 1)
    assert Tile(0, 2**64 - 1).path() == "tile/0/x018/x446/x744/x073/x709/x551/615"


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile",
        "tile/0",
        "tile/0/",
        "/tile/0/000",
        "tile/0/000/",
        "tiles/0/000",
        "tile/00/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/+1/000",
        "tile/data/000",
        "tile/0/1",
        "tile/0/0001",
        "tile/0/x001",
        "tile/0/001/002",
        "tile/0/x000/001",  # not canonical
        "tile/0/X001/002",
        "tile/0/x01/002",
        "tile/0/000.p",
        "tile/0/000.p/",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/07",
        "tile/0/000.p/5/6",
        "tile/0/000.q/5",
        "tile/0/\uff1000",  # a full-width digit
        "tile/0/x018/x446/x744/x073/x709/x551/616",  # 2^64
        "tile/0/x001/x001/x001/x001/x001/x001/x001/000",
        "tile/entries/x1/000",
    ],
)
def test_tile_parse_rejects(path: str) -> None:
    with pytest.raises(TileFormatError):
        Tile.parse(path)


@FAST
@given(st.integers(-1, 63), st.integers(0, 2**64 - 1), st.integers(1, 256))
def test_tile_path_round_trip(level: int, n: int, width: int) -> None:
    tile = Tile(level, n, width)
    assert Tile.parse(tile.path()) == tile


@FAST
@given(st.text(alphabet="tile/entrsx0123456789.p-", max_size=40) | st.text(max_size=40))
def test_tile_parse_any_text(path: str) -> None:
    try:
        tile = Tile.parse(path)
    except TileFormatError:
        return
    assert tile.path() == path


def test_tiles_for_size_spec_examples() -> None:
    for case in C2SP["tile_counts"]:
        tiles = tlog_tiles.tiles_for_size(case["size"])
        expected = []
        for level, count, width in case["tiles"]:
            if width == 0:
                expected += [Tile(level, n) for n in range(count)]
            else:
                expected.append(Tile(level, len([t for t in expected if t.level == level]), width))
        assert tiles == expected
    assert tlog_tiles.tiles_for_size(0) == []
    assert tlog_tiles.bundles_for_size(257) == [Tile(-1, 0), Tile(-1, 1, 1)]


@FAST
@given(st.integers(0, 300_000), st.integers(0, 3000))
def test_tiles_changed_are_the_new_tiles(old: int, grow: int) -> None:
    new = old + grow
    before = set(tlog_tiles.tiles_for_size(old))
    assert tlog_tiles.tiles_changed(old, new) == [
        t for t in tlog_tiles.tiles_for_size(new) if t not in before
    ]


def test_tiles_changed_examples() -> None:
    assert tlog_tiles.tiles_changed(1, 1) == []
    assert tlog_tiles.tiles_changed(100, 101) == [Tile(0, 0, 101)]
    assert tlog_tiles.tiles_changed(255, 257) == [Tile(0, 0), Tile(0, 1, 1), Tile(1, 0, 1)]
    assert tlog_tiles.tiles_changed(256, 300) == [Tile(0, 1, 44)]
    with pytest.raises(TreeRangeError):
        tlog_tiles.tiles_changed(5, 4)


def test_tile_data_is_the_row_of_stored_hashes() -> None:
    store = store_of_all()
    data = tlog_tiles.tile_data(Tile(0, 1, 3), store)
    assert data == b"".join(tlog.leaf_hash(ENTRIES[i]) for i in range(256, 259))
    assert tlog_tiles.tile_data(Tile(1, 0, 2), store) == ref_mth(0, 256) + ref_mth(256, 512)
    with pytest.raises(ValueError):
        tlog_tiles.tile_data(Tile(tlog_tiles.ENTRIES_LEVEL, 0), store)


def tile_server(store: tlog.MemoryHashStore) -> tuple[list[Tile], Callable[[Tile], bytes]]:
    fetched: list[Tile] = []

    def fetch(tile: Tile) -> bytes:
        fetched.append(tile)
        return tlog_tiles.tile_data(tile, store)

    return fetched, fetch


def test_tree_hash_from_tiles_for_every_size() -> None:
    store = store_of_all()
    for size in range(MAX_SIZE + 1):
        fetched, fetch = tile_server(store)
        assert tlog_tiles.tree_hash_from_tiles(size, fetch) == ref_mth(0, size)
        assert set(fetched) <= set(tlog_tiles.tiles_for_size(size))
        assert len(fetched) == len(set(fetched))


@FAST
@given(sizes_and_index.map(lambda c: (c[0] + 400, c[1])))
def test_proofs_from_tiles_equal_proofs_from_store(case: tuple[int, int]) -> None:
    t, n = case
    store = store_of_all()
    _, fetch = tile_server(store)
    reader = tlog_tiles.TileHashReader(t, fetch)
    assert tlog.prove_record(t, n, reader) == tlog.prove_record(t, n, store)
    assert tlog.prove_tree(t, n, reader) == tlog.prove_tree(t, n, store)


def test_tiles_of_a_tree_with_three_tile_levels() -> None:
    store = tlog.MemoryHashStore()
    for i in range(70_000):
        store.append_leaf_hash(hashlib.sha256(b"%d" % i).digest())
    _, fetch = tile_server(store)
    for size in (65_535, 65_536, 65_537, 70_000):
        assert tlog_tiles.tree_hash_from_tiles(size, fetch) == tlog.tree_hash(size, store)
    reader = tlog_tiles.TileHashReader(70_000, fetch)
    assert tlog.prove_record(70_000, 69_999, reader) == tlog.prove_record(70_000, 69_999, store)
    assert tlog.prove_tree(70_000, 65_537, reader) == tlog.prove_tree(70_000, 65_537, store)


def test_tile_hash_reader_rejects_bad_tiles_and_ranges() -> None:
    store = store_of_all()
    with pytest.raises(TileFormatError):
        tlog_tiles.tree_hash_from_tiles(300, lambda tile: tlog_tiles.tile_data(tile, store)[:-1])
    with pytest.raises(TileFormatError):
        tlog_tiles.tree_hash_from_tiles(300, lambda tile: tlog_tiles.tile_data(tile, store) + bytes(32))
    reader = tlog_tiles.TileHashReader(300, lambda tile: tlog_tiles.tile_data(tile, store))
    with pytest.raises(TreeRangeError):
        reader.read_hashes([tlog.stored_hash_index(0, 300)])
    with pytest.raises(TreeRangeError):
        reader.read_hashes([tlog.stored_hash_index(9, 0)])  # 512 leaves, not complete at 300
    # Tampered tiles give wrong roots and proofs, which the checks then refuse.
    root = tlog.tree_hash(300, store)
    zeroed = lambda tile: bytes(32) + tlog_tiles.tile_data(tile, store)[32:]  # noqa: E731
    assert tlog_tiles.tree_hash_from_tiles(300, zeroed) != root
    proof = tlog.prove_record(300, 1, tlog_tiles.TileHashReader(300, zeroed))
    with pytest.raises(ProofError):
        tlog.check_record(proof, 300, root, 1, tlog.leaf_hash(ENTRIES[1]))


# --- entry bundles ---------------------------------------------------------------------------------


def test_entry_bundle_encoding() -> None:
    assert tlog_tiles.encode_entry_bundle([b"", b"ab"]) == b"\x00\x00\x00\x02ab"
    assert tlog_tiles.decode_entry_bundle(b"\x00\x00\x00\x02ab", width=2) == [b"", b"ab"]
    for bad in (b"", b"\x00\x00\x00\x02ab\x00", b"\x00\x02a"):
        with pytest.raises(WireError):
            tlog_tiles.decode_entry_bundle(bad)
    with pytest.raises(TruncatedError):
        tlog_tiles.decode_entry_bundle(b"\x00\x05abc")
    with pytest.raises(tlog_tiles.EntryBundleError):
        tlog_tiles.decode_entry_bundle(b"\x00\x00", width=2)
    with pytest.raises(tlog_tiles.EntryBundleError):
        tlog_tiles.decode_entry_bundle(b"\x00\x00" * 257)
    assert len(tlog_tiles.decode_entry_bundle(b"\x00\x00" * 256, width=256)) == 256
    for entries in ([], [b""] * 257, [b"x" * 65_536]):
        with pytest.raises(ValueError):
            tlog_tiles.encode_entry_bundle(entries)


@FAST
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_entry_bundle_round_trip(entries: list[bytes]) -> None:
    data = tlog_tiles.encode_entry_bundle(entries)
    assert tlog_tiles.decode_entry_bundle(data, width=len(entries)) == entries


@FAST
@given(st.binary(max_size=600))
def test_entry_bundle_any_bytes(data: bytes) -> None:
    try:
        entries = tlog_tiles.decode_entry_bundle(data)
    except WireError:
        return
    assert tlog_tiles.encode_entry_bundle(entries) == data


def test_errors_are_typed_with_their_own_reasons() -> None:
    assert issubclass(ProofError, PrivprocError) and ProofError.reason == "tlog_proof"
    assert status.http_status(ProofError()) == 400 and status.http_status(TreeRangeError()) == 400
    assert issubclass(tlog_tiles.EntryBundleTruncatedError, TruncatedError)
