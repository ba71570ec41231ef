"""The CDN's document store: publisher authentication, validation, cache validators."""

from __future__ import annotations

import pytest

from privproc.cdn.store import CHECKPOINT, ISSUER_DIRECTORY, OHTTP_KEYS, Document, DocumentStore
from privproc.errors import BadRequestError, NotFoundError, UnauthenticatedError
from privproc.wire import ohttp

CREDENTIAL = "c" * 32


def _keys_doc(not_after: float = 1100) -> Document:
    body = ohttp.encode_key_config_list([ohttp.GatewayKey.generate(1).config])
    return Document(body, ohttp.MEDIA_TYPE_KEYS, 1000, not_after)


def test_publisher_credential() -> None:
    store = DocumentStore(CREDENTIAL)
    store.check_publisher(f"Bearer {CREDENTIAL}")
    for bad in (None, "", CREDENTIAL, f"Basic {CREDENTIAL}", "Bearer " + "c" * 31, "Bearer " + "d" * 32):
        with pytest.raises(UnauthenticatedError):
            store.check_publisher(bad)
    with pytest.raises(ValueError):
        DocumentStore("short")


def test_publish_validates_and_serves_exact_bytes() -> None:
    store = DocumentStore(CREDENTIAL)
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
    store.publish(CHECKPOINT, Document(b"example.com/log\n1\nAAAA\n\n\xe2\x80\x94 sig\n", "text/plain", 0, 1))


def test_max_age_never_outlives_validity() -> None:
    doc = _keys_doc(not_after=1100)
    assert doc.max_age(1000) == 100
    assert doc.max_age(1099.5) == 0
    assert doc.max_age(2000) == 0
    assert Document(b"", "", 0, 10**9).max_age(0) == 300
