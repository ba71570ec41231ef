"""An independent verifier of a C2SP tiled transparency log, written from the specs alone.

It is the second implementation the project's own ledger code is checked against, so it
deliberately imports nothing from ``privproc``: only the standard library and the
``cryptography`` Ed25519 primitive.

* c2sp.org/signed-note: note format, key names, key IDs, Ed25519 (type 0x01) signatures.
  Verifier keys are ``<name>+<hex8 key ID>+<base64(type byte || public key)>``.
* c2sp.org/tlog-checkpoint: origin, tree size and root hash lines, optional extension lines.
* c2sp.org/tlog-cosignature: timestamped Ed25519 cosignatures (type 0x04), signed message
  ``"cosignature/v1\\ntime <t>\\n" || note text``, signature ``u64 BE timestamp || 64-byte sig``.
* c2sp.org/tlog-tiles: ``<prefix>/checkpoint``, hash tiles ``<prefix>/tile/<L>/<N>[.p/<W>]`` and
  entry bundles ``<prefix>/tile/entries/<N>[.p/<W>]`` (uint16 BE length-prefixed entries).
* RFC 6962 §2.1: MTH({}) = SHA-256(), MTH({d}) = SHA-256(0x00 || d) and, for n > 1 with k the
  largest power of two smaller than n, MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])).
* RFC 8785 (JCS): entries must be canonical JSON objects.

Everything that does not verify raises :class:`VerificationError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HASH_SIZE = 32
TILE_WIDTH = 256  # tlog-tiles: a full tile holds 256 hashes (8,192 bytes), a full bundle 256 entries
ALG_ED25519 = 0x01  # signed-note: Ed25519 note signature
ALG_COSIGNATURE_V1 = 0x04  # signed-note / tlog-cosignature: timestamped Ed25519 cosignature
ED25519_KEY_SIZE = 32
ED25519_SIG_SIZE = 64
MAX_SIGNATURES = 64  # signed-note: verifiers MUST accept at least 16
MAX_NOTE_SIZE = 1 << 20
MAX_RESPONSE_SIZE = TILE_WIDTH * (2 + 0xFFFF)  # the largest possible full entry bundle
FETCH_TIMEOUT = 10.0
EM_DASH = "\u2014"

Fetcher = Callable[[str], bytes]


class VerificationError(Exception):
    """The log, a note, a tile, a bundle or an entry failed verification."""


@dataclass(frozen=True)
class VerifierKey:
    name: str
    key_id: bytes  # 4 bytes
    alg: int  # ALG_ED25519 or ALG_COSIGNATURE_V1
    public_key: Ed25519PublicKey


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]
    text: bytes  # the signed note text (what the log signed)
    cosignatures: tuple[tuple[str, int], ...]  # (witness name, timestamp) of each verified witness


@dataclass(frozen=True)
class AuditResult:
    checkpoint: Checkpoint
    entries: list[bytes]
    records: list[dict[str, Any]]  # the entries, parsed


# --- signed notes ----------------------------------------------------------------------------------


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise VerificationError(f"{what}: not standard base64") from e


def _check_key_name(name: str) -> None:
    # signed-note: non-empty, no Unicode spaces, no "+"; the note format forbids control characters.
    if not name or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name):
        raise VerificationError(f"invalid key name {name!r}")


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """signed-note: SHA-256(key name || 0x0A || signature type || public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()[:4]


def parse_vkey(vkey: str) -> VerifierKey:
    """Parse ``<name>+<hex8 key ID>+<base64(type || key)>``; only Ed25519 types 0x01 and 0x04."""
    parts = vkey.split("+", 2)  # the name holds no "+", the base64 key may
    if len(parts) != 3:
        raise VerificationError("verifier key is not <name>+<key id>+<key>")
    name, id_hex, key_b64 = parts
    _check_key_name(name)
    if not re.fullmatch(r"[0-9a-fA-F]{8}", id_hex):
        raise VerificationError("verifier key id is not 8 hex digits")
    raw = _b64decode(key_b64, "verifier key")
    if len(raw) != 1 + ED25519_KEY_SIZE or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise VerificationError("verifier key is not an Ed25519 (0x01) or cosignature/v1 (0x04) key")
    alg, public = raw[0], raw[1:]
    if bytes.fromhex(id_hex) != key_id(name, alg, public):
        raise VerificationError(f"verifier key id of {name!r} does not match its name and key")
    return VerifierKey(name, bytes.fromhex(id_hex), alg, Ed25519PublicKey.from_public_bytes(public))


def _split_note(note: bytes) -> tuple[bytes, list[tuple[str, bytes, bytes]]]:
    """Return the note text and its (key name, key id, signature) lines."""
    if len(note) > MAX_NOTE_SIZE:
        raise VerificationError("note too large")
    try:
        text = note.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VerificationError("note is not UTF-8") from e
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise VerificationError("note holds a control character")
    sep = text.rfind("\n\n")  # the text is separated from the signatures by the last empty line
    if sep < 0:
        raise VerificationError("note has no signature block")
    body, block = text[: sep + 1], text[sep + 2 :]
    if not block.endswith("\n"):
        raise VerificationError("note does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError("note has too many signatures")
    sigs = []
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            raise VerificationError(f"malformed signature line {line!r}")
        name, _, sig_b64 = line[2:].partition(" ")
        _check_key_name(name)
        raw = _b64decode(sig_b64, "note signature")
        if len(raw) < 4:
            raise VerificationError("note signature shorter than its key id")
        sigs.append((name, raw[:4], raw[4:]))
    return body.encode("utf-8"), sigs


def _parse_checkpoint_text(body: bytes) -> tuple[str, int, bytes, tuple[str, ...]]:
    lines = body.decode("utf-8")[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise VerificationError("checkpoint text is not at least three non-empty lines")
    origin, size_text, root_b64, *extensions = lines
    if not re.fullmatch(r"0|[1-9][0-9]*", size_text):
        raise VerificationError(f"checkpoint tree size {size_text!r} is not canonical decimal")
    root = _b64decode(root_b64, "checkpoint root hash")
    if len(root) != HASH_SIZE:
        raise VerificationError("checkpoint root hash is not 32 bytes")
    return origin, int(size_text), root, tuple(extensions)


def cosignature_message(body: bytes, timestamp: int) -> bytes:
    """tlog-cosignature: the message a cosignature/v1 (Ed25519) cosigner signs."""
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def verify_checkpoint(
    note: bytes,
    log_vkey: str,
    witness_vkeys: Sequence[str],
    min_cosignatures: int,
    *,
    origin: str | None = None,
) -> Checkpoint:
    """Verify the log's Ed25519 signature and at least ``min_cosignatures`` distinct witnesses.

    Signatures from unknown keys (name and key id not both matching) are ignored; a signature
    from a known key that fails to verify rejects the whole note.
    """
    log = parse_vkey(log_vkey)
    if log.alg != ALG_ED25519:
        raise VerificationError("the log key must be an Ed25519 (0x01) note key")
    witnesses: dict[tuple[str, bytes], VerifierKey] = {}
    for vkey in witness_vkeys:
        witness = parse_vkey(vkey)
        if witness.alg != ALG_COSIGNATURE_V1:
            raise VerificationError(f"witness key {witness.name!r} is not a cosignature/v1 (0x04) key")
        witnesses[(witness.name, witness.key_id)] = witness

    body, sigs = _split_note(note)
    log_verified = False
    cosigned: dict[tuple[str, bytes], int] = {}
    for name, kid, sig in sigs:
        try:
            if (name, kid) == (log.name, log.key_id):
                log.public_key.verify(sig, body)
                log_verified = True
            elif (name, kid) in witnesses:
                if len(sig) != 8 + ED25519_SIG_SIZE:
                    raise VerificationError(f"cosignature by {name!r} is not 72 bytes")
                timestamp = int.from_bytes(sig[:8], "big")
                if timestamp > 2**63 - 1:
                    raise VerificationError(f"cosignature by {name!r} has a timestamp above 2^63-1")
                witnesses[(name, kid)].public_key.verify(sig[8:], cosignature_message(body, timestamp))
                cosigned[(name, kid)] = timestamp
        except InvalidSignature as e:
            raise VerificationError(f"signature by known key {name!r} does not verify") from e
    if not log_verified:
        raise VerificationError("no signature by the log key")
    if len(cosigned) < min_cosignatures:
        raise VerificationError(f"{len(cosigned)} witness cosignature(s), {min_cosignatures} required")

    cp_origin, size, root, extensions = _parse_checkpoint_text(body)
    if origin is not None and cp_origin != origin:
        raise VerificationError(f"checkpoint origin {cp_origin!r}, expected {origin!r}")
    cosignatures = tuple(sorted((name, t) for (name, _), t in cosigned.items()))
    return Checkpoint(cp_origin, size, root, extensions, body, cosignatures)


# --- HTTP ------------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str) -> bytes:
    """GET ``url`` (no proxy, 10 s timeout); accepts identity or gzip content encoding."""
    if not url.startswith(("http://", "https://")):
        raise VerificationError(f"not an HTTP URL: {url!r}")
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip, identity"})
    try:
        with _OPENER.open(request, timeout=FETCH_TIMEOUT) as response:
            status = response.status
            encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
            body: bytes = response.read(MAX_RESPONSE_SIZE + 1)
    except urllib.error.HTTPError as e:
        raise VerificationError(f"GET {url}: HTTP {e.code}") from e
    except OSError as e:  # URLError, timeouts, resets
        raise VerificationError(f"GET {url}: {e}") from e
    if status != 200:
        raise VerificationError(f"GET {url}: HTTP {status}")
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, MAX_RESPONSE_SIZE + 1)
        except zlib.error as e:
            raise VerificationError(f"GET {url}: bad gzip body") from e
        if not inflater.eof or inflater.unconsumed_tail:
            raise VerificationError(f"GET {url}: truncated or oversized gzip body")
    elif encoding != "identity":
        raise VerificationError(f"GET {url}: unsupported Content-Encoding {encoding!r}")
    if len(body) > MAX_RESPONSE_SIZE:
        raise VerificationError(f"GET {url}: response too large")
    return body


# --- tiles and Merkle trees ------------------------------------------------------------------------


def tile_path(level: int | Literal["entries"], n: int, width: int | None = None) -> str:
    """``tile/<L>/<N>[.p/<W>]``, N in 3-digit elements, all but the last prefixed with ``x``."""
    if level != "entries" and not (isinstance(level, int) and 0 <= level <= 63):
        raise ValueError(f"tile level {level!r} out of range")
    if n < 0:
        raise ValueError("tile index must be non-negative")
    if width is not None and not 1 <= width <= TILE_WIDTH - 1:
        raise ValueError("partial tile width must be 1..255")
    elements = [f"{n % 1000:03d}"]
    n //= 1000
    while n > 0:
        elements.insert(0, f"x{n % 1000:03d}")
        n //= 1000
    path = f"tile/{level}/" + "/".join(elements)
    return path if width is None else f"{path}.p/{width}"


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH over the given leaf hashes."""
    n = len(leaf_hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hashes[0]
    k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two smaller than n
    return node_hash(merkle_root(leaf_hashes[:k]), merkle_root(leaf_hashes[k:]))


def _url(prefix: str, path: str) -> str:
    return prefix.rstrip("/") + "/" + path


def _tiles(count: int) -> list[tuple[int, int | None]]:
    """(index, width or None if full) of the tiles holding ``count`` consecutive items from 0."""
    tiles: list[tuple[int, int | None]] = [(n, None) for n in range(count // TILE_WIDTH)]
    if count % TILE_WIDTH:
        tiles.append((count // TILE_WIDTH, count % TILE_WIDTH))
    return tiles


def _read_level(prefix: str, level: int, count: int, fetcher: Fetcher) -> list[bytes]:
    hashes: list[bytes] = []
    for n, width in _tiles(count):
        path = tile_path(level, n, width)
        data = fetcher(_url(prefix, path))
        if len(data) != (width or TILE_WIDTH) * HASH_SIZE:
            raise VerificationError(f"{path}: {len(data)} bytes, expected {(width or TILE_WIDTH)} hashes")
        hashes.extend(data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE))
    return hashes


def _parse_bundle(path: str, data: bytes) -> list[bytes]:
    items: list[bytes] = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise VerificationError(f"{path}: truncated length prefix")
        length = int.from_bytes(data[i : i + 2], "big")
        i += 2
        if i + length > len(data):
            raise VerificationError(f"{path}: truncated entry")
        items.append(data[i : i + length])
        i += length
    return items


def entries(prefix: str, size: int, *, fetcher: Fetcher = fetch) -> list[bytes]:
    """All ``size`` entries, from the full and partial entry bundles."""
    out: list[bytes] = []
    for n, width in _tiles(size):
        path = tile_path("entries", n, width)
        bundle = _parse_bundle(path, fetcher(_url(prefix, path)))
        if len(bundle) != (width or TILE_WIDTH):
            raise VerificationError(f"{path}: {len(bundle)} entries, expected {width or TILE_WIDTH}")
        out.extend(bundle)
    return out


def _verified_tree(prefix: str, size: int, fetcher: Fetcher) -> tuple[bytes, list[bytes]]:
    leaves = _read_level(prefix, 0, size, fetcher)
    data = entries(prefix, size, fetcher=fetcher)
    for i, (entry, leaf) in enumerate(zip(data, leaves, strict=True)):
        if leaf_hash(entry) != leaf:
            raise VerificationError(f"entry {i} does not hash to its level-0 tile hash")
    # tlog-tiles: level l holds floor(size / 256**l) hashes; each is the MTH of a full tile below.
    below, level = leaves, 1
    while (count := size // TILE_WIDTH**level) > 0:
        hashes = _read_level(prefix, level, count, fetcher)
        for j, h in enumerate(hashes):
            if h != merkle_root(below[j * TILE_WIDTH : (j + 1) * TILE_WIDTH]):
                raise VerificationError(f"level-{level} hash {j} is not the hash of its 256 children")
        below, level = hashes, level + 1
    return merkle_root(leaves), data


def recompute_root(prefix: str, size: int, *, fetcher: Fetcher = fetch) -> bytes:
    """Root of the first ``size`` leaves, after checking entries against level-0 tiles and every
    higher-level tile hash against the hashes below it."""
    return _verified_tree(prefix, size, fetcher)[0]


# --- entries ---------------------------------------------------------------------------------------


def _es_number(value: float) -> str:
    """ECMAScript Number::toString, as RFC 8785 §3.2.2.3 requires."""
    try:
        x = float(value)
    except OverflowError as e:
        raise VerificationError("number out of IEEE 754 range") from e
    if not math.isfinite(x):
        raise VerificationError("non-finite number")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    parsed = Decimal(repr(abs(x))).normalize().as_tuple()  # repr: shortest round-tripping digits
    assert isinstance(parsed.exponent, int)
    digits = "".join(map(str, parsed.digits))
    k = len(digits)
    n = parsed.exponent + k
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"


def _jcs(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # escapes exactly what RFC 8785 §3.2.2.2 does
    if isinstance(value, int | float):
        return _es_number(value)
    if isinstance(value, list):
        return "[" + ",".join(_jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))  # UTF-16 code unit order
        return "{" + ",".join(_jcs(k) + ":" + _jcs(value[k]) for k in keys) + "}"
    raise VerificationError(f"not a JSON value: {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical form of a parsed JSON value."""
    try:
        return _jcs(value).encode("utf-8")
    except UnicodeEncodeError as e:
        raise VerificationError("string holds a lone surrogate") from e


def _reject_constant(name: str) -> Any:
    raise VerificationError(f"{name} is not JSON")


def parse_entry(entry: bytes) -> dict[str, Any]:
    """An entry: a canonical (RFC 8785) JSON object with a string ``kind``."""
    try:
        value = json.loads(entry.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise VerificationError("entry is not JSON") from e
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise VerificationError("entry is not a JSON object with a string kind")
    if canonical_json(value) != entry:
        raise VerificationError("entry is not canonical JSON (RFC 8785)")
    return value


def audit(
    prefix: str,
    log_vkey: str,
    witness_vkeys: Sequence[str],
    min_cosignatures: int,
    *,
    origin: str | None = None,
    fetcher: Fetcher = fetch,
) -> AuditResult:
    """Verify the checkpoint, recompute its root from the tiles and bundles, parse every entry."""
    checkpoint = verify_checkpoint(
        fetcher(_url(prefix, "checkpoint")), log_vkey, witness_vkeys, min_cosignatures, origin=origin
    )
    root, data = _verified_tree(prefix, checkpoint.size, fetcher)
    if root != checkpoint.root:
        raise VerificationError("the recomputed root does not match the checkpoint root")
    records = []
    for i, entry in enumerate(data):
        try:
            records.append(parse_entry(entry))
        except VerificationError as e:
            raise VerificationError(f"entry {i}: {e}") from e
    return AuditResult(checkpoint, data, records)


def find_ohttp_key_config(entries: Sequence[bytes], served_key_config_list: bytes) -> int:
    """Index of the first "ohttp-key-config" entry whose "sha256" is the served list's hex SHA-256."""
    digest = hashlib.sha256(served_key_config_list).hexdigest()
    for i, entry in enumerate(entries):
        record = parse_entry(entry)
        if record["kind"] == "ohttp-key-config" and record.get("sha256") == digest:
            return i
    raise VerificationError("no ohttp-key-config entry for the served key configuration list")
