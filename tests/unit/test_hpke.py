"""RFC 9180 Appendix A.1.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode)."""

from __future__ import annotations

import pytest

from privproc.errors import CryptoError
from privproc.wire import hpke
from tests.support import load_vector

V = load_vector("rfc9180-x25519-sha256-aes128gcm.json")
h = bytes.fromhex


def test_vector_is_our_suite() -> None:
    assert (int(V["kem_id"]), int(V["kdf_id"]), int(V["aead_id"]), int(V["mode"])) == (32, 1, 1, 0)


def test_derive_key_pair() -> None:
    eph = hpke.derive_key_pair(h(V["ikmE"]))
    rec = hpke.derive_key_pair(h(V["ikmR"]))
    assert (eph.secret, eph.public) == (h(V["skEm"]), h(V["pkEm"]))
    assert (rec.secret, rec.public) == (h(V["skRm"]), h(V["pkRm"]))


def test_sender_and_recipient_reproduce_every_encryption_and_export() -> None:
    enc, sender = hpke.setup_sender(h(V["pkRm"]), h(V["info"]), ephemeral_secret=h(V["skEm"]))
    assert enc == h(V["enc"])
    recipient = hpke.setup_recipient(enc, h(V["skRm"]), h(V["info"]))
    seq = 0
    for vector in V["encryptions"]:
        target = int(vector["sequence number"])
        while seq < target:  # advance both contexts through the skipped sequence numbers
            recipient.open(sender.seal(b"skip"))
            seq += 1
        ct = sender.seal(h(vector["pt"]), h(vector["aad"]))
        assert ct == h(vector["ct"])
        assert recipient.open(ct, h(vector["aad"])) == h(vector["pt"])
        seq += 1
    for export in V["exports"]:
        context = h(export["exporter_context"])
        length = int(export["L"])
        assert sender.export(context, length) == h(export["exported_value"])
        assert recipient.export(context, length) == h(export["exported_value"])


def test_open_rejects_tampering_with_typed_error() -> None:
    enc, sender = hpke.setup_sender(h(V["pkRm"]), b"info")
    ct = bytearray(sender.seal(b"hello"))
    ct[0] ^= 1
    with pytest.raises(CryptoError):
        hpke.setup_recipient(enc, h(V["skRm"]), b"info").open(bytes(ct))


def test_small_order_encapsulated_key_is_a_typed_error() -> None:
    with pytest.raises(CryptoError):
        hpke.setup_recipient(bytes(32), h(V["skRm"]), b"info")


def test_unsupported_suite_refused() -> None:
    with pytest.raises(CryptoError):
        hpke.setup_sender(h(V["pkRm"]), b"", suite=hpke.Suite(aead_id=0x0003))


def test_key_pair_repr_hides_secret() -> None:
    pair = hpke.generate_key_pair()
    assert pair.secret.hex() not in repr(pair)
