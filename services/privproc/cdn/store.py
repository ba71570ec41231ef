"""What the CDN holds: published documents with their validators — pure.

A document is served byte for byte as published, with a strong ETag (its
SHA-256) and a ``max-age`` that never outlives its ``not_after``, so caches
in front of the CDN cannot serve a key past its validity.

Publishers. Each publisher has its own credential, scoped to the document
names it may write (see :data:`PRESET_SCOPES`): the gateway's credential
cannot overwrite a release proof or the issuer directory. A scope is a list
of patterns: ``ohttp_keys``, ``issuer_directory``, ``checkpoint``, or
``proofs/<prefix>*`` for the proofs whose name starts with ``<prefix>``.

Proofs stay bounded without refusing publishers: a proof whose logged entry
carries a ``not_after`` is dropped once that time (plus a cache lifetime)
has passed, and each proof family (``ohttp-keys-``, ``token-key-``,
``release-``, …) keeps at most :data:`MAX_PROOFS_PER_FAMILY` proofs, the
oldest published giving way to the newest (it was superseded). Only the
global :data:`MAX_PROOFS` over all families can refuse a publish.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from privproc.errors import (
    BadRequestError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    WireError,
)
from privproc.wire.ohttp import decode_key_config_list
from privproc.wire.tlogproof import TlogProof

OHTTP_KEYS = "ohttp_keys"
ISSUER_DIRECTORY = "issuer_directory"
CHECKPOINT = "checkpoint"
MAX_CHECKPOINT_BYTES = 16 << 10
#: Proof documents are named ``proof:<name>``.
PROOF_PREFIX = "proof:"
_PROOF_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,95}$")
#: Proofs held at once, over all families: a bound on memory, not a lifetime.
MAX_PROOFS = 1024
#: Proofs one family keeps; publishing one more drops the family's oldest.
MAX_PROOFS_PER_FAMILY = 256
#: How long a proof outlives its entry's ``not_after``: a client that cached
#: the document (at most :data:`MAX_AGE_CAP`) can still fetch its proof.
PROOF_GRACE_SECONDS = 300

#: Upper bound of the max-age the CDN ever advertises (seconds).
MAX_AGE_CAP = 300

#: Minimum length of a publisher credential.
MIN_CREDENTIAL_LENGTH = 16
_PUBLISHER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_SCOPE_PATTERN = re.compile(r"^(ohttp_keys|issuer_directory|checkpoint|proofs/[a-z0-9-]{0,95}\*)$")

#: The scopes of privproc's own publishers, by name.
PRESET_SCOPES: dict[str, tuple[str, ...]] = {
    "gateway": (OHTTP_KEYS, "proofs/ohttp-keys-*"),
    "acs": (ISSUER_DIRECTORY, "proofs/token-key-*"),
    "release": ("proofs/release-*",),
    "ledger": (CHECKPOINT,),
}


def parse_scope(text: str) -> tuple[str, ...]:
    """A scope from its text: a preset name, or patterns separated by ``+`` or ``,``."""
    if text in PRESET_SCOPES:
        return PRESET_SCOPES[text]
    patterns = tuple(part for part in re.split(r"[+,]", text) if part)
    if not patterns or not all(_SCOPE_PATTERN.match(p) for p in patterns):
        raise ValueError("a scope is a preset name or known document patterns")
    return patterns


@dataclass(frozen=True)
class Publisher:
    """One publisher: its name (for logs), its scope and its credential."""

    name: str
    scope: tuple[str, ...]
    credential: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _PUBLISHER_NAME.match(self.name):
            raise ValueError("publisher names are short lowercase identifiers")
        if len(self.credential) < MIN_CREDENTIAL_LENGTH:
            raise ValueError("publisher credential too short")
        if not self.scope or not all(_SCOPE_PATTERN.match(p) for p in self.scope):
            raise ValueError("bad publisher scope")

    def may_write(self, name: str) -> bool:
        """Whether ``name`` (a store key such as ``proof:release-…``) is in this publisher's scope."""
        for pattern in self.scope:
            if pattern.startswith("proofs/"):
                prefix = PROOF_PREFIX + pattern[len("proofs/") : -1]
                if name.startswith(prefix) and name != PROOF_PREFIX:
                    return True
            elif name == pattern:
                return True
        return False


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


def proof_family(name: str) -> str:
    """A proof's family: its name up to the last ``-`` (``ohttp-keys``, ``token-key``, ``release``)."""
    head, sep, _ = name.rpartition("-")
    return head if sep else name


def _entry_not_after(proof: TlogProof) -> float | None:
    """The ``not_after`` of the entry a proof carries, if it is a JSON object with one."""
    if proof.extra is None:
        return None
    try:
        entry = json.loads(proof.extra)
    except (ValueError, UnicodeDecodeError):
        return None
    value = entry.get("not_after") if isinstance(entry, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return None


class DocumentStore:
    """The CDN's documents, guarded by scoped publisher credentials."""

    def __init__(self, publishers: Iterable[Publisher], *, clock: Callable[[], float] = time.time) -> None:
        self._publishers = tuple(publishers)
        if not self._publishers:
            raise ValueError("at least one publisher")
        if len({p.credential for p in self._publishers}) != len(self._publishers):
            raise ValueError("each publisher needs its own credential")
        if len({p.name for p in self._publishers}) != len(self._publishers):
            raise ValueError("publisher names must be distinct")
        self._clock = clock
        self._documents: dict[str, Document] = {}
        #: Proof names in publish order (oldest first), with their expiry (None: none).
        self._proofs: OrderedDict[str, float | None] = OrderedDict()

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def authenticate(self, authorization: str | None) -> Publisher:
        """The publisher presenting ``Bearer <credential>`` (constant-time comparisons)."""
        scheme, _, presented = (authorization or "").partition(" ")
        token = presented.strip().encode()
        found: Publisher | None = None
        # Compare against every credential, so the time taken does not say which one matched.
        for publisher in self._publishers:
            if hmac.compare_digest(token, publisher.credential):
                found = publisher
        if scheme.lower() != "bearer" or found is None:
            raise UnauthenticatedError("publisher credential required")
        return found

    def check_publisher(self, authorization: str | None, name: str) -> Publisher:
        """The authenticated publisher, if ``name`` is in its scope (else 403)."""
        publisher = self.authenticate(authorization)
        if not publisher.may_write(name):
            raise PermissionDeniedError("document outside the publisher's scope")
        return publisher

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
            self._publish_proof(name, document)
            return document
        else:
            raise NotFoundError("unknown document")
        self._documents[name] = document
        return document

    def _publish_proof(self, name: str, document: Document) -> None:
        short = name[len(PROOF_PREFIX) :]
        if not _PROOF_NAME.match(short):
            raise BadRequestError("bad proof name")
        try:
            proof = TlogProof.decode(document.body)
        except WireError as err:
            raise BadRequestError("not a tlog-proof") from err
        now = self._clock()
        not_after = _entry_not_after(proof)
        expires = None if not_after is None else not_after + PROOF_GRACE_SECONDS
        if expires is not None and expires <= now:
            raise BadRequestError("the proof's entry has expired")
        self.prune(now)
        self._proofs.pop(name, None)
        family = proof_family(short)
        siblings = [k for k in self._proofs if proof_family(k[len(PROOF_PREFIX) :]) == family]
        if len(siblings) >= MAX_PROOFS_PER_FAMILY:
            # The family's oldest proof gave way to newer ones: superseded.
            self._drop(siblings[0])
        if len(self._proofs) >= MAX_PROOFS:
            raise LimitExceededError("too many proofs")
        self._proofs[name] = expires
        self._documents[name] = document

    def _drop(self, name: str) -> None:
        self._proofs.pop(name, None)
        self._documents.pop(name, None)

    def prune(self, now: float | None = None) -> int:
        """Drop proofs whose entry expired (plus the grace); how many were dropped."""
        when = self._clock() if now is None else now
        expired = [k for k, expires in self._proofs.items() if expires is not None and expires <= when]
        for name in expired:
            self._drop(name)
        return len(expired)

    def proof_count(self) -> int:
        """Proofs held now (for metrics and tests)."""
        return len(self._proofs)

    def get(self, name: str) -> Document:
        expires = self._proofs.get(name)
        if expires is not None and expires <= self._clock():
            self._drop(name)
        document = self._documents.get(name)
        if document is None:
            raise NotFoundError("nothing published yet")
        return document
