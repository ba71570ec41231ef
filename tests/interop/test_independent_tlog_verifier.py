"""The independent tlog verifier against tiny logs that this test builds with its own code.

The log builder below shares nothing with the verifier: it computes Merkle hashes bottom-up
(promoting the odd node of a level, an equivalent formulation of RFC 6962 §2.1), encodes tile
paths its own way, and signs notes and cosignatures itself.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.interop import independent_tlog_verifier as v

ORIGIN = "ledger.test.example/log"
WITNESS_NAMES = ("witness.example/w1", "witness.example/w2")
COSIGN_TIME = 1_700_000_000
KEY_CONFIG = bytes.fromhex("01002000010001") + b"\x42" * 32


# --- an independent test-only log builder -----------------------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _bottom_up_root(hashes: list[bytes]) -> bytes:
    if not hashes:
        return _h(b"")
    level = hashes
    while len(level) > 1:
        paired = [_h(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def _path(kind: str, index: int, width: int) -> str:
    digits = str(index)
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    encoded = "/".join([*("x" + g for g in groups[:-1]), groups[-1]])
    return f"tile/{kind}/{encoded}" + ("" if width == 256 else f".p/{width}")


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _vkey(name: str, alg: int, key: Ed25519PrivateKey) -> str:
    material = bytes([alg]) + _raw_public(key)
    kid = _h(name.encode() + b"\n" + material)[:4]
    return f"{name}+{kid.hex()}+{base64.b64encode(material).decode()}"


def _sig_line(name: str, alg: int, key: Ed25519PrivateKey, signature: bytes) -> bytes:
    kid = _h(name.encode() + b"\n" + bytes([alg]) + _raw_public(key))[:4]
    return f"\u2014 {name} {base64.b64encode(kid + signature).decode()}\n".encode()


def _log_signature(name: str, key: Ed25519PrivateKey, text: bytes) -> bytes:
    return _sig_line(name, 0x01, key, key.sign(text))


def _cosignature(name: str, key: Ed25519PrivateKey, text: bytes, when: int = COSIGN_TIME) -> bytes:
    message = f"cosignature/v1\ntime {when}\n".encode() + text
    return _sig_line(name, 0x04, key, struct.pack(">Q", when) + key.sign(message))


def _entry(i: int) -> bytes:
    if i % 50 == 7:
        record: dict[str, Any] = {
            "kind": "ohttp-key-config",
            "sha256": _h(KEY_CONFIG + i.to_bytes(4, "big")).hex(),
        }
    else:
        record = {"kind": "release", "n": i, "name": f"artifact-{i}"}
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class TinyLog:
    entries: list[bytes]
    root: bytes
    files: dict[str, bytes]
    log_key: Ed25519PrivateKey
    witness_keys: list[Ed25519PrivateKey]
    checkpoint_text: bytes = b""
    log_vkey: str = ""
    witness_vkeys: list[str] = field(default_factory=list)

    def sign(self, text: bytes, cosigners: int = 1) -> bytes:
        note = text + b"\n" + _log_signature(ORIGIN, self.log_key, text)
        for name, key in list(zip(WITNESS_NAMES, self.witness_keys, strict=True))[:cosigners]:
            note += _cosignature(name, key, text)
        return note


def build_log(items: list[bytes], cosigners: int = 1) -> TinyLog:
    leaves = [_h(b"\x00" + e) for e in items]
    files: dict[str, bytes] = {}
    for start in range(0, len(items), 256):
        chunk = items[start : start + 256]
        files[_path("entries", start // 256, len(chunk))] = b"".join(
            struct.pack(">H", len(e)) + e for e in chunk
        )
    level, hashes = 0, leaves
    while hashes:
        for start in range(0, len(hashes), 256):
            chunk = hashes[start : start + 256]
            files[_path(str(level), start // 256, len(chunk))] = b"".join(chunk)
        full = len(hashes) // 256
        hashes = [_bottom_up_root(hashes[j * 256 : (j + 1) * 256]) for j in range(full)]
        level += 1
    log = TinyLog(
        items,
        _bottom_up_root(leaves),
        files,
        Ed25519PrivateKey.generate(),
        [Ed25519PrivateKey.generate() for _ in WITNESS_NAMES],
    )
    log.checkpoint_text = f"{ORIGIN}\n{len(items)}\n{base64.b64encode(log.root).decode()}\n".encode()
    log.files["checkpoint"] = log.sign(log.checkpoint_text, cosigners)
    log.log_vkey = _vkey(ORIGIN, 0x01, log.log_key)
    log.witness_vkeys = [_vkey(n, 0x04, k) for n, k in zip(WITNESS_NAMES, log.witness_keys, strict=True)]
    return log


def dict_fetcher(files: dict[str, bytes], prefix: str, seen: list[str] | None = None) -> v.Fetcher:
    def fetch(url: str) -> bytes:
        assert url.startswith(prefix + "/")
        path = url[len(prefix) + 1 :]
        if seen is not None:
            seen.append(path)
        if path not in files:
            raise v.VerificationError(f"404 {path}")
        return files[path]

    return fetch


# --- a loopback HTTP server serving a dict -----------------------------------------------------------


class _FileServer(ThreadingHTTPServer):
    files: dict[str, bytes]
    gzip_bundles: bool


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _FileServer)
        path = self.path.removeprefix("/log/")
        body = server.files.get(path)
        if not self.path.startswith("/log/") or body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if server.gzip_bundles and path.startswith("tile/entries/"):
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[_FileServer]:
    httpd = _FileServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.gzip_bundles = {}, False
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def serve(server: _FileServer) -> Callable[[TinyLog], str]:
    def start(log: TinyLog) -> str:
        server.files, server.gzip_bundles = log.files, False
        return f"http://127.0.0.1:{server.server_address[1]}/log"

    return start


# --- hashing, paths, keys ------------------------------------------------------------------------------

RFC6962_INPUTS = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_rfc6962_reference_roots() -> None:
    leaves = [v.leaf_hash(bytes.fromhex(x)) for x in RFC6962_INPUTS]
    for size, root in enumerate(RFC6962_ROOTS, start=1):
        assert v.merkle_root(leaves[:size]).hex() == root
        assert _bottom_up_root(leaves[:size]).hex() == root
    assert v.merkle_root([]) == hashlib.sha256(b"").digest()


def test_merkle_root_agrees_with_the_builder() -> None:
    leaves = [_h(bytes([i % 256, i // 256])) for i in range(1100)]
    for size in [*range(40), 255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 1100]:
        assert v.merkle_root(leaves[:size]) == _bottom_up_root(leaves[:size])


@pytest.mark.parametrize(
    ("level", "n", "width", "path"),
    [
        (0, 0, None, "tile/0/000"),
        (0, 5, 17, "tile/0/005.p/17"),
        (1, 999, None, "tile/1/999"),
        (2, 1000, 1, "tile/2/x001/000.p/1"),
        (0, 1234067, None, "tile/0/x001/x234/067"),
        ("entries", 1234067, 255, "tile/entries/x001/x234/067.p/255"),
        (63, 10**9, None, "tile/63/x001/x000/x000/000"),
    ],
)
def test_tile_path(level: int | str, n: int, width: int | None, path: str) -> None:
    assert v.tile_path(level, n, width) == path  # type: ignore[arg-type]


def test_tile_path_agrees_with_the_builder() -> None:
    for n in [*range(1200), 999_999, 1_000_000, 123_456_789]:
        assert v.tile_path(3, n) == _path("3", n, 256)
        assert v.tile_path("entries", n, 9) == _path("entries", n, 9)


@pytest.mark.parametrize(
    ("level", "n", "width"), [(64, 0, None), (-1, 0, None), (0, -1, None), (0, 0, 0), (0, 0, 256)]
)
def test_tile_path_rejects_out_of_range(level: int, n: int, width: int | None) -> None:
    with pytest.raises(ValueError):
        v.tile_path(level, n, width)


def test_parse_vkey() -> None:
    key = Ed25519PrivateKey.generate()
    for alg in (0x01, 0x04):
        parsed = v.parse_vkey(_vkey("example.com/k", alg, key))
        assert (parsed.name, parsed.alg) == ("example.com/k", alg)
        assert parsed.key_id == _h(b"example.com/k\n" + bytes([alg]) + _raw_public(key))[:4]
    good = _vkey("example.com/k", 0x01, key)
    name, kid, material = good.split("+", 2)
    bad = [
        f"{name}+{(int(kid, 16) ^ 1):08x}+{material}",  # key id does not match
        f"other.example/k+{kid}+{material}",  # name does not match the key id
        _vkey("example.com/k", 0x02, key),  # unsupported type
        f"{name}+{kid}",
        f"{name}+{kid[:6]}+{material}",
        f"{name}+{kid}+{material[:-4]}",
        f"{name}+{kid}+{material}!",
        f"+{kid}+{material}",
        _vkey("example.com/a b", 0x01, key),
    ]
    for vkey in bad:
        with pytest.raises(v.VerificationError):
            v.parse_vkey(vkey)


def test_parse_vkey_allows_plus_in_the_base64_key() -> None:
    while True:
        key = Ed25519PrivateKey.generate()
        vkey = _vkey("example.com/k", 0x04, key)
        if "+" in vkey.split("+", 2)[2]:
            break
    assert v.parse_vkey(vkey).public_key.public_bytes(Encoding.Raw, PublicFormat.Raw) == _raw_public(key)


# --- audits of good logs --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 255, 256, 257, 511, 512, 600])
def test_audit_over_http(size: int, serve: Callable[[TinyLog], str]) -> None:
    log = build_log([_entry(i) for i in range(size)], cosigners=2)
    prefix = serve(log)
    result = v.audit(prefix, log.log_vkey, log.witness_vkeys, 2, origin=ORIGIN)
    assert result.checkpoint.size == size
    assert result.checkpoint.root == log.root
    assert result.checkpoint.origin == ORIGIN
    assert result.checkpoint.text == log.checkpoint_text
    assert result.checkpoint.cosignatures == tuple((n, COSIGN_TIME) for n in WITNESS_NAMES)
    assert result.entries == log.entries
    assert [r["kind"] for r in result.records] == [json.loads(e)["kind"] for e in log.entries]
    assert v.recompute_root(prefix + "/", size) == log.root
    assert v.entries(prefix, size) == log.entries


def test_audit_fetches_exactly_the_spec_tiles_for_600() -> None:
    log = build_log([_entry(i) for i in range(600)])
    seen: list[str] = []
    v.audit(
        "https://x.example/p",
        log.log_vkey,
        log.witness_vkeys,
        1,
        fetcher=dict_fetcher(log.files, "https://x.example/p", seen),
    )
    # floor(600 / 256**l) mod 256 hashes in the partial tile of level l: 88 at level 0, 2 at level 1.
    assert sorted(set(seen)) == sorted(
        [
            "checkpoint",
            "tile/0/000",
            "tile/0/001",
            "tile/0/002.p/88",
            "tile/1/000.p/2",
            "tile/entries/000",
            "tile/entries/001",
            "tile/entries/002.p/88",
        ]
    )
    assert sorted(seen) == sorted(log.files)


def test_audit_crosses_level_two() -> None:
    # 65,836 leaves: 257 full level-0 tiles and a partial one of 44, one full level-1 tile and a
    # partial one of width 1, and a partial level-2 tile of width 1.
    items = [b'{"kind":"x","n":%d}' % i for i in range(256 * 256 + 300)]
    log = build_log(items)
    assert {"tile/0/257.p/44", "tile/1/000", "tile/1/001.p/1", "tile/2/000.p/1"} <= set(log.files)
    result = v.audit("p:", log.log_vkey, log.witness_vkeys, 1, fetcher=dict_fetcher(log.files, "p:"))
    assert result.checkpoint.root == log.root
    assert len(result.entries) == len(items)


def test_audit_with_gzip_entry_bundles(server: _FileServer, serve: Callable[[TinyLog], str]) -> None:
    log = build_log([_entry(i) for i in range(300)])
    prefix = serve(log)
    server.gzip_bundles = True
    assert v.audit(prefix, log.log_vkey, log.witness_vkeys, 1).entries == log.entries


def test_unknown_signatures_and_extension_lines_are_tolerated() -> None:
    log = build_log([_entry(i) for i in range(3)])
    text = log.checkpoint_text + b"some extension\n"
    stranger = Ed25519PrivateKey.generate()
    note = (
        text
        + b"\n"
        + _log_signature("unknown.example/log", stranger, text)
        + _log_signature(ORIGIN, log.log_key, text)
        + _cosignature(WITNESS_NAMES[0], stranger, text)  # same name, other key id: ignored
        + _cosignature(WITNESS_NAMES[1], log.witness_keys[1], text, when=5)
    )
    checkpoint = v.verify_checkpoint(note, log.log_vkey, log.witness_vkeys, 1)
    assert checkpoint.extensions == ("some extension",)
    assert checkpoint.cosignatures == ((WITNESS_NAMES[1], 5),)
    assert checkpoint.size == 3


def test_find_ohttp_key_config() -> None:
    items = [_entry(i) for i in range(120)]
    assert v.find_ohttp_key_config(items, KEY_CONFIG + (57).to_bytes(4, "big")) == 57
    assert v.find_ohttp_key_config(items, KEY_CONFIG + (107).to_bytes(4, "big")) == 107


# --- rejections -----------------------------------------------------------------------------------------


def _rejects(log: TinyLog, match: str, *, min_cosignatures: int = 1, vkey: str | None = None) -> None:
    with pytest.raises(v.VerificationError, match=match):
        v.audit(
            "https://x.example",
            vkey or log.log_vkey,
            log.witness_vkeys,
            min_cosignatures,
            fetcher=dict_fetcher(log.files, "https://x.example"),
        )


def test_rejects_wrong_log_key() -> None:
    log = build_log([_entry(i) for i in range(5)])
    _rejects(log, "no signature by the log key", vkey=_vkey(ORIGIN, 0x01, Ed25519PrivateKey.generate()))
    _rejects(log, "must be an Ed25519", vkey=_vkey(ORIGIN, 0x04, log.log_key))


def test_rejects_too_few_cosignatures() -> None:
    log = build_log([_entry(i) for i in range(5)], cosigners=1)
    _rejects(log, "1 witness cosignature", min_cosignatures=2)
    note = log.files["checkpoint"]
    duplicated = note + note.splitlines(keepends=True)[-1]  # the same witness twice counts once
    with pytest.raises(v.VerificationError, match="1 witness cosignature"):
        v.verify_checkpoint(duplicated, log.log_vkey, log.witness_vkeys, 2)
    with pytest.raises(v.VerificationError, match="0 witness cosignature"):
        v.verify_checkpoint(note, log.log_vkey, log.witness_vkeys[1:], 1)


def test_rejects_bad_signatures_by_known_keys() -> None:
    log = build_log([_entry(i) for i in range(5)])
    text = log.checkpoint_text
    key = log.witness_keys[0]
    wrong_message = _sig_line(WITNESS_NAMES[0], 0x04, key, struct.pack(">Q", 7) + key.sign(text))
    wrong_time = _sig_line(
        WITNESS_NAMES[0], 0x04, key, struct.pack(">Q", 8) + key.sign(b"cosignature/v1\ntime 7\n" + text)
    )
    for line in (wrong_message, wrong_time):
        note = text + b"\n" + _log_signature(ORIGIN, log.log_key, text) + line
        with pytest.raises(v.VerificationError, match="does not verify"):
            v.verify_checkpoint(note, log.log_vkey, log.witness_vkeys, 0)
    tampered = log.files["checkpoint"].replace(b"\n5\n", b"\n6\n", 1)
    with pytest.raises(v.VerificationError, match="does not verify"):
        v.verify_checkpoint(tampered, log.log_vkey, log.witness_vkeys, 1)


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n05\n{base64.b64encode(bytes(32)).decode()}\n",
        f"{ORIGIN}\n5\n{base64.b64encode(bytes(31)).decode()}\n",
        f"{ORIGIN}\n5\n",
        f"{ORIGIN}\n5\n{base64.b64encode(bytes(32)).decode()}\n\nafter a blank line\n",
        f"{ORIGIN}\n+5\n{base64.b64encode(bytes(32)).decode()}\n",
        f"{ORIGIN}\t\n5\n{base64.b64encode(bytes(32)).decode()}\n",
    ],
)
def test_rejects_malformed_checkpoints(text: str) -> None:
    log = build_log([])
    with pytest.raises(v.VerificationError):
        v.verify_checkpoint(log.sign(text.encode()), log.log_vkey, log.witness_vkeys, 1)


def test_rejects_malformed_notes() -> None:
    log = build_log([_entry(0)])
    note = log.files["checkpoint"]
    for bad in (
        note.rstrip(b"\n"),
        note.replace(b"\n\n", b"\n", 1),
        note.replace(b"\xe2\x80\x94 ", b"- ", 1),
    ):
        with pytest.raises(v.VerificationError):
            v.verify_checkpoint(bad, log.log_vkey, log.witness_vkeys, 1)


def test_rejects_altered_level0_tile_hash() -> None:
    log = build_log([_entry(i) for i in range(257)])
    tile = bytearray(log.files["tile/0/000"])
    tile[32 * 9] ^= 1
    log.files["tile/0/000"] = bytes(tile)
    _rejects(log, "entry 9 does not hash")


def test_rejects_altered_level1_tile_hash() -> None:
    log = build_log([_entry(i) for i in range(256)])
    log.files["tile/1/000.p/1"] = bytes(32)
    _rejects(log, "level-1 hash 0")


def test_rejects_altered_entry() -> None:
    log = build_log([_entry(i) for i in range(300)])
    bundle = log.files["tile/entries/001.p/44"]
    log.files["tile/entries/001.p/44"] = bundle.replace(b"artifact-299", b"artifact-298")
    _rejects(log, "entry 299 does not hash")


def test_rejects_checkpoint_whose_root_does_not_match() -> None:
    log = build_log([_entry(i) for i in range(300)])
    text = f"{ORIGIN}\n300\n{base64.b64encode(_h(b'not the root')).decode()}\n".encode()
    log.files["checkpoint"] = log.sign(text)
    _rejects(log, "does not match the checkpoint root")
    # A consistent rewrite of one leaf (entry, tile and parents) still misses the signed root.
    other = build_log([*log.entries[:299], _entry(1000)])
    other.files["checkpoint"] = other.sign(log.checkpoint_text)
    _rejects(other, "does not match the checkpoint root")


def test_rejects_missing_or_short_tiles() -> None:
    log = build_log([_entry(i) for i in range(600)])
    for path, match in [("tile/1/000.p/2", "404"), ("tile/0/002.p/88", "404"), ("tile/entries/001", "404")]:
        broken = dict(log.files)
        del broken[path]
        with pytest.raises(v.VerificationError, match=match):
            v.audit("p:", log.log_vkey, log.witness_vkeys, 1, fetcher=dict_fetcher(broken, "p:"))
    broken = dict(log.files, **{"tile/0/001": log.files["tile/0/001"][:-32]})
    with pytest.raises(v.VerificationError, match="expected 256 hashes"):
        v.audit("p:", log.log_vkey, log.witness_vkeys, 1, fetcher=dict_fetcher(broken, "p:"))
    broken = dict(log.files, **{"tile/entries/002.p/88": log.files["tile/entries/002.p/88"][:-1]})
    with pytest.raises(v.VerificationError, match="truncated entry"):
        v.audit("p:", log.log_vkey, log.witness_vkeys, 1, fetcher=dict_fetcher(broken, "p:"))


def test_rejects_bundle_with_extra_entry() -> None:
    log = build_log([_entry(i) for i in range(300)])
    log.files["tile/entries/001.p/44"] += struct.pack(">H", 2) + b"{}"
    _rejects(log, "45 entries, expected 44")


def test_rejects_cosignature_timestamp_above_2_63() -> None:
    log = build_log([_entry(0)])
    text, key, when = log.checkpoint_text, log.witness_keys[0], 2**63
    line = _sig_line(
        WITNESS_NAMES[0],
        0x04,
        key,
        struct.pack(">Q", when) + key.sign(b"cosignature/v1\ntime %d\n" % when + text),
    )
    note = text + b"\n" + _log_signature(ORIGIN, log.log_key, text) + line
    with pytest.raises(v.VerificationError, match="above 2"):
        v.verify_checkpoint(note, log.log_vkey, log.witness_vkeys, 0)


@pytest.mark.parametrize(
    "entry",
    [
        b'{"n":1,"kind":"x"}',
        b'{"kind": "x"}',
        b'{"kind":"x","n":1.0}',
        b"[1]",
        b'{"n":1}',
        b'{"kind":"x","kind":"x"}',
    ],
)
def test_rejects_non_canonical_or_kindless_entries(entry: bytes) -> None:
    log = build_log([_entry(0), entry])
    _rejects(log, "entry 1")


def test_rejects_missing_key_config() -> None:
    items = [_entry(i) for i in range(120)]
    with pytest.raises(v.VerificationError, match="no ohttp-key-config"):
        v.find_ohttp_key_config(items, KEY_CONFIG)
    with pytest.raises(v.VerificationError, match="no ohttp-key-config"):
        v.find_ohttp_key_config([], KEY_CONFIG)


def test_fetch_rejects_non_200(serve: Callable[[TinyLog], str]) -> None:
    prefix = serve(build_log([_entry(0)]))
    assert v.fetch(prefix + "/tile/0/000.p/1") == _h(b"\x00" + _entry(0))
    with pytest.raises(v.VerificationError, match="HTTP 404"):
        v.fetch(prefix + "/tile/0/000")


# --- RFC 8785 ---------------------------------------------------------------------------------------------

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical serializations.
JCS_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), JCS_NUMBERS)
def test_jcs_numbers(bits: str, text: str) -> None:
    assert v.canonical_json(struct.unpack(">d", bytes.fromhex(bits))[0]) == text.encode()


def test_jcs_rfc8785_examples() -> None:
    parsed = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    assert (
        v.canonical_json(parsed)
        == (
            '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
            '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
        ).encode()
    )
    keys = {"\u20ac": 0, "\r": 1, "\ufb33": 2, "1": 3, "\U0001f600": 4, "\u0080": 5, "\u00f6": 6}
    assert list(json.loads(v.canonical_json(keys)).values()) == [1, 3, 5, 6, 0, 4, 2]
