"""A transparency-log witness speaking C2SP tlog-witness (``POST /add-checkpoint``).

For each log it knows (origin → the log's verifier keys) it keeps the latest
checkpoint it cosigned, and cosigns a new one only if it is signed by the
log and provably extends that one (an RFC 6962 consistency proof). A
checkpoint of the same size with another root, or one that does not extend
the last — a split view — is refused loudly: an ERROR event, and the
offending note kept as evidence. Check-and-update is atomic, as the spec
requires; the state is durable (SQLite, fsync) before the answer is sent.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import metrics

from privproc import events
from privproc.errors import CryptoError, WireError
from privproc.runtime.sqlite import open_database
from privproc.wire import note, tlog

MAX_BODY_BYTES = 64 << 10
MEDIA_TYPE_SIZE = "text/x.tlog.size"

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL,
                                 note BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (id INTEGER PRIMARY KEY, at REAL NOT NULL, origin TEXT NOT NULL,
                                      reason TEXT NOT NULL, note BLOB NOT NULL);
"""


_METER = metrics.get_meter("privproc.witness")
#: Checkpoints cosigned, and refused by reason.
_COSIGNED = _METER.create_counter("privproc.witness.cosigned", unit="{checkpoint}")
_REFUSED = _METER.create_counter("privproc.witness.refused", unit="{checkpoint}")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, transport-free."""

    status: int
    content_type: str
    body: bytes


def _text(status: int, text: str) -> Answer:
    return Answer(status, "text/plain; charset=utf-8", (text + "\n").encode())


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    signed_checkpoint: bytes

    def encode(self) -> bytes:
        lines = [f"old {self.old_size}", *(base64.b64encode(h).decode() for h in self.proof)]
        return ("\n".join(lines) + "\n\n").encode() + self.signed_checkpoint

    @classmethod
    def decode(cls, body: bytes) -> AddCheckpoint:
        head, sep, checkpoint = body.partition(b"\n\n")
        if not sep or not checkpoint:
            raise WireError("add-checkpoint body lacks its checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise WireError("add-checkpoint body is not ASCII") from None
        first = lines[0]
        size_text = first[len("old ") :]
        if not first.startswith("old ") or not (size_text == "0" or size_text[:1] in "123456789"):
            raise WireError("bad old size line")
        if not size_text.isdigit() or len(size_text) > 20 or len(lines) - 1 > 63:
            raise WireError("bad old size line or too many proof lines")
        try:
            proof = tuple(base64.b64decode(line, validate=True) for line in lines[1:])
        except (binascii.Error, ValueError):
            raise WireError("bad proof line") from None
        if any(len(h) != tlog.HASH_SIZE for h in proof):
            raise WireError("bad proof line")
        return cls(int(size_text), proof, checkpoint)


class WitnessState:
    """Latest cosigned checkpoint per origin, and the incidents seen."""

    def __init__(self, path: Path | str) -> None:
        self.conn = open_database(path, SCHEMA)
        self.lock = threading.Lock()

    def latest(self, origin: str) -> tuple[int, bytes]:
        row = self.conn.execute("SELECT size, root FROM logs WHERE origin = ?", (origin,)).fetchone()
        return (0, tlog.EMPTY_ROOT) if row is None else (int(row[0]), bytes(row[1]))

    def incidents(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(str(o), str(r)) for o, r in self.conn.execute("SELECT origin, reason FROM incidents")]

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class Witness:
    """Cosigns checkpoints of known logs that extend what it saw before."""

    def __init__(
        self,
        state: WitnessState,
        signer: note.CosignatureV1Signer,
        logs: dict[str, Sequence[note.Verifier]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.signer = signer
        self.logs = logs
        self._clock = clock

    def add_checkpoint(self, body: bytes) -> Answer:
        """Handle one ``add-checkpoint`` request body."""
        if len(body) > MAX_BODY_BYTES:
            return _text(413, "request too large")
        try:
            request = AddCheckpoint.decode(body)
            text = request.signed_checkpoint.split(b"\n\n", 1)[0].decode("utf-8") + "\n"
            origin = note.Checkpoint.parse(text).origin
        except (WireError, UnicodeDecodeError):
            return _text(400, "malformed request")
        verifiers = self.logs.get(origin)
        if verifiers is None:
            return _text(404, "unknown log")
        try:
            checkpoint, opened = note.open_checkpoint(request.signed_checkpoint, origin, verifiers)
        except (CryptoError, WireError):
            events.emit(events.WitnessRefused(reason="bad_signature"))
            _REFUSED.add(1, {"privproc.reason": "bad_signature"})
            return _text(403, "no valid log signature")
        if request.old_size > checkpoint.size:
            return _text(400, "old size above checkpoint size")
        with self.state.lock:
            size, root = self.state.latest(origin)
            if request.old_size != size:
                events.emit(events.WitnessRefused(reason="stale_old_size"))
                _REFUSED.add(1, {"privproc.reason": "stale_old_size"})
                return Answer(409, MEDIA_TYPE_SIZE, f"{size}\n".encode())
            if checkpoint.size == size and checkpoint.root != root:
                self._incident(origin, "split_view", request.signed_checkpoint)
                return _text(409, "a different checkpoint of this size was cosigned")
            try:
                tlog.check_tree(list(request.proof), checkpoint.size, checkpoint.root, size, root)
            except CryptoError:
                self._incident(origin, "inconsistent", request.signed_checkpoint)
                return _text(422, "consistency proof does not verify")
            self.state.conn.execute(
                "INSERT INTO logs (origin, size, root, note) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(origin) DO UPDATE SET "
                "size = excluded.size, root = excluded.root, note = excluded.note",
                (origin, checkpoint.size, checkpoint.root, request.signed_checkpoint),
            )
        cosigned = note.sign_note(opened.text, [self.signer])
        line = cosigned.rsplit(b"\n\n", 1)[1]
        events.emit(events.WitnessCosigned(size=min(checkpoint.size, 2**53)))
        _COSIGNED.add(1)
        return Answer(200, "text/plain; charset=utf-8", line)

    def _incident(self, origin: str, reason: str, evidence: bytes) -> None:
        self.state.conn.execute(
            "INSERT INTO incidents (at, origin, reason, note) VALUES (?, ?, ?, ?)",
            (self._clock(), origin, reason, evidence),
        )
        events.emit(events.WitnessInconsistency(reason=reason))
