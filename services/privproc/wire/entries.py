"""What the ledger records: canonical JSON entries, one object each, with a ``kind``.

Every key a client must trust and every CVM release is logged before it is
used, so no user can be given a key or a binary that everyone else does not
see. Entries are RFC 8785 canonical JSON. Each kind is a frozen dataclass
here with ``encode`` and ``parse``, as the other wire formats are: the
publishers (gateway, ACS, release tooling) build one and encode it, the
ledger refuses an append that does not parse, and every reader (client,
CVM, operator's verifier) works on the parsed, typed value.

Releases (``cvm-release``) and their withdrawals (``cvm-revocation``) are
moreover signed inside the entry by a release key — an Ed25519 signed-note
key that clients pin — so a reader checks who released a CVM from the log
alone, whichever publisher appended it: ``release_key`` names the key
(``<name>+<hex key ID>``) and ``signature`` is base64 of its signature over
a per-kind domain line followed by the canonical entry without
``signature``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from privproc.errors import CryptoError, WireError
from privproc.wire import note
from privproc.wire.jcs import canonicalize, parse_canonical

KIND_OHTTP_KEY_CONFIG = "ohttp-key-config"
KIND_TOKEN_ISSUER_KEY = "token-issuer-key"  # noqa: S105 - an entry kind
KIND_CVM_RELEASE = "cvm-release"
KIND_CVM_REVOCATION = "cvm-revocation"
#: Every kind the log accepts (publisher keys are scoped to some of them).
KINDS = (KIND_OHTTP_KEY_CONFIG, KIND_TOKEN_ISSUER_KEY, KIND_CVM_RELEASE, KIND_CVM_REVOCATION)
#: Domain separation of release-key signatures (never a ledger append's ``privproc-ledger-append/v1``).
_SIGNATURE_DOMAINS = {
    KIND_CVM_RELEASE: b"privproc-cvm-release/v1\n",
    KIND_CVM_REVOCATION: b"privproc-cvm-revocation/v1\n",
}
TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode")

# \Z, not $: a trailing newline must not pass.
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_HEX96 = re.compile(r"^[0-9a-f]{96}\Z")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")
#: A container image's digest (an OCI manifest digest), or "" for a CVM not run from one.
_IMAGE_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64})?\Z")
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}\Z")
_TRACK = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_REASON = re.compile(r"^[a-z][a-z_]{0,31}\Z")
_RELEASE_KEY = re.compile(r"^[!-*,-~]{1,128}\+[0-9a-f]{8}\Z")  # <signed-note key name>+<hex key ID>
_SIGNATURE = re.compile(r"^[A-Za-z0-9+/]{86}==\Z")  # base64 of a 64-byte Ed25519 signature
MAX_ENTRY_BYTES = 16 << 10
MAX_TIME = 2**53 - 1
#: How many distinct entries :func:`_validated` remembers as checked (see :class:`_KnownValid`).
KNOWN_VALID_ENTRIES = 256


class EntryError(WireError):
    """An entry that is not one of the logged kinds, well formed."""


class ReleaseSignatureError(CryptoError):
    """A release or revocation not signed by a release key the reader pins."""

    reason = "release_signature"


@dataclass(frozen=True)
class OhttpKeyConfigEntry:
    """An ``application/ohttp-keys`` body a gateway serves (``sha256`` of it, exactly as served)."""

    kind: ClassVar[str] = KIND_OHTTP_KEY_CONFIG
    sha256: str
    key_id: int
    not_before: int
    not_after: int

    @classmethod
    def describing(
        cls, key_configs: bytes, key_id: int, not_before: int, not_after: int
    ) -> OhttpKeyConfigEntry:
        """The entry for the key configuration list ``key_configs``, valid ``[not_before, not_after]``."""
        return cls(hashlib.sha256(key_configs).hexdigest(), key_id, not_before, not_after)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sha256": self.sha256,
            "key_id": self.key_id,
            "not_before": self.not_before,
            "not_after": self.not_after,
        }

    def encode(self) -> bytes:
        """Canonical bytes (validated: never produce what the log would refuse)."""
        return _encode(self)

    @classmethod
    def parse(cls, data: bytes) -> OhttpKeyConfigEntry:
        return _parse_as(cls, data)

    @classmethod
    def _from_json(cls, value: dict[str, Any]) -> OhttpKeyConfigEntry:
        return cls(value["sha256"], value["key_id"], value["not_before"], value["not_after"])


@dataclass(frozen=True)
class TokenIssuerKeyEntry:
    """A Privacy Pass issuer key (``sha256`` is its RFC 9578 token key id)."""

    kind: ClassVar[str] = KIND_TOKEN_ISSUER_KEY
    token_type: int
    sha256: str
    not_before: int
    not_after: int

    @classmethod
    def describing(
        cls, token_type: int, token_key: bytes, not_before: int, not_after: int
    ) -> TokenIssuerKeyEntry:
        """The entry for the issuer key ``token_key`` (its encoded public key) of ``token_type``."""
        return cls(token_type, hashlib.sha256(token_key).hexdigest(), not_before, not_after)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "token_type": self.token_type,
            "sha256": self.sha256,
            "not_before": self.not_before,
            "not_after": self.not_after,
        }

    def encode(self) -> bytes:
        """Canonical bytes (validated: never produce what the log would refuse)."""
        return _encode(self)

    @classmethod
    def parse(cls, data: bytes) -> TokenIssuerKeyEntry:
        return _parse_as(cls, data)

    @classmethod
    def _from_json(cls, value: dict[str, Any]) -> TokenIssuerKeyEntry:
        return cls(value["token_type"], value["sha256"], value["not_before"], value["not_after"])


@dataclass(frozen=True)
class CvmReleaseEntry:
    """A predictor release, signed by a release key.

    It admits CVMs launched with one of ``measurements`` and ``host_data``
    (the configuration digest, hex), on a platform whose VCEK TCB is at least
    ``min_tcb`` (per component), from the moment it is logged until
    ``not_after`` (POSIX seconds), unless revoked or superseded. From
    ``supersedes_at`` on it withdraws the lower versions of its ``track``
    (:meth:`supersedes`). ``allowlist_digest`` names what the CVM's log sidecar lets
    out (it is part of the measurement too).
    """

    kind: ClassVar[str] = KIND_CVM_RELEASE
    track: str
    version: str
    #: Hex launch measurements, sorted.
    measurements: tuple[str, ...]
    #: ``sha256:`` of the image's code files (``ImageManifest.files_digest``).
    files_digest: str
    #: The container image's digest (``sha256:<hex>``), or "" when the CVM does not run one.
    image_digest: str
    model_digest: str
    #: ``sha256:`` of the event allow-list its log sidecar lets out (``privproc.events``): a
    #: changed allow-list is a new release, logged like a changed binary.
    allowlist_digest: str
    host_data: str
    min_tcb: Mapping[str, int]
    supersedes_at: int
    not_after: int
    provenance: Mapping[str, Any]
    #: The release key that signed it (``<name>+<hex key ID>``) and its base64 signature.
    release_key: str = ""
    signature: str = field(default="", repr=False)

    @classmethod
    def sign(
        cls,
        *,
        track: str,
        version: str,
        measurements: list[str],
        files_digest: str,
        image_digest: str,
        model_digest: str,
        allowlist_digest: str,
        host_data: str,
        min_tcb: Mapping[str, int],
        supersedes_at: int,
        not_after: int,
        provenance: Mapping[str, Any],
        signer: note.Ed25519Signer,
    ) -> CvmReleaseEntry:
        """The release of these fields, signed by the release key ``signer``.

        Set ``supersedes_at`` ahead of now to leave time for a rollout.
        """
        unsigned = cls(
            track=track,
            version=version,
            measurements=tuple(sorted(measurements)),
            files_digest=files_digest,
            image_digest=image_digest,
            model_digest=model_digest,
            allowlist_digest=allowlist_digest,
            host_data=host_data,
            min_tcb=dict(min_tcb),
            supersedes_at=supersedes_at,
            not_after=not_after,
            provenance=dict(provenance),
        )
        return _signed(unsigned, signer)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "track": self.track,
            "version": self.version,
            "measurements": list(self.measurements),
            "files_digest": self.files_digest,
            "image_digest": self.image_digest,
            "model_digest": self.model_digest,
            "allowlist_digest": self.allowlist_digest,
            "host_data": self.host_data,
            "min_tcb": dict(self.min_tcb),
            "supersedes_at": self.supersedes_at,
            "not_after": self.not_after,
            "provenance": dict(self.provenance),
            "release_key": self.release_key,
            "signature": self.signature,
        }

    def encode(self) -> bytes:
        """Canonical bytes (validated: never produce what the log would refuse)."""
        return _encode(self)

    @classmethod
    def parse(cls, data: bytes) -> CvmReleaseEntry:
        return _parse_as(cls, data)

    @classmethod
    def _from_json(cls, value: dict[str, Any]) -> CvmReleaseEntry:
        return cls(
            track=value["track"],
            version=value["version"],
            measurements=tuple(value["measurements"]),
            files_digest=value["files_digest"],
            image_digest=value["image_digest"],
            model_digest=value["model_digest"],
            allowlist_digest=value["allowlist_digest"],
            host_data=value["host_data"],
            min_tcb=dict(value["min_tcb"]),
            supersedes_at=value["supersedes_at"],
            not_after=value["not_after"],
            provenance=value["provenance"],
            release_key=value["release_key"],
            signature=value["signature"],
        )

    def supersedes(self, older: CvmReleaseEntry, now: float) -> bool:
        """Whether this release withdraws release ``older`` at ``now``.

        It does when both are on the same track, this one has a strictly
        higher version, and ``now`` has reached its ``supersedes_at``. The log
        order does not matter: once a higher version of a track is logged, a
        lower one is not admitted again (no rollback by logging an old release
        later). Two releases of one version (say, images for different CPUs)
        stand side by side.
        """
        return (
            self.track == older.track
            and parse_version(self.version) > parse_version(older.version)
            and now >= self.supersedes_at
        )


@dataclass(frozen=True)
class CvmRevocationEntry:
    """The withdrawal of the release logged at ``release_index``, or of every release of ``measurement``."""

    kind: ClassVar[str] = KIND_CVM_REVOCATION
    reason: str
    release_index: int | None = None
    measurement: str | None = None
    release_key: str = ""
    signature: str = field(default="", repr=False)

    @classmethod
    def sign(
        cls,
        *,
        signer: note.Ed25519Signer,
        release_index: int | None = None,
        measurement: str | None = None,
        reason: str = "withdrawn",
    ) -> CvmRevocationEntry:
        """A revocation naming a release index or a measurement (exactly one), signed by ``signer``."""
        if (release_index is None) == (measurement is None):
            raise ValueError("a revocation names a release index or a measurement, exactly one")
        return _signed(cls(reason, release_index, measurement), signer)

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"kind": self.kind, "reason": self.reason}
        if self.release_index is not None:
            value["release_index"] = self.release_index
        if self.measurement is not None:
            value["measurement"] = self.measurement
        value.update(release_key=self.release_key, signature=self.signature)
        return value

    def encode(self) -> bytes:
        """Canonical bytes (validated: never produce what the log would refuse)."""
        return _encode(self)

    @classmethod
    def parse(cls, data: bytes) -> CvmRevocationEntry:
        return _parse_as(cls, data)

    @classmethod
    def _from_json(cls, value: dict[str, Any]) -> CvmRevocationEntry:
        return cls(
            value["reason"],
            value.get("release_index"),
            value.get("measurement"),
            value["release_key"],
            value["signature"],
        )


#: Any logged entry, parsed.
Entry = OhttpKeyConfigEntry | TokenIssuerKeyEntry | CvmReleaseEntry | CvmRevocationEntry
#: The entries a release key signs.
SignedEntry = CvmReleaseEntry | CvmRevocationEntry
_BY_KIND: dict[str, Any] = {
    cls.kind: cls for cls in (OhttpKeyConfigEntry, TokenIssuerKeyEntry, CvmReleaseEntry, CvmRevocationEntry)
}


def parse_entry(data: bytes) -> Entry:
    """An entry's bytes, validated (canonical JSON, a known kind, its fields well typed) and typed."""
    value = _validated(data)
    entry: Entry = _BY_KIND[value["kind"]]._from_json(value)
    return entry


_T = TypeVar("_T")


def _parse_as(cls: type[_T], data: bytes) -> _T:
    entry = parse_entry(data)
    if not isinstance(entry, cls):
        raise EntryError("entry is not of the expected kind")
    return entry


def _encode(entry: Entry) -> bytes:
    data = canonicalize(entry.to_json())
    _validated(data)
    return data


def release_key_name(verifier: note.Ed25519Verifier) -> str:
    """How a signed entry names its release key: ``<name>+<hex key ID>`` (as a signed-note key)."""
    return f"{verifier.name}+{verifier.key_id.hex()}"


def signed_message(entry: SignedEntry) -> bytes:
    """What a release key signs: a per-kind domain, then the canonical entry without ``signature``."""
    value = entry.to_json()
    del value["signature"]
    return _SIGNATURE_DOMAINS[entry.kind] + canonicalize(value)


_S = TypeVar("_S", CvmReleaseEntry, CvmRevocationEntry)


def _signed(entry: _S, signer: note.Ed25519Signer) -> _S:
    if signer.alg != note.ALG_ED25519:
        raise ValueError("release keys are Ed25519 signed-note keys")
    unsigned = dataclasses.replace(entry, release_key=release_key_name(signer.verifier()), signature="")
    signature = base64.b64encode(signer.sign(signed_message(unsigned))).decode()
    signed = dataclasses.replace(unsigned, signature=signature)
    signed.encode()  # never produce what the log (or a client) would refuse
    return signed


def verify_release_signature(entry: SignedEntry, keys: Mapping[str, note.Ed25519Verifier]) -> str:
    """The ``release_key`` name of a release-key-signed entry whose signature verifies under a pinned key.

    ``keys`` maps :func:`release_key_name` to a pinned verifier. Raises
    :class:`ReleaseSignatureError` when the entry names no pinned key or its
    signature does not verify.
    """
    verifier = keys.get(entry.release_key)
    if verifier is None:
        raise ReleaseSignatureError("entry is not signed by a pinned release key")
    raw = note.strict_b64decode(entry.signature)
    if raw is None or not verifier.verify(signed_message(entry), raw):
        raise ReleaseSignatureError("release signature does not verify")
    return entry.release_key


def parse_version(version: str) -> tuple[int, ...]:
    """A release version: dot-separated decimal numbers (``1``, ``0.1.0``), compared numerically."""
    if not _VERSION.match(version):
        raise EntryError("release version is dotted decimal numbers")
    return tuple(int(part) for part in version.split("."))


def is_image_digest(value: object) -> bool:
    """Whether ``value`` is a container image's digest (``sha256:`` + 64 lowercase hex) or ""."""
    return isinstance(value, str) and bool(_IMAGE_DIGEST.match(value))


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _signed_ok(value: dict[str, Any]) -> bool:
    return (
        isinstance(value.get("release_key"), str)
        and bool(_RELEASE_KEY.match(value["release_key"]))
        and isinstance(value.get("signature"), str)
        and bool(_SIGNATURE.match(value["signature"]))
    )


def _tcb_ok(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(TCB_COMPONENTS) <= set(value) <= {*TCB_COMPONENTS, "fmc"}
        and all(_int(v) and v <= 0xFF for v in value.values())
    )


def _release_ok(value: dict[str, Any]) -> bool:
    measurements = value.get("measurements")
    fields = {
        "kind", "track", "version", "measurements", "files_digest", "image_digest", "model_digest",
        "allowlist_digest", "host_data", "min_tcb", "supersedes_at", "not_after", "provenance",
        "release_key", "signature",
    }  # fmt: skip
    return (
        set(value) == fields
        and _signed_ok(value)
        and isinstance(value["track"], str)
        and bool(_TRACK.match(value["track"]))
        and isinstance(value["version"], str)
        and bool(_VERSION.match(value["version"]))
        and isinstance(measurements, list)
        and 0 < len(measurements) <= 16
        and all(isinstance(m, str) and bool(_HEX96.match(m)) for m in measurements)
        and isinstance(value["files_digest"], str)
        and bool(_DIGEST.match(value["files_digest"]))
        and is_image_digest(value["image_digest"])
        and isinstance(value["model_digest"], str)
        and bool(_DIGEST.match(value["model_digest"]))
        and isinstance(value["allowlist_digest"], str)
        and bool(_DIGEST.match(value["allowlist_digest"]))
        and isinstance(value["host_data"], str)
        and bool(_HEX64.match(value["host_data"]))
        and _tcb_ok(value["min_tcb"])
        and _int(value["supersedes_at"])
        and value["supersedes_at"] <= MAX_TIME
        and _int(value["not_after"])
        and value["not_after"] <= MAX_TIME
        and isinstance(value["provenance"], dict)
    )


class _KnownValid:
    """Entry bytes that passed :func:`_validated` before, the least recently seen dropped first.

    Why it is safe: the check is a pure function of the bytes (canonical JSON,
    a known kind, well-typed fields: no key, clock or state is involved), so
    the very same bytes pass it again; a hit skips only the re-canonicalisation
    and the field checks, and the caller still gets a fresh parse (no object is
    shared between callers). Signatures, inclusion proofs and release policy
    are checked by their callers every time. Why it pays: a device sees the
    same release entry in every session's staple and parses it several times
    per session (the proof's entry, the registry's re-parse, its encoding).
    Refusals are never remembered.
    """

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, data: bytes) -> bool:
        with self._lock:
            if data not in self._seen:
                return False
            self._seen.move_to_end(data)
            return True

    def add(self, data: bytes) -> None:
        with self._lock:
            self._seen[data] = None
            self._seen.move_to_end(data)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)


_known_valid = _KnownValid(KNOWN_VALID_ENTRIES)


def _validated(data: bytes) -> dict[str, Any]:
    """An entry's bytes as JSON: canonical, a known kind, its fields well typed."""
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryError("entry too large")
    data = bytes(data)  # an immutable key, whatever bytes-like object came in
    if data in _known_valid:
        known: dict[str, Any] = json.loads(data)
        return known
    value = parse_canonical(data)
    if not isinstance(value, dict):
        raise EntryError("entry is not an object")
    kind = value.get("kind")
    if kind == KIND_OHTTP_KEY_CONFIG:
        ok = (
            set(value) == {"kind", "sha256", "key_id", "not_before", "not_after"}
            and isinstance(value["sha256"], str)
            and bool(_HEX64.match(value["sha256"]))
            and _int(value["key_id"])
            and value["key_id"] <= 255
            and _int(value["not_before"])
            and _int(value["not_after"])
        )
    elif kind == KIND_TOKEN_ISSUER_KEY:
        ok = (
            set(value) == {"kind", "token_type", "sha256", "not_before", "not_after"}
            and _int(value["token_type"])
            and isinstance(value["sha256"], str)
            and bool(_HEX64.match(value["sha256"]))
            and _int(value["not_before"])
            and _int(value["not_after"])
        )
    elif kind == KIND_CVM_RELEASE:
        ok = _release_ok(value)
    elif kind == KIND_CVM_REVOCATION:
        names = {"release_index", "measurement"} & set(value)
        ok = (
            len(names) == 1
            and set(value) == {"kind", "reason", "release_key", "signature", *names}
            and _signed_ok(value)
            and isinstance(value["reason"], str)
            and bool(_REASON.match(value["reason"]))
            and (
                _int(value["release_index"])
                if "release_index" in names
                else isinstance(value["measurement"], str) and bool(_HEX96.match(value["measurement"]))
            )
        )
    else:
        ok = False
    if not ok:
        raise EntryError("entry is not a well-formed known kind")
    _known_valid.add(data)
    return value
