"""The canary scan (tests/canary.py) finds a canary however it was written, and nothing else."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.canary import ALPHABET, LENGTH, files_under, new_canary, scan


def test_canaries_are_fresh_identifiers() -> None:
    canaries = {new_canary() for _ in range(100)}
    assert len(canaries) == 100
    assert all(len(c) == LENGTH and set(c) <= set(ALPHABET) for c in canaries)


@given(prefix=st.binary(max_size=8), suffix=st.binary(max_size=8))
def test_found_in_every_encoding_at_every_alignment(prefix: bytes, suffix: bytes) -> None:
    canary = "k3v9x0q7m2p4z8w1"
    value = prefix + canary.encode() + suffix
    for encoded, form in (
        (value, "raw"),
        (value.hex().encode(), "hex"),
        (value.hex().upper().encode(), "HEX"),
        (base64.b64encode(value), "base64"),
        (base64.urlsafe_b64encode(value), "base64url"),
        (value.decode("latin-1").encode("utf-16-le"), "utf-16"),
    ):
        found = scan({"c": canary}, texts={"t": b"header " + encoded + b" trailer"})
        assert any(f.rendering.split("/")[0] == form for f in found), form


def test_files_are_read_as_bytes_recursively(tmp_path: Path) -> None:
    canary, other = new_canary(), new_canary()
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "db.sqlite3").write_bytes(b"\x00\x01SQLite" + canary.encode() + b"\xff\xfe")
    (tmp_path / "events.jsonl").write_text(json.dumps({"event": "x", "id": "clean"}) + "\n")
    found = scan({"canary": canary, "other": other}, files=files_under(tmp_path), texts={"log": "clean"})
    assert [(Path(f.where).name, f.secret, f.rendering) for f in found] == [("db.sqlite3", "canary", "raw")]
