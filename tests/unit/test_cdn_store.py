"""The CDN's document store: scoped publishers, validation, cache validators, bounded proofs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privproc.cdn.server import parse_publisher
from privproc.cdn.store import (
    CHECKPOINT,
    ISSUER_DIRECTORY,
    MAX_PROOFS,
    MAX_PROOFS_PER_FAMILY,
    OHTTP_KEYS,
    PRESET_SCOPES,
    PROOF_GRACE_SECONDS,
    PROOF_PREFIX,
    Document,
    DocumentStore,
    Publisher,
    parse_scope,
    proof_family,
)
from privproc.errors import (
    BadRequestError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from privproc.wire import ohttp
from privproc.wire.tlogproof import TlogProof

CREDENTIAL = "c" * 32
CHECKPOINT_NOTE = b"log.test\n1\nAAAA\n\n\xe2\x80\x94 log.test sig\n"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _publishers() -> list[Publisher]:
    return [Publisher(name, PRESET_SCOPES[name], _secret(name)) for name in PRESET_SCOPES]


def _secret(name: str) -> bytes:
    return f"{name}-credential-0123456789".encode()


def _all_scope_store(clock: Clock | None = None) -> DocumentStore:
    everything = ("ohttp_keys", "issuer_directory", "checkpoint", "proofs/*")
    return DocumentStore([Publisher("admin", everything, CREDENTIAL.encode())], clock=clock or Clock())


def _keys_doc(not_after: float = 1100) -> Document:
    body = ohttp.encode_key_config_list([ohttp.GatewayKey.generate(1).config])
    return Document(body, ohttp.MEDIA_TYPE_KEYS, 1000, not_after)


def _proof(index: int = 0, not_after: int | None = None) -> Document:
    entry = {"kind": "ohttp-key-config", "key_id": 1}
    if not_after is not None:
        entry["not_after"] = not_after
    extra = json.dumps(entry).encode()
    body = TlogProof(index, (), CHECKPOINT_NOTE, extra=extra).encode()
    return Document(body, "text/plain", 0, 10**10)


def test_publisher_credential() -> None:
    store = _all_scope_store()
    assert store.authenticate(f"Bearer {CREDENTIAL}").name == "admin"
    for bad in (None, "", CREDENTIAL, f"Basic {CREDENTIAL}", "Bearer " + "c" * 31, "Bearer " + "d" * 32):
        with pytest.raises(UnauthenticatedError):
            store.authenticate(bad)
    with pytest.raises(ValueError):
        Publisher("short", ("checkpoint",), b"short")


def test_each_publisher_writes_only_its_scope() -> None:
    store = DocumentStore(_publishers())
    allowed = {
        "gateway": [OHTTP_KEYS, PROOF_PREFIX + "ohttp-keys-ab12"],
        "acs": [ISSUER_DIRECTORY, PROOF_PREFIX + "token-key-ab12"],
        "release": [PROOF_PREFIX + "release-ab12"],
        "ledger": [CHECKPOINT],
    }
    every = [name for names in allowed.values() for name in names]
    for publisher, names in allowed.items():
        header = f"Bearer {publisher}-credential-0123456789"
        for name in every:
            if name in names:
                assert store.check_publisher(header, name).name == publisher
            else:
                with pytest.raises(PermissionDeniedError):
                    store.check_publisher(header, name)


def test_publishers_need_distinct_credentials_and_names() -> None:
    one = Publisher("gateway", PRESET_SCOPES["gateway"], CREDENTIAL.encode())
    with pytest.raises(ValueError):
        DocumentStore([one, Publisher("acs", PRESET_SCOPES["acs"], CREDENTIAL.encode())])
    with pytest.raises(ValueError):
        DocumentStore([one, Publisher("gateway", PRESET_SCOPES["acs"], b"x" * 32)])
    with pytest.raises(ValueError):
        DocumentStore([])


def test_scopes_parse() -> None:
    assert parse_scope("gateway") == PRESET_SCOPES["gateway"]
    assert parse_scope("checkpoint+proofs/release-*") == ("checkpoint", "proofs/release-*")
    for bad in ("", "everything", "proofs/release-", "ohttp_keys+bogus", "proofs/../*"):
        with pytest.raises(ValueError):
            parse_scope(bad)


def test_publish_validates_and_serves_exact_bytes() -> None:
    store = _all_scope_store()
    with pytest.raises(NotFoundError):
        store.get(OHTTP_KEYS)
    doc = store.publish(OHTTP_KEYS, _keys_doc())
    assert store.get(OHTTP_KEYS).body == doc.body
    assert doc.etag.strip('"') == doc.sha256.hex()
    for bad in (b"", b"\x00\x05garbage", b"\xff" * 10):
        with pytest.raises(BadRequestError):
            store.publish(OHTTP_KEYS, Document(bad, ohttp.MEDIA_TYPE_KEYS, 1000, 1100))
    with pytest.raises(BadRequestError):
        store.publish(OHTTP_KEYS, _keys_doc(not_after=1000))
    with pytest.raises(BadRequestError):
        store.publish(ISSUER_DIRECTORY, Document(b"[1]", "application/json", 0, 1))
    with pytest.raises(BadRequestError):
        store.publish(CHECKPOINT, Document(b"no newline", "text/plain", 0, 1))
    store.publish(CHECKPOINT, Document(CHECKPOINT_NOTE, "text/plain", 0, 1))
    with pytest.raises(BadRequestError):
        store.publish(PROOF_PREFIX + "Bad_Name", _proof())
    with pytest.raises(BadRequestError):
        store.publish(PROOF_PREFIX + "ohttp-keys-1", Document(b"not a proof", "text/plain", 0, 1))


def test_max_age_never_outlives_validity() -> None:
    doc = _keys_doc(not_after=1100)
    assert doc.max_age(1000) == 100
    assert doc.max_age(1099.5) == 0
    assert doc.max_age(2000) == 0
    assert Document(b"", "", 0, 10**9).max_age(0) == 300


def test_expired_proofs_are_pruned() -> None:
    clock = Clock(1000)
    store = _all_scope_store(clock)
    store.publish(PROOF_PREFIX + "ohttp-keys-a", _proof(0, not_after=2000))
    store.publish(PROOF_PREFIX + "release-r", _proof(1))  # no not_after: kept
    assert store.get(PROOF_PREFIX + "ohttp-keys-a")
    clock.now = 2000 + PROOF_GRACE_SECONDS - 1
    assert store.get(PROOF_PREFIX + "ohttp-keys-a")  # a cached key's proof is still there
    clock.now = 2000 + PROOF_GRACE_SECONDS
    with pytest.raises(NotFoundError):
        store.get(PROOF_PREFIX + "ohttp-keys-a")
    assert store.get(PROOF_PREFIX + "release-r")
    assert store.proof_count() == 1
    with pytest.raises(BadRequestError):  # already expired when published
        store.publish(PROOF_PREFIX + "ohttp-keys-b", _proof(2, not_after=1000))


def test_rotations_far_past_the_old_cap_keep_publishing_and_stay_bounded() -> None:
    # The attack of issue 11 item 9: hourly rotations for ~80 days (3 x the old 1024 cap).
    clock = Clock(0)
    store = _all_scope_store(clock)
    store.publish(PROOF_PREFIX + "release-r", _proof(0))
    for rotation in range(3 * MAX_PROOFS):
        clock.now = rotation * 3600.0
        name = PROOF_PREFIX + f"ohttp-keys-{rotation:064x}"
        store.publish(name, _proof(rotation + 1, not_after=int(clock.now) + 3600 + 600))
        assert store.get(name)
        assert store.proof_count() <= 4
    assert store.get(PROOF_PREFIX + "release-r")


def test_a_family_without_expiry_gives_way_to_its_newest_not_to_other_families() -> None:
    store = _all_scope_store()
    store.publish(PROOF_PREFIX + "release-keep", _proof(0))
    for i in range(MAX_PROOFS_PER_FAMILY + 10):
        store.publish(PROOF_PREFIX + f"token-key-{i:04x}", _proof(i))
    assert store.proof_count() == MAX_PROOFS_PER_FAMILY + 1
    with pytest.raises(NotFoundError):
        store.get(PROOF_PREFIX + "token-key-0000")  # the oldest gave way
    assert store.get(PROOF_PREFIX + f"token-key-{MAX_PROOFS_PER_FAMILY + 9:04x}")
    assert store.get(PROOF_PREFIX + "release-keep")


def test_the_global_cap_refuses_only_when_every_family_is_live() -> None:
    store = _all_scope_store()
    families = MAX_PROOFS // MAX_PROOFS_PER_FAMILY
    for family in range(families):
        for i in range(MAX_PROOFS_PER_FAMILY):
            store.publish(PROOF_PREFIX + f"f{family}-{i}", _proof(i))
    assert store.proof_count() == MAX_PROOFS
    with pytest.raises(LimitExceededError):
        store.publish(PROOF_PREFIX + "another-1", _proof(0))
    store.publish(PROOF_PREFIX + "f0-new", _proof(0))  # its family's oldest gives way
    assert store.proof_count() == MAX_PROOFS


@given(st.from_regex(r"[a-z0-9][a-z0-9-]{0,95}", fullmatch=True))
def test_proof_family_is_a_prefix(name: str) -> None:
    family = proof_family(name)
    assert name.startswith(family)
    assert len(family) <= len(name)


@given(st.binary(max_size=512))
def test_arbitrary_proof_bodies_are_refused_or_stored(body: bytes) -> None:
    store = _all_scope_store()
    try:
        store.publish(PROOF_PREFIX + "release-x", Document(body, "text/plain", 0, 1))
    except BadRequestError:
        return
    assert store.get(PROOF_PREFIX + "release-x").body == body


def test_publisher_arguments_parse() -> None:
    spec = parse_publisher("gateway:gateway:secrets/cdn-gateway")
    assert (spec.name, spec.scope, str(spec.credential_file)) == (
        "gateway",
        PRESET_SCOPES["gateway"],
        "secrets/cdn-gateway",
    )
    spec = parse_publisher("ops:checkpoint+proofs/release-*:dir:with:colons")
    assert spec.scope == ("checkpoint", "proofs/release-*") and str(spec.credential_file) == "dir:with:colons"
    for bad in ("gateway", "gateway:gateway", "gateway:everything:file", ":gateway:file", "gw:gateway:"):
        with pytest.raises(ValueError):
            parse_publisher(bad)
