"""Signed notes, checkpoints and cosignatures (c2sp.org/signed-note, tlog-checkpoint, tlog-cosignature).

A signed note is UTF-8 text ending in a newline, a blank line, and one or
more signature lines ``— <key name> base64(key ID || signature)``. The key ID
is ``SHA-256(name || 0x0A || type || public key)[:4]``, so (name, key ID)
names one key of one signature type. Two types are implemented, both over
Ed25519: plain note signatures (type 0x01) and timestamped ``cosignature/v1``
witness cosignatures (type 0x04), which sign
``"cosignature/v1\\ntime <t>\\n" || note text`` and carry
``u64 t || signature``.

:func:`open_note` follows the spec's rules for verifiers: signatures by
unknown keys are kept as unverified and never fail the note; every
signature whose (name, key ID) is a known key is verified and any failure
rejects the whole note; a note with no verified signature is rejected.
Parsing is as strict as the spec and Go's ``golang.org/x/mod/sumdb/note``
(valid UTF-8, no control characters but newline, canonical base64, no text
after the signatures), plus size and signature-count limits.

A :class:`Checkpoint` is the note text of a log's tree head: origin, tree
size and root hash lines, then optional extension lines.

Everything here is pure except key generation (the OS random source) and
the cosigner's default clock. Error messages are fixed strings: note text
and key names may come from anyone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privproc.errors import CryptoError, LimitExceededError, WireError
from privproc.wire.tlog import HASH_SIZE

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "AmbiguousKeyError",
    "Checkpoint",
    "CheckpointFormatError",
    "CosignatureV1Signer",
    "CosignatureV1Verifier",
    "Ed25519Signer",
    "Ed25519Verifier",
    "InvalidSignatureError",
    "KeyFormatError",
    "NoVerifiedSignatureError",
    "Note",
    "NoteFormatError",
    "NoteLimitError",
    "Signature",
    "Signer",
    "Verifier",
    "WrongOriginError",
    "cosignature_timestamp",
    "format_verifier_key",
    "generate_key",
    "key_id",
    "open_checkpoint",
    "open_note",
    "parse_signer_key",
    "parse_verifier_key",
    "sign_note",
]

#: Signature type bytes (c2sp.org/signed-note, "Signature types").
ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04

#: Limits :func:`open_note` enforces (the spec requires accepting at least 16 signatures).
MAX_NOTE_SIZE = 1 << 20
MAX_SIGNATURES = 100

_SIG_PREFIX = "— "  # em dash U+2014, space
_COSIGNATURE_V1_HEADER = b"cosignature/v1\n"
_MAX_TIMESTAMP = (1 << 63) - 1
_MAX_TREE_SIZE = (1 << 64) - 1
_ED25519_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64
_KEY_ID_SIZE = 4

#: ASCII control characters other than newline, and lone surrogates (which no UTF-8 text decodes to).
_FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\ud800-\udfff]")
#: Unicode White_Space (what Go's unicode.IsSpace reports), checked with str.isspace as well.
_WHITE_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)


class NoteFormatError(WireError):
    """Bytes that are not a well-formed signed note."""


class NoteLimitError(NoteFormatError, LimitExceededError):
    """A note larger, or with more signatures, than :func:`open_note` accepts."""


class KeyFormatError(WireError):
    """A verifier or signer key string that does not parse or does not match its key ID."""


class CheckpointFormatError(WireError):
    """Note text that is not a c2sp.org/tlog-checkpoint body."""


class InvalidSignatureError(CryptoError):
    """A signature by a known key that does not verify: the whole note is rejected."""

    reason = "note_signature"


class NoVerifiedSignatureError(CryptoError):
    """A well-formed note that no known key signed.

    ``note`` holds the parsed note with its unverified signatures, for
    callers that want to say which keys did sign it.
    """

    reason = "note_unverified"

    def __init__(self, message: str = "", note: Note | None = None) -> None:
        super().__init__(message)
        self.note = note


class AmbiguousKeyError(CryptoError):
    """A signature whose (name, key ID) matches two different configured verifiers."""

    reason = "note_key_ambiguous"


class WrongOriginError(CryptoError):
    """A valid checkpoint of another log than the one expected."""

    reason = "checkpoint_origin"


# --- keys -----------------------------------------------------------------------


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || alg || public_key)[:4]``: the key ID of a signed-note key."""
    if not 0 <= alg <= 0xFF:
        raise ValueError("signature type must be one byte")
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:_KEY_ID_SIZE]


def _valid_name(name: str) -> bool:
    """Non-empty, no plus, no Unicode space, nothing a note may not contain."""
    return (
        name != ""
        and "+" not in name
        and not any(ch.isspace() or ch in _WHITE_SPACE for ch in name)
        and _FORBIDDEN.search(name) is None
    )


def _check_name(name: str) -> None:
    if not _valid_name(name):
        raise ValueError("key names must be non-empty, without spaces or '+'")


def strict_b64decode(text: str) -> bytes | None:
    """Strict standard base64: alphabet, padding and canonical trailing bits; ``None`` if not."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == text else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Verifier(Protocol):
    """Checks signatures by one key, named by (``name``, ``key_id``)."""

    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> bytes: ...
    def verify(self, message: bytes, signature: bytes) -> bool: ...


class Signer(Protocol):
    """Signs note text with one key, named by (``name``, ``key_id``)."""

    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> bytes: ...
    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Ed25519Verifier:
    """Verifies Ed25519 note signatures (type 0x01) by ``public_key``."""

    name: str
    public_key: bytes
    key_id: bytes = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    alg = ALG_ED25519

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != _ED25519_KEY_SIZE:
            raise ValueError("Ed25519 public keys are 32 bytes")
        object.__setattr__(self, "key_id", key_id(self.name, self.alg, self.public_key))
        object.__setattr__(self, "_key", Ed25519PublicKey.from_public_bytes(self.public_key))

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != _ED25519_SIG_SIZE:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def key_string(self) -> str:
        """The verifier key ``<name>+<hex key ID>+<base64(type || public key)>``."""
        return format_verifier_key(self.name, self.alg, self.public_key)


@dataclass(frozen=True)
class CosignatureV1Verifier(Ed25519Verifier):
    """Verifies Ed25519 ``cosignature/v1`` witness cosignatures (type 0x04).

    A cosignature is ``u64 timestamp || Ed25519 signature`` over
    ``"cosignature/v1\\ntime <timestamp>\\n"`` followed by the note text.
    """

    alg = ALG_COSIGNATURE_V1

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 8 + _ED25519_SIG_SIZE:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > _MAX_TIMESTAMP:
            return False
        return super().verify(_cosigned_message(timestamp, message), signature[8:])


def _cosigned_message(timestamp: int, text: bytes) -> bytes:
    return _COSIGNATURE_V1_HEADER + b"time %d\n" % timestamp + text


class Ed25519Signer:
    """Signs notes with Ed25519 (type 0x01), from a 32-byte seed."""

    alg = ALG_ED25519

    def __init__(self, name: str, seed: bytes) -> None:
        _check_name(name)
        if len(seed) != _ED25519_KEY_SIZE:
            raise ValueError("Ed25519 seeds are 32 bytes")
        self._name = name
        self._seed = bytes(seed)
        self._key = Ed25519PrivateKey.from_private_bytes(self._seed)
        self.public_key = self._key.public_key().public_bytes_raw()
        self._key_id = key_id(name, self.alg, self.public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, key_id={self._key_id.hex()})"

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self._name, self.public_key)

    def key_string(self) -> str:
        """The private key ``PRIVATE+KEY+<name>+<hex key ID>+<base64(type || seed)>``: a secret."""
        return f"PRIVATE+KEY+{self._name}+{self._key_id.hex()}+{_b64(bytes([self.alg]) + self._seed)}"


class CosignatureV1Signer(Ed25519Signer):
    """A witness: signs ``cosignature/v1`` cosignatures (type 0x04) stamped by ``clock``."""

    alg = ALG_COSIGNATURE_V1

    def __init__(self, name: str, seed: bytes, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name, seed)
        self._clock = clock

    def sign(self, message: bytes) -> bytes:
        return self.sign_at(message, int(self._clock()))

    def sign_at(self, message: bytes, timestamp: int) -> bytes:
        """The cosignature of ``message`` with an explicit POSIX ``timestamp``."""
        if not 0 <= timestamp <= _MAX_TIMESTAMP:
            raise ValueError("cosignature timestamps are 0 to 2^63 - 1")
        signature = self._key.sign(_cosigned_message(timestamp, message))
        return timestamp.to_bytes(8, "big") + signature

    def verifier(self) -> CosignatureV1Verifier:
        return CosignatureV1Verifier(self.name, self.public_key)


_VERIFIERS: dict[int, type[Ed25519Verifier]] = {
    ALG_ED25519: Ed25519Verifier,
    ALG_COSIGNATURE_V1: CosignatureV1Verifier,
}
_SIGNERS: dict[int, type[Ed25519Signer]] = {
    ALG_ED25519: Ed25519Signer,
    ALG_COSIGNATURE_V1: CosignatureV1Signer,
}


def format_verifier_key(name: str, alg: int, public_key: bytes) -> str:
    """``<name>+<hex key ID>+<base64(alg || public key)>``."""
    _check_name(name)
    return f"{name}+{key_id(name, alg, public_key).hex()}+{_b64(bytes([alg]) + public_key)}"


def _is_key_id_hex(text: str) -> bool:
    return len(text) == 2 * _KEY_ID_SIZE and all(ch in "0123456789abcdef" for ch in text)


def parse_verifier_key(vkey: str) -> Ed25519Verifier:
    """The verifier of a verifier key string: :class:`Ed25519Verifier` or :class:`CosignatureV1Verifier`."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise KeyFormatError("malformed verifier key")
    name, id_hex, key_b64 = parts
    key = strict_b64decode(key_b64)
    if not _valid_name(name) or not _is_key_id_hex(id_hex) or not key:
        raise KeyFormatError("malformed verifier key")
    cls = _VERIFIERS.get(key[0])
    if cls is None:
        raise KeyFormatError("unknown verifier key type")
    if len(key) != 1 + _ED25519_KEY_SIZE:
        raise KeyFormatError("malformed verifier key")
    if key_id(name, key[0], key[1:]).hex() != id_hex:
        raise KeyFormatError("verifier key ID does not match the key")
    return cls(name, key[1:])


def parse_signer_key(skey: str) -> Ed25519Signer:
    """The signer a private key string holds (:class:`Ed25519Signer` or :class:`CosignatureV1Signer`)."""
    parts = skey.split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise KeyFormatError("malformed signer key")
    name, id_hex, key_b64 = parts[2:]
    key = strict_b64decode(key_b64)
    if not _valid_name(name) or not _is_key_id_hex(id_hex) or not key:
        raise KeyFormatError("malformed signer key")
    cls = _SIGNERS.get(key[0])
    if cls is None:
        raise KeyFormatError("unknown signer key type")
    if len(key) != 1 + _ED25519_KEY_SIZE:
        raise KeyFormatError("malformed signer key")
    signer = cls(name, key[1:])
    # The ID names the public key: it can only be checked once that is derived.
    if signer.key_id.hex() != id_hex:
        raise KeyFormatError("signer key ID does not match the key")
    return signer


def generate_key(name: str, alg: int = ALG_ED25519) -> tuple[str, str]:
    """A new key: ``(private key string, verifier key string)``. Keep the first secret."""
    cls = _SIGNERS.get(alg)
    if cls is None:
        raise ValueError("unsupported signature type")
    signer = cls(name, secrets.token_bytes(_ED25519_KEY_SIZE))
    return signer.key_string(), format_verifier_key(name, alg, signer.public_key)


# --- notes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """One signature line: the key's name and ID, and the signature bytes after the ID."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """``— <name> <base64(key ID || signature)>``, without the newline."""
        return f"{_SIG_PREFIX}{self.name} {_b64(self.key_id + self.signature)}"


@dataclass(frozen=True)
class Note:
    """An opened note: its text (with the final newline) and its signatures."""

    text: str
    signatures: tuple[Signature, ...]  # verified by a known key, one per key
    unverified: tuple[Signature, ...] = ()  # by keys not known to the caller


def cosignature_timestamp(signature: Signature) -> int:
    """The timestamp of a ``cosignature/v1`` signature (only meaningful once it is verified)."""
    if len(signature.signature) != 8 + _ED25519_SIG_SIZE:
        raise NoteFormatError("not a cosignature/v1 signature")
    timestamp = int.from_bytes(signature.signature[:8], "big")
    if timestamp > _MAX_TIMESTAMP:
        raise NoteFormatError("cosignature timestamp out of range")
    return timestamp


def sign_note(text: str, signers: Sequence[Signer], existing: Sequence[Signature] = ()) -> bytes:
    """The signed note: ``text``, a blank line, then signature lines.

    ``existing`` signatures (say, the log's, when a witness cosigns) come
    first, except those by a key one of ``signers`` signs with again.
    """
    if not text.endswith("\n") or _FORBIDDEN.search(text):
        raise ValueError("note text must end in a newline and hold no control characters")
    if not signers and not existing:
        raise ValueError("a note needs at least one signature")
    if len(signers) + len(existing) > MAX_SIGNATURES:
        raise ValueError("too many signatures")
    message = text.encode()
    fresh = []
    for signer in signers:
        _check_name(signer.name)
        if len(signer.key_id) != _KEY_ID_SIZE:
            raise ValueError("key IDs are 4 bytes")
        fresh.append(Signature(signer.name, signer.key_id, signer.sign(message)))
    replaced = {(s.name, s.key_id) for s in fresh}
    kept = [s for s in existing if (s.name, s.key_id) not in replaced]
    for signature in kept:
        _check_name(signature.name)
        if len(signature.key_id) != _KEY_ID_SIZE or not signature.signature:
            raise ValueError("malformed existing signature")
    lines = "".join(s.line() + "\n" for s in [*kept, *fresh])
    return message + b"\n" + lines.encode()


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteFormatError("malformed signature line")
    name, space, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    raw = strict_b64decode(b64) if space else None
    if raw is None or len(raw) <= _KEY_ID_SIZE or not _valid_name(name):
        raise NoteFormatError("malformed signature line")
    return Signature(name, raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:])


def open_note(msg: bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse ``msg`` and verify its signatures by the known ``verifiers``.

    Raises :class:`NoteFormatError` (or :class:`NoteLimitError`) for a
    malformed note, :class:`InvalidSignatureError` if a known key's
    signature fails, :class:`AmbiguousKeyError` if a signature's key matches
    two different verifiers, and :class:`NoVerifiedSignatureError` if no
    known key signed it.
    """
    if len(msg) > MAX_NOTE_SIZE:
        raise NoteLimitError("note too large")
    try:
        whole = bytes(msg).decode("utf-8")
    except UnicodeDecodeError:
        raise NoteFormatError("note is not valid UTF-8") from None
    if _FORBIDDEN.search(whole):
        raise NoteFormatError("note holds control characters")
    split = whole.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("note has no signature block")
    text, block = whole[: split + 1], whole[split + 2 :]
    if not block.endswith("\n"):
        raise NoteFormatError("note does not end with a signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteLimitError("too many signatures")
    parsed = [(line, _parse_signature_line(line)) for line in lines]

    known: dict[tuple[str, bytes], Verifier] = {}
    ambiguous: set[tuple[str, bytes]] = set()
    for verifier in verifiers:
        key = (verifier.name, bytes(verifier.key_id))
        if key in known and known[key] != verifier:
            ambiguous.add(key)
        known.setdefault(key, verifier)

    message = text.encode()
    verified: list[Signature] = []
    verified_keys: set[tuple[str, bytes]] = set()
    unverified: list[Signature] = []
    unverified_lines: set[str] = set()
    for line, signature in parsed:
        key = (signature.name, signature.key_id)
        if key in ambiguous:
            raise AmbiguousKeyError("signature key matches several verifiers")
        found = known.get(key)
        if found is None:
            # Unknown keys are ignored, not trusted; drop repeats of one line.
            if line not in unverified_lines:
                unverified_lines.add(line)
                unverified.append(signature)
            continue
        # Every signature by a known key is checked, repeats included.
        if not found.verify(message, signature.signature):
            raise InvalidSignatureError("signature by a known key does not verify")
        if key not in verified_keys:
            verified_keys.add(key)
            verified.append(signature)
    note = Note(text, tuple(verified), tuple(unverified))
    if not verified:
        raise NoVerifiedSignatureError("note has no signature by a known key", note)
    return note


# --- checkpoints ------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head as c2sp.org/tlog-checkpoint note text."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for line in (self.origin, *self.extensions):
            if not line or "\n" in line or _FORBIDDEN.search(line):
                raise ValueError("checkpoint lines must be non-empty, without control characters")
        if not 0 <= self.size <= _MAX_TREE_SIZE:
            raise ValueError("tree size out of range")
        if len(self.root) != HASH_SIZE:
            raise ValueError("root hash must be 32 bytes")

    def encode(self) -> str:
        """The note text: origin, size, base64 root and extension lines, each ending in newline."""
        return "".join(
            line + "\n" for line in (self.origin, str(self.size), _b64(self.root), *self.extensions)
        )

    @classmethod
    def parse(cls, text: str | bytes) -> Checkpoint:
        """Parse checkpoint note text strictly (canonical size and root, no empty lines)."""
        if len(text) > MAX_NOTE_SIZE:
            raise CheckpointFormatError("checkpoint too large")
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise CheckpointFormatError("checkpoint is not valid UTF-8") from None
        if not text.endswith("\n") or _FORBIDDEN.search(text):
            raise CheckpointFormatError("malformed checkpoint")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not all(lines):
            raise CheckpointFormatError("malformed checkpoint")
        origin, size_text, root_text, *extensions = lines
        if (
            len(size_text) > 20
            or not all("0" <= ch <= "9" for ch in size_text)
            or (size_text.startswith("0") and size_text != "0")
            or int(size_text) > _MAX_TREE_SIZE
        ):
            raise CheckpointFormatError("malformed checkpoint tree size")
        root = strict_b64decode(root_text)
        if root is None or len(root) != HASH_SIZE:
            raise CheckpointFormatError("malformed checkpoint root hash")
        return cls(origin, int(size_text), root, tuple(extensions))


def open_checkpoint(msg: bytes, origin: str, verifiers: Iterable[Verifier]) -> tuple[Checkpoint, Note]:
    """Open a signed checkpoint of the log ``origin``: :func:`open_note`, then :meth:`Checkpoint.parse`."""
    note = open_note(msg, verifiers)
    checkpoint = Checkpoint.parse(note.text)
    if checkpoint.origin != origin:
        raise WrongOriginError("checkpoint is for another log")
    return checkpoint, note
