"""The log itself, independent of transport: authorised appends, checkpoints, proofs, tiles.

Appends are authorised by publisher keys (Ed25519, named like signed-note
keys): a publisher signs ``privproc-ledger-append/v1\\n`` followed by the
entry. An entry that is already logged is not appended again; its index is
returned, so a publisher can retry safely.
"""

from __future__ import annotations

from dataclasses import dataclass

from privproc.errors import NotFoundError, PermissionDeniedError, PrivprocError
from privproc.ledger.store import LedgerStore
from privproc.wire import note, tlog, tlog_tiles
from privproc.wire.entries import parse_entry

APPEND_DOMAIN = b"privproc-ledger-append/v1\n"
CHECKPOINT_META = "checkpoint"


def append_message(entry: bytes) -> bytes:
    """What a publisher signs to append ``entry``."""
    return APPEND_DOMAIN + entry


@dataclass(frozen=True)
class Append:
    entry: bytes
    signature: bytes
    publisher: str


class Log:
    def __init__(
        self,
        store: LedgerStore,
        *,
        origin: str,
        signer: note.Ed25519Signer,
        publishers: dict[str, note.Ed25519Verifier],
    ) -> None:
        if signer.name != origin:
            raise ValueError("the log's key is named after its origin")
        self.store = store
        self.origin = origin
        self.signer = signer
        self.verifier = signer.verifier()
        self.publishers = publishers

    def authorise(self, append: Append) -> None:
        """Refuse an append not signed by a known publisher, or not a well-formed entry."""
        verifier = self.publishers.get(append.publisher)
        if verifier is None or not verifier.verify(append_message(append.entry), append.signature):
            raise PermissionDeniedError("append not signed by an authorised publisher")
        parse_entry(append.entry)

    def append_authorised(self, appends: list[Append]) -> list[int | PrivprocError]:
        """Authorise each append and append the authorised ones in one batch.

        Returns, per append, its index or the error that refused it; run in
        the sequencer's worker thread so signature checks stay off the loop.
        """
        results: list[int | PrivprocError] = []
        accepted: list[bytes] = []
        for append in appends:
            try:
                self.authorise(append)
            except PrivprocError as err:
                results.append(err)
                continue
            results.append(len(accepted))
            accepted.append(append.entry)
        indexes = self.append_batch(accepted) if accepted else []
        return [r if isinstance(r, PrivprocError) else indexes[r] for r in results]

    def existing_index(self, entry: bytes) -> int | None:
        return self.store.index_of(tlog.leaf_hash(entry))

    def append_batch(self, entries: list[bytes]) -> list[int]:
        """Append (deduplicated) entries durably; their indexes, in order."""
        indexes: list[int | None] = [self.existing_index(e) for e in entries]
        fresh: dict[bytes, int] = {}
        new_entries: list[bytes] = []
        for entry, index in zip(entries, indexes, strict=True):
            if index is None and entry not in fresh:
                fresh[entry] = len(new_entries)
                new_entries.append(entry)
        start = self.store.append_batch(new_entries) if new_entries else self.store.size
        return [i if i is not None else start + fresh[e] for e, i in zip(entries, indexes, strict=True)]

    # --- checkpoints -----------------------------------------------------------------------

    def checkpoint(self) -> note.Checkpoint:
        size = self.store.size
        return note.Checkpoint(self.origin, size, tlog.tree_hash(size, self.store))

    def sign(self, checkpoint: note.Checkpoint) -> bytes:
        return note.sign_note(checkpoint.encode(), [self.signer])

    def latest(self) -> bytes | None:
        """The newest stored (signed, possibly cosigned) checkpoint note."""
        return self.store.meta(CHECKPOINT_META)

    def latest_checkpoint(self) -> note.Checkpoint | None:
        stored = self.latest()
        if stored is None:
            return None
        return note.open_checkpoint(stored, self.origin, [self.verifier])[0]

    def store_checkpoint(self, signed: bytes) -> None:
        self.store.set_meta(CHECKPOINT_META, signed)

    # --- proofs ----------------------------------------------------------------------------

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        if not 0 <= index < size <= self.store.size:
            raise tlog.TreeRangeError("index or tree size out of range")
        return tlog.prove_record(size, index, self.store)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        if not 0 <= old <= new <= self.store.size:
            raise tlog.TreeRangeError("tree sizes out of range")
        return tlog.prove_tree(new, old, self.store)

    def index_of_leaf(self, leaf_hash: bytes) -> int:
        index = self.store.index_of(leaf_hash)
        if index is None:
            raise NotFoundError("no such entry")
        return index

    # --- tiles -----------------------------------------------------------------------------

    def tile(self, path: str, size: int) -> bytes:
        """A hash tile or entry bundle of the tree of ``size`` (a served checkpoint's size)."""
        try:
            tile = tlog_tiles.Tile.parse(path)
        except tlog_tiles.TileFormatError as err:
            raise NotFoundError("no such tile") from err
        # Any tile whose every hash (or entry) exists in the tree of ``size``:
        # full tiles forever, partial ones of this size or an earlier one.
        span = tlog_tiles.TILE_WIDTH ** max(tile.level, 0)
        if (tile.n * tlog_tiles.TILE_WIDTH + tile.width) * span > size:
            raise NotFoundError("no such tile")
        if tile.level == tlog_tiles.ENTRIES_LEVEL:
            start = tile.n * tlog_tiles.TILE_WIDTH
            return tlog_tiles.encode_entry_bundle(self.store.entries(start, start + tile.width))
        return tlog_tiles.tile_data(tile, self.store)
