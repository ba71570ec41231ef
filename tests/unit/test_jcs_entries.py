"""RFC 8785 canonical JSON and the ledger's entry kinds."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import WireError
from privproc.ledger import entries
from privproc.wire.jcs import canonicalize, parse_canonical
from privproc.wire.tlogproof import TlogProof


def test_rfc8785_examples() -> None:
    # RFC 8785 §3.2.3 sorting example (keys compared as UTF-16 code units).
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(parse_canonical(canonicalize(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert (
        canonicalize({"b": [1, True, None, "x\n\u2028"], "a": {}})
        == b'{"a":{},"b":[1,true,null,"x\\n\xe2\x80\xa8"]}'
    )
    assert canonicalize("\x01\x7f") == b'"\\u0001\x7f"'


@pytest.mark.parametrize("bad", [1.5, 2**53, {1: "x"}, object(), "\ud800"])
def test_no_canonical_form(bad: object) -> None:
    with pytest.raises(WireError):
        canonicalize(bad)


@pytest.mark.parametrize("data", [b'{"b":1,"a":2}', b'{"a": 1}', b"[1.0]", b"\xff", b"NaN", b'{"a":1,"a":1}'])
def test_non_canonical_bytes_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        parse_canonical(data)


def test_entry_kinds_round_trip_and_validation() -> None:
    key = entries.ohttp_key_config_entry(b"configs", 7, 100, 200)
    assert entries.parse_entry(key)["sha256"] == hashlib.sha256(b"configs").hexdigest()
    assert entries.parse_entry(key)["key_id"] == 7
    token = entries.token_issuer_key_entry(2, b"spki", 1, 2)
    assert entries.parse_entry(token)["token_type"] == 2
    release = entries.cvm_release_entry(
        measurements=["ab" * 48],
        image_digest="sha256:" + "00" * 32,
        model_digest="sha256:" + "11" * 32,
        version="0.1.0",
        provenance={"builder": "local"},
    )
    assert entries.parse_entry(release)["measurements"] == ["ab" * 48]
    for bad in (
        canonicalize({"kind": "other"}),
        canonicalize(
            {"kind": "ohttp-key-config", "sha256": "00", "key_id": 1, "not_before": 0, "not_after": 1}
        ),
        canonicalize(
            {"kind": "ohttp-key-config", "sha256": "0" * 64, "key_id": 300, "not_before": 0, "not_after": 1}
        ),
        canonicalize(
            {
                "kind": "token-issuer-key",
                "token_type": True,
                "sha256": "0" * 64,
                "not_before": 0,
                "not_after": 1,
            }
        ),
        b'{"kind": "ohttp-key-config"}',
        b"x" * (entries.MAX_ENTRY_BYTES + 1),
    ):
        with pytest.raises(WireError):
            entries.parse_entry(bad)


def test_tlog_proof_round_trip() -> None:
    checkpoint = b"example.com/log\n2\nAAAA\n\n\xe2\x80\x94 example.com/log AAAA\n"
    proof = TlogProof(
        index=1, hashes=(b"\x01" * 32, b"\x02" * 32), checkpoint=checkpoint, extra=b'{"kind":"x"}'
    )
    assert TlogProof.decode(proof.encode()) == proof
    assert TlogProof.decode(TlogProof(0, (), checkpoint).encode()) == TlogProof(0, (), checkpoint)
    for bad in (b"", b"c2sp.org/tlog-proof@v1\nindex 01\n\nx", b"c2sp.org/tlog-proof@v1\nindex 1\nAAAA\n\nx",
                b"other\nindex 1\n\nx", b"c2sp.org/tlog-proof@v1\nindex 1\n"):  # fmt: skip
        with pytest.raises(WireError):
            TlogProof.decode(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_any_bytes(data: bytes) -> None:
    for parse in (parse_canonical, entries.parse_entry, TlogProof.decode):
        with contextlib.suppress(WireError):
            parse(data)
