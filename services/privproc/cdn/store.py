"""What the CDN holds: published documents with their validators — pure.

A document is served byte for byte as published, with a strong ETag (its
SHA-256) and a ``max-age`` that never outlives its ``not_after``, so caches
in front of the CDN cannot serve a key past its validity.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from privproc.errors import BadRequestError, NotFoundError, UnauthenticatedError, WireError
from privproc.wire.ohttp import decode_key_config_list
from privproc.wire.tlogproof import TlogProof

OHTTP_KEYS = "ohttp_keys"
ISSUER_DIRECTORY = "issuer_directory"
CHECKPOINT = "checkpoint"
MAX_CHECKPOINT_BYTES = 16 << 10
#: Proof documents are named ``proof:<name>``.
PROOF_PREFIX = "proof:"
_PROOF_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,95}$")
MAX_PROOFS = 1024

#: Upper bound of the max-age the CDN ever advertises (seconds).
MAX_AGE_CAP = 300


@dataclass(frozen=True)
class Document:
    body: bytes
    media_type: str
    not_before: float
    not_after: float

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    @property
    def etag(self) -> str:
        return '"' + self.sha256.hex() + '"'

    def max_age(self, now: float) -> int:
        return max(0, min(MAX_AGE_CAP, int(self.not_after - now)))


class DocumentStore:
    """The CDN's documents, guarded by a publisher credential."""

    def __init__(self, publisher_credential: str) -> None:
        if len(publisher_credential) < 16:
            raise ValueError("publisher credential too short")
        self._credential = publisher_credential.encode()
        self._documents: dict[str, Document] = {}

    def check_publisher(self, authorization: str | None) -> None:
        """Accept ``Bearer <credential>`` only (constant-time comparison)."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self._credential
        ):
            raise UnauthenticatedError("publisher credential required")

    def publish(self, name: str, document: Document) -> Document:
        if document.not_after <= document.not_before:
            raise BadRequestError("empty validity window")
        if name == OHTTP_KEYS:
            try:
                configs = decode_key_config_list(document.body)
            except WireError as err:
                raise BadRequestError("key configuration list does not parse") from err
            if not configs:
                raise BadRequestError("no usable key configuration")
        elif name == ISSUER_DIRECTORY:
            try:
                parsed = json.loads(document.body)
            except (ValueError, UnicodeDecodeError) as err:
                raise BadRequestError("issuer directory is not JSON") from err
            if not isinstance(parsed, dict):
                raise BadRequestError("issuer directory is not a JSON object")
        elif name == CHECKPOINT:
            # Not ours to vouch for (clients verify the signatures), only to
            # keep sane: a bounded UTF-8 note ending in a newline.
            if not document.body.endswith(b"\n") or len(document.body) > MAX_CHECKPOINT_BYTES:
                raise BadRequestError("checkpoint is not a signed note")
            try:
                document.body.decode("utf-8")
            except UnicodeDecodeError as err:
                raise BadRequestError("checkpoint is not UTF-8") from err
        elif name.startswith(PROOF_PREFIX):
            if not _PROOF_NAME.match(name[len(PROOF_PREFIX) :]):
                raise BadRequestError("bad proof name")
            try:
                TlogProof.decode(document.body)
            except WireError as err:
                raise BadRequestError("not a tlog-proof") from err
            proofs = [k for k in self._documents if k.startswith(PROOF_PREFIX)]
            if name not in self._documents and len(proofs) >= MAX_PROOFS:
                raise BadRequestError("too many proofs")
        else:
            raise NotFoundError("unknown document")
        self._documents[name] = document
        return document

    def get(self, name: str) -> Document:
        document = self._documents.get(name)
        if document is None:
            raise NotFoundError("nothing published yet")
        return document
