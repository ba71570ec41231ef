"""What the ledger records: canonical JSON entries, one object each, with a ``kind``.

Every key a client must trust and every CVM release is logged before it is
used, so no user can be given a key or a binary that everyone else does not
see. Entries are RFC 8785 canonical JSON; validators here are used by the
ledger (refuse malformed appends) and by the client (interpret what it
proves inclusion of).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from privproc.errors import WireError
from privproc.wire.jcs import canonicalize, parse_canonical

KIND_OHTTP_KEY_CONFIG = "ohttp-key-config"
KIND_TOKEN_ISSUER_KEY = "token-issuer-key"  # noqa: S105 - an entry kind
KIND_CVM_RELEASE = "cvm-release"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX96 = re.compile(r"^[0-9a-f]{96}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_ENTRY_BYTES = 16 << 10


class EntryError(WireError):
    """An entry that is not one of the logged kinds, well formed."""


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
    measurements: list[str],
    image_digest: str,
    model_digest: str,
    version: str,
    provenance: dict[str, Any],
) -> bytes:
    """The entry for a predictor release: its launch measurement(s) and what they cover."""
    return canonicalize(
        {
            "kind": KIND_CVM_RELEASE,
            "measurements": sorted(measurements),
            "image_digest": image_digest,
            "model_digest": model_digest,
            "version": version,
            "provenance": provenance,
        }
    )


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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
        measurements = value.get("measurements")
        ok = (
            set(value) == {"kind", "measurements", "image_digest", "model_digest", "version", "provenance"}
            and isinstance(measurements, list)
            and 0 < len(measurements) <= 16
            and all(isinstance(m, str) and bool(_HEX96.match(m)) for m in measurements)
            and isinstance(value["image_digest"], str)
            and bool(_DIGEST.match(value["image_digest"]))
            and isinstance(value["model_digest"], str)
            and bool(_DIGEST.match(value["model_digest"]))
            and isinstance(value["version"], str)
            and 0 < len(value["version"]) <= 64
            and isinstance(value["provenance"], dict)
        )
    else:
        ok = False
    if not ok:
        raise EntryError("entry is not a well-formed known kind")
    return value
