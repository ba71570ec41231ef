"""What the ledger records: canonical JSON entries, one object each, with a ``kind``.

Every key a client must trust and every CVM release is logged before it is
used, so no user can be given a key or a binary that everyone else does not
see. Entries are RFC 8785 canonical JSON; validators here are used by the
ledger (refuse malformed appends) and by the client (interpret what it
proves inclusion of).

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
import hashlib
import re
from collections.abc import Mapping
from typing import Any

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
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}\Z")
_TRACK = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_REASON = re.compile(r"^[a-z][a-z_]{0,31}\Z")
_RELEASE_KEY = re.compile(r"^[!-*,-~]{1,128}\+[0-9a-f]{8}\Z")  # <signed-note key name>+<hex key ID>
_SIGNATURE = re.compile(r"^[A-Za-z0-9+/]{86}==\Z")  # base64 of a 64-byte Ed25519 signature
MAX_ENTRY_BYTES = 16 << 10
MAX_TIME = 2**53 - 1


class EntryError(WireError):
    """An entry that is not one of the logged kinds, well formed."""


class ReleaseSignatureError(CryptoError):
    """A release or revocation not signed by a release key the reader pins."""

    reason = "release_signature"


def ohttp_key_config_entry(key_configs: bytes, key_id: int, not_before: int, not_after: int) -> bytes:
    """The entry for an ``application/ohttp-keys`` body exactly as it will be served."""
    return canonicalize(
        {
            "kind": KIND_OHTTP_KEY_CONFIG,
            "sha256": hashlib.sha256(key_configs).hexdigest(),
            "key_id": key_id,
            "not_before": not_before,
            "not_after": not_after,
        }
    )


def token_issuer_key_entry(token_type: int, token_key: bytes, not_before: int, not_after: int) -> bytes:
    """The entry for a Privacy Pass issuer key (``sha256`` is its RFC 9578 token key id)."""
    return canonicalize(
        {
            "kind": KIND_TOKEN_ISSUER_KEY,
            "token_type": token_type,
            "sha256": hashlib.sha256(token_key).hexdigest(),
            "not_before": not_before,
            "not_after": not_after,
        }
    )


def cvm_release_entry(
    *,
    track: str,
    version: str,
    measurements: list[str],
    image_digest: str,
    model_digest: str,
    host_data: str,
    min_tcb: dict[str, int],
    supersedes_at: int,
    not_after: int,
    provenance: dict[str, Any],
    signer: note.Ed25519Signer,
) -> bytes:
    """The entry for a predictor release, signed by the release key ``signer``.

    It admits CVMs launched with one of ``measurements`` and ``host_data``
    (the configuration digest, hex), on a platform whose VCEK TCB is at least
    ``min_tcb`` (per component), from the moment it is logged until
    ``not_after`` (POSIX seconds), unless revoked or superseded. From
    ``supersedes_at`` on it withdraws the lower versions of its ``track``
    (:func:`supersedes`): set it ahead to leave time for a rollout.
    """
    return sign_release_entry(
        {
            "kind": KIND_CVM_RELEASE,
            "track": track,
            "version": version,
            "measurements": sorted(measurements),
            "image_digest": image_digest,
            "model_digest": model_digest,
            "host_data": host_data,
            "min_tcb": dict(min_tcb),
            "supersedes_at": supersedes_at,
            "not_after": not_after,
            "provenance": provenance,
        },
        signer,
    )


def cvm_revocation_entry(
    *,
    signer: note.Ed25519Signer,
    release_index: int | None = None,
    measurement: str | None = None,
    reason: str = "withdrawn",
) -> bytes:
    """An entry withdrawing the release logged at ``release_index``, or every release of ``measurement``."""
    if (release_index is None) == (measurement is None):
        raise ValueError("a revocation names a release index or a measurement, exactly one")
    value: dict[str, Any] = {"kind": KIND_CVM_REVOCATION, "reason": reason}
    if release_index is not None:
        value["release_index"] = release_index
    else:
        value["measurement"] = measurement
    return sign_release_entry(value, signer)


def release_key_name(verifier: note.Ed25519Verifier) -> str:
    """How a signed entry names its release key: ``<name>+<hex key ID>`` (as a signed-note key)."""
    return f"{verifier.name}+{verifier.key_id.hex()}"


def signed_message(entry: Mapping[str, Any]) -> bytes:
    """What a release key signs: a per-kind domain, then the canonical entry without ``signature``."""
    domain = _SIGNATURE_DOMAINS.get(str(entry.get("kind")))
    if domain is None:
        raise EntryError("entry kind is not signed by a release key")
    return domain + canonicalize({k: v for k, v in entry.items() if k != "signature"})


def sign_release_entry(value: dict[str, Any], signer: note.Ed25519Signer) -> bytes:
    """``value`` with ``release_key`` and ``signature`` added, as canonical bytes (validated)."""
    if signer.alg != note.ALG_ED25519:
        raise ValueError("release keys are Ed25519 signed-note keys")
    unsigned = {**value, "release_key": release_key_name(signer.verifier())}
    unsigned.pop("signature", None)
    signature = base64.b64encode(signer.sign(signed_message(unsigned))).decode()
    entry = canonicalize({**unsigned, "signature": signature})
    parse_entry(entry)  # never produce what the log (or a client) would refuse
    return entry


def verify_release_signature(entry: Mapping[str, Any], keys: Mapping[str, note.Ed25519Verifier]) -> str:
    """The ``release_key`` name of a release-key-signed entry whose signature verifies under a pinned key.

    ``keys`` maps :func:`release_key_name` to a pinned verifier. Raises
    :class:`ReleaseSignatureError` when the entry names no pinned key or its
    signature does not verify.
    """
    name = entry.get("release_key")
    signature = entry.get("signature")
    verifier = keys.get(name) if isinstance(name, str) else None
    if verifier is None or not isinstance(signature, str):
        raise ReleaseSignatureError("entry is not signed by a pinned release key")
    raw = note.strict_b64decode(signature)
    if raw is None or not verifier.verify(signed_message(entry), raw):
        raise ReleaseSignatureError("release signature does not verify")
    return str(name)


def parse_version(version: str) -> tuple[int, ...]:
    """A release version: dot-separated decimal numbers (``1``, ``0.1.0``), compared numerically."""
    if not _VERSION.match(version):
        raise EntryError("release version is dotted decimal numbers")
    return tuple(int(part) for part in version.split("."))


def supersedes(newer: Mapping[str, Any], older: Mapping[str, Any], now: float) -> bool:
    """Whether release ``newer`` withdraws release ``older`` at ``now``.

    It does when both are on the same track, ``newer`` has a strictly higher
    version, and ``now`` has reached ``newer``'s ``supersedes_at``. The log
    order does not matter: once a higher version of a track is logged, a
    lower one is not admitted again (no rollback by logging an old release
    later). Two releases of one version (say, images for different CPUs)
    stand side by side.
    """
    return (
        newer["track"] == older["track"]
        and parse_version(newer["version"]) > parse_version(older["version"])
        and now >= newer["supersedes_at"]
    )


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
        "kind", "track", "version", "measurements", "image_digest", "model_digest", "host_data",
        "min_tcb", "supersedes_at", "not_after", "provenance", "release_key", "signature",
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
        and isinstance(value["image_digest"], str)
        and bool(_DIGEST.match(value["image_digest"]))
        and isinstance(value["model_digest"], str)
        and bool(_DIGEST.match(value["model_digest"]))
        and isinstance(value["host_data"], str)
        and bool(_HEX64.match(value["host_data"]))
        and _tcb_ok(value["min_tcb"])
        and _int(value["supersedes_at"])
        and value["supersedes_at"] <= MAX_TIME
        and _int(value["not_after"])
        and value["not_after"] <= MAX_TIME
        and isinstance(value["provenance"], dict)
    )


def parse_entry(data: bytes) -> dict[str, Any]:
    """Validate an entry's bytes: canonical JSON, a known kind, its fields well typed."""
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryError("entry too large")
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
    return value
