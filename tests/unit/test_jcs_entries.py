"""RFC 8785 canonical JSON and the ledger's entry kinds."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import WireError
from privproc.wire import entries, note
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
    key = entries.OhttpKeyConfigEntry.describing(b"configs", 7, 100, 200).encode()
    assert entries.parse_entry(key) == entries.OhttpKeyConfigEntry.parse(key)
    assert entries.OhttpKeyConfigEntry.parse(key).sha256 == hashlib.sha256(b"configs").hexdigest()
    assert entries.OhttpKeyConfigEntry.parse(key).key_id == 7
    with pytest.raises(WireError):
        entries.TokenIssuerKeyEntry.parse(key)  # another kind
    token = entries.TokenIssuerKeyEntry.describing(2, b"spki", 1, 2).encode()
    assert entries.TokenIssuerKeyEntry.parse(token).token_type == 2
    release = _release()
    assert entries.CvmReleaseEntry.parse(release).measurements == ("ab" * 48,)
    assert entries.CvmReleaseEntry.parse(release).encode() == release  # the same canonical bytes
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


RELEASE_SIGNER = note.parse_signer_key(note.generate_key("release")[0])
OTHER_SIGNER = note.parse_signer_key(note.generate_key("gateway")[0])


def _release(signer: note.Ed25519Signer = RELEASE_SIGNER, **changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "track": "predictor",
        "version": "0.1.0",
        "measurements": ["ab" * 48],
        "files_digest": "sha256:" + "00" * 32,
        "image_digest": "sha256:" + "44" * 32,
        "model_digest": "sha256:" + "11" * 32,
        "allowlist_digest": "sha256:" + "33" * 32,
        "host_data": "22" * 32,
        "min_tcb": {"bootloader": 4, "tee": 0, "snp": 22, "microcode": 213},
        "supersedes_at": 100,
        "not_after": 200,
        "provenance": {"builder": "local"},
    }
    return entries.CvmReleaseEntry.sign(**{**fields, **changes}, signer=signer).encode()


def test_release_and_revocation_are_signed_by_the_release_key() -> None:
    pinned = {entries.release_key_name(RELEASE_SIGNER.verifier()): RELEASE_SIGNER.verifier()}
    release = entries.CvmReleaseEntry.parse(_release())
    assert release.release_key == "release+" + RELEASE_SIGNER.key_id.hex()
    assert entries.verify_release_signature(release, pinned) == release.release_key
    # Signed by another key (say the gateway's publisher key): not a pinned release key.
    with pytest.raises(entries.ReleaseSignatureError):
        entries.verify_release_signature(entries.CvmReleaseEntry.parse(_release(OTHER_SIGNER)), pinned)
    # Any field changed after signing (here the expiry pushed back) breaks the signature.
    forged = canonicalize({**release.to_json(), "not_after": 10**9})
    with pytest.raises(entries.ReleaseSignatureError):
        entries.verify_release_signature(entries.CvmReleaseEntry.parse(forged), pinned)
    # The signature is domain-separated per kind and from ledger appends.
    assert entries.signed_message(release).startswith(b"privproc-cvm-release/v1\n")
    revocation = entries.CvmRevocationEntry.parse(
        entries.CvmRevocationEntry.sign(signer=RELEASE_SIGNER, release_index=3).encode()
    )
    assert revocation.release_index == 3 and revocation.measurement is None
    assert entries.verify_release_signature(revocation, pinned)
    by_measurement = entries.CvmRevocationEntry.sign(signer=RELEASE_SIGNER, measurement="cd" * 48).encode()
    assert entries.CvmRevocationEntry.parse(by_measurement).measurement == "cd" * 48
    with pytest.raises(ValueError):
        entries.CvmRevocationEntry.sign(signer=RELEASE_SIGNER)


@pytest.mark.parametrize(
    "changes",
    [
        {"version": "test"},
        {"version": "1.0\n"},
        {"track": "predictor\n"},
        {"host_data": "22" * 32 + "\n"},
        {"version": "1.02"},
        {"track": "Predictor"},
        {"host_data": "22" * 31},
        {"allowlist_digest": "33" * 32},  # a digest names its algorithm
        {"allowlist_digest": "sha256:" + "33" * 31},
        {"allowlist_digest": "sha256:" + "33" * 32 + "\n"},
        {"min_tcb": {"bootloader": 4, "tee": 0, "snp": 22}},
        {"min_tcb": {"bootloader": 4, "tee": 0, "snp": 22, "microcode": 256}},
        {"min_tcb": {"bootloader": 4, "tee": 0, "snp": 22, "microcode": 1, "other": 1}},
        {"not_after": -1},
        {"measurements": []},
        # The container image's digest: sha256 and 64 lowercase hex, or "" (no container).
        {"image_digest": "44" * 32},
        {"image_digest": "sha256:" + "AB" * 32},
        {"image_digest": "sha256:" + "44" * 31},
        {"image_digest": "sha256:" + "44" * 32 + "\n"},
        {"image_digest": "sha256:"},
        {"files_digest": ""},
    ],
)
def test_malformed_releases_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(WireError):
        _release(**changes)


def test_unsigned_or_badly_named_releases_are_refused() -> None:
    release = entries.CvmReleaseEntry.parse(_release()).to_json()
    for bad in (
        {k: v for k, v in release.items() if k != "signature"},
        # An entry of the format before the allow-list was measured: not a release any more.
        {k: v for k, v in release.items() if k != "allowlist_digest"},
        {**release, "release_key": "release"},
        {**release, "signature": "AAAA"},
        {k: v for k, v in release.items() if k not in ("signature", "release_key")},
    ):
        with pytest.raises(WireError):
            entries.parse_entry(canonicalize(bad))


def test_a_release_names_its_container_image_or_none() -> None:
    in_container = entries.CvmReleaseEntry.parse(_release())
    assert in_container.image_digest == "sha256:" + "44" * 32
    assert in_container.files_digest == "sha256:" + "00" * 32
    # ``privproc up`` runs the predictor from no container: the entry says so with "".
    local = entries.CvmReleaseEntry.parse(_release(image_digest=""))
    assert local.image_digest == "" and local.to_json()["image_digest"] == ""
    assert entries.is_image_digest("") and not entries.is_image_digest(None)
    release = in_container.to_json()
    # An entry of the format before the image was named: not a release any more.
    with pytest.raises(WireError):
        entries.parse_entry(canonicalize({k: v for k, v in release.items() if k != "image_digest"}))


def test_supersession_needs_the_same_track_a_higher_version_and_its_time() -> None:
    older = entries.CvmReleaseEntry.parse(_release(version="1.9.0"))
    newer = entries.CvmReleaseEntry.parse(_release(version="1.10.0", supersedes_at=150))
    assert newer.supersedes(older, 150) and not newer.supersedes(older, 149)
    assert not older.supersedes(newer, 150)
    other_track = entries.CvmReleaseEntry.parse(_release(version="2.0.0", track="coordinator"))
    assert not other_track.supersedes(older, 150)
    same = entries.CvmReleaseEntry.parse(_release(version="1.9.0", measurements=["cd" * 48]))
    assert not same.supersedes(older, 150)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["track", "version", "host_data", "min_tcb", "not_after", "supersedes_at", "image_digest", "x"]
        ),
        st.one_of(
            st.integers(-5, 2**53),
            st.text(max_size=70),
            st.dictionaries(st.text(max_size=12), st.integers(-1, 300)),
        ),
        max_size=3,
    )
)
def test_release_parser_any_field_values(changes: dict[str, Any]) -> None:
    value = {**entries.CvmReleaseEntry.parse(_release()).to_json(), **changes}
    with contextlib.suppress(WireError):
        parsed = entries.parse_entry(canonicalize(value))
        assert isinstance(parsed, entries.CvmReleaseEntry) and parsed.to_json() == value


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


@given(st.text())
def test_strings_escape_as_json_does(text: str) -> None:
    """RFC 8785 strings are what ``json.dumps(ensure_ascii=False)`` writes (lone surrogates refused)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(WireError):
            canonicalize(text)
        return
    assert canonicalize(text) == json.dumps(text, ensure_ascii=False).encode("utf-8")
    assert parse_canonical(canonicalize([text])) == [text]


def test_known_entries_parse_fresh_and_refusals_are_not_remembered() -> None:
    data = _release()
    first, second = entries.parse_entry(data), entries.parse_entry(data)
    assert isinstance(first, entries.CvmReleaseEntry) and first == second
    assert first.provenance is not second.provenance  # a fresh parse: nothing shared between callers
    # Bytes that failed once fail again, and a known entry's neighbours are checked in full.
    bad = data.replace(b'"kind":"cvm-release"', b'"kind":"cvm-releasf"')
    for _ in range(2):
        with pytest.raises(WireError):
            entries.parse_entry(bad)
    with pytest.raises(WireError):
        entries.parse_entry(data + b" ")
    with pytest.raises(WireError):
        entries.OhttpKeyConfigEntry.parse(data)  # known valid, still of the kind it is
