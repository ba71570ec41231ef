"""Signed notes, checkpoints and cosignatures: Go's sumdb/note vectors, C2SP examples, rejections."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.errors import LimitExceededError, PrivprocError
from privproc.runtime import status
from privproc.wire import note
from privproc.wire.note import (
    Checkpoint,
    CheckpointFormatError,
    InvalidSignatureError,
    KeyFormatError,
    NoteFormatError,
    NoVerifiedSignatureError,
)
from privproc.wire.tlog import leaf_hash
from tests.support import load_vector

G = load_vector("go-note-vectors.json")
C2SP = load_vector("c2sp-examples.json")
FAST = settings(max_examples=200, deadline=None)

TEXT: str = G["text"]
PETER_SIG: str = G["peter_sig"]
ENOCH_SIG: str = G["enoch_sig"]
PETER = note.parse_verifier_key(G["peter_vkey"])
ENOCH = note.parse_verifier_key(G["enoch_vkey"])
SEED = bytes(range(32))


def msg(*parts: str) -> bytes:
    return "".join(parts).encode()


# --- Go's golang.org/x/mod/sumdb/note vectors -------------------------------------------------


def test_go_keys_parse_and_match_their_ids() -> None:
    assert type(PETER) is note.Ed25519Verifier
    assert PETER.name == "PeterNeumann" and PETER.key_id.hex() == G["peter_key_id"]
    assert ENOCH.key_id.hex() == G["enoch_key_id"]
    assert PETER.key_string() == G["peter_vkey"]
    signer = note.parse_signer_key(G["peter_skey"])
    assert signer.key_id == PETER.key_id and signer.verifier() == PETER
    assert signer.key_string() == G["peter_skey"]
    assert note.key_id("PeterNeumann", note.ALG_ED25519, PETER.public_key) == PETER.key_id
    assert G["peter_skey"] not in repr(signer)


def test_go_sign_reproduces_the_signed_note() -> None:
    signer = note.parse_signer_key(G["peter_skey"])
    assert note.sign_note(TEXT, [signer]).decode() == G["signed_by_peter"]
    # An existing signature by the same key is replaced by the new one.
    stale = note.Signature("PeterNeumann", PETER.key_id, b"BADSIGN")
    assert note.sign_note(TEXT, [signer], existing=[stale]).decode() == G["signed_by_peter"]


def test_go_open_one_verified_one_unknown() -> None:
    opened = note.open_note(msg(TEXT, "\n", PETER_SIG, ENOCH_SIG), [PETER])
    assert opened.text == TEXT
    assert [(s.name, s.key_id.hex()) for s in opened.signatures] == [("PeterNeumann", "c74f20a3")]
    assert [s.line() + "\n" for s in opened.unverified] == [ENOCH_SIG]
    assert [s.line() + "\n" for s in opened.signatures] == [PETER_SIG]


def test_go_open_both_verified() -> None:
    opened = note.open_note(msg(TEXT, "\n", PETER_SIG, ENOCH_SIG), [PETER, ENOCH])
    assert [s.name for s in opened.signatures] == ["PeterNeumann", "EnochRoot"]
    assert opened.unverified == ()


def test_go_open_no_known_key() -> None:
    with pytest.raises(NoVerifiedSignatureError) as raised:
        note.open_note(msg(TEXT, "\n", PETER_SIG, ENOCH_SIG), [])
    unverified = raised.value.note
    assert unverified is not None and unverified.signatures == ()
    assert [s.name for s in unverified.unverified] == ["PeterNeumann", "EnochRoot"]
    assert str(raised.value) == "note has no signature by a known key"


def test_go_too_many_signatures() -> None:
    for verifiers in ([PETER], []):
        with pytest.raises(note.NoteLimitError):
            note.open_note(msg(TEXT, "\n", PETER_SIG * 101), verifiers)
    assert len(note.open_note(msg(TEXT, "\n", PETER_SIG * 100), [PETER]).signatures) == 1


def test_go_invalid_signature_by_known_key() -> None:
    sig = PETER_SIG.encode()
    corrupted = TEXT.encode() + b"\n" + sig[:60] + b"ABCD" + sig[60:]
    with pytest.raises(InvalidSignatureError):
        note.open_note(corrupted, [PETER])


def test_go_duplicated_verified_and_unverified_signatures() -> None:
    enoch = ENOCH_SIG.encode()
    enoch_abcd = enoch[:60] + b"ABCD" + enoch[60:]
    opened = note.open_note(msg(TEXT, "\n", PETER_SIG, PETER_SIG, ENOCH_SIG, ENOCH_SIG) + enoch_abcd, [PETER])
    assert [s.name for s in opened.signatures] == ["PeterNeumann"]
    assert [s.line().encode() + b"\n" for s in opened.unverified] == [enoch, enoch_abcd]


@pytest.mark.parametrize(
    "bad",
    [
        msg(TEXT),
        msg(TEXT, "\n"),
        msg(TEXT, "\n", PETER_SIG[:-1]),
        msg("\x01", TEXT, "\n", PETER_SIG),
        b"\xff" + msg(TEXT, "\n", PETER_SIG),
        msg(
            TEXT,
            "\n",
            "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p",
            "ZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        ),
        msg(TEXT, "\n", PETER_SIG, "Unexpected line.\n"),
    ],
)
def test_go_malformed_notes(bad: bytes) -> None:
    with pytest.raises(NoteFormatError):
        note.open_note(bad, [PETER])


def test_go_verifier_key_manglings_are_rejected() -> None:
    vkey = G["peter_vkey"]
    for i in range(len(vkey) + 1):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(KeyFormatError):
                    note.parse_verifier_key(vkey[i:j])
    for i in range(len(vkey)):
        with pytest.raises(KeyFormatError):
            note.parse_verifier_key(vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :])
    for bad in G["bad_vkeys"]:
        with pytest.raises(KeyFormatError):
            note.parse_verifier_key(bad)


def test_go_signer_key_manglings_are_rejected() -> None:
    skey = G["peter_skey"]
    for i in range(len(skey) + 1):
        for j in range(i + 1, len(skey) + 1):
            if (i, j) != (0, len(skey)):
                with pytest.raises(KeyFormatError):
                    note.parse_signer_key(skey[i:j])
    for i in range(len(skey)):
        with pytest.raises(KeyFormatError):
            note.parse_signer_key(skey[:i] + chr(ord(skey[i]) + 1) + skey[i + 1 :])


# --- open_note rules beyond Go's tests ------------------------------------------------------------


def signed(text: str = TEXT) -> bytes:
    return note.sign_note(text, [note.Ed25519Signer("PeterNeumann", SEED)])


OURS = note.Ed25519Signer("PeterNeumann", SEED).verifier()


def test_unknown_name_or_key_id_is_ignored_not_an_error() -> None:
    line = signed().decode().split("\n\n")[1]
    other_id = line.replace("— PeterNeumann", "— PeterNeuman")
    assert note.open_note(msg(TEXT, "\n", line, other_id), [OURS]).unverified[0].name == "PeterNeuman"
    # Same name, a key ID no verifier has: ignored too.
    sig = base64.b64decode(line.split(" ")[2])
    wrong_id = f"— PeterNeumann {base64.b64encode(b'XXXX' + sig[4:]).decode()}\n"
    opened = note.open_note(msg(TEXT, "\n", line, wrong_id), [OURS])
    assert len(opened.signatures) == 1 and opened.unverified[0].key_id == b"XXXX"
    with pytest.raises(NoVerifiedSignatureError):
        note.open_note(msg(TEXT, "\n", wrong_id), [OURS])


def test_altered_body_fails_the_known_key() -> None:
    good = signed()
    with pytest.raises(InvalidSignatureError):
        note.open_note(good.replace(b"cryptography", b"cryptographY"), [OURS])
    # A failed signature rejects the note even if another known key signed it.
    a, b = note.Ed25519Signer("a", SEED), note.Ed25519Signer("b", SEED[::-1])
    both = note.sign_note(TEXT, [a, b])
    assert len(note.open_note(both, [a.verifier(), b.verifier()]).signatures) == 2
    good_b = note.open_note(both, [a.verifier(), b.verifier()]).signatures[1]
    bad_b = note.Signature("b", good_b.key_id, bytes([good_b.signature[0] ^ 1]) + good_b.signature[1:])
    forged = note.sign_note(TEXT, [a], existing=[bad_b])
    assert len(note.open_note(forged, [a.verifier()]).signatures) == 1
    with pytest.raises(InvalidSignatureError):
        note.open_note(forged, [a.verifier(), b.verifier()])


def test_duplicate_signatures_by_a_known_key_are_each_verified() -> None:
    good = signed().decode()
    line = good.split("\n\n")[1]
    sig = base64.b64decode(line.split(" ")[2])
    bad = f"— PeterNeumann {base64.b64encode(sig[:-1] + bytes([sig[-1] ^ 1])).decode()}\n"
    with pytest.raises(InvalidSignatureError):
        note.open_note(msg(TEXT, "\n", line, bad), [OURS])
    assert len(note.open_note(msg(TEXT, "\n", line, line), [OURS]).signatures) == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda m: m[:-1],  # no final newline
        lambda m: m + b"extra\n",  # text after the signatures
        lambda m: m + b"\n",  # blank line after the signatures
        lambda m: m.replace(b"\n", b"\r\n"),
        lambda m: m.replace(b"problem,", b"problem,\r"),
        lambda m: m.replace(b"problem,", b"problem,\t"),
        lambda m: m.replace(b"problem,", b"problem\x00"),
        lambda m: m.replace(b"problem,", b"\xed\xa0\x80"),  # a UTF-8 surrogate
        lambda m: m.replace(b"problem,", b"\xc0\xaf"),  # overlong
        lambda m: m.replace("—".encode(), b"-"),
        lambda m: m.replace("— ".encode(), "—".encode()),
        lambda m: m.replace(b"PeterNeumann ", b"PeterNeumann  "),
        lambda m: m.replace(b"PeterNeumann ", b"Peter+Neumann "),
        lambda m: m.replace(b"PeterNeumann ", "Peter\u00a0Neumann ".encode()),
        lambda m: m.replace(b"PeterNeumann ", "Peter\u2003Neumann ".encode()),
        lambda m: m.replace(b"PeterNeumann ", b" "),
        lambda m: m[:-2] + b"\n",  # base64 without its padding
        lambda m: m[:-3] + b"B=\n",  # non-canonical base64 (trailing bits set)
        lambda m: m[: m.rindex(b" ") + 1] + base64.b64encode(b"1234") + b"\n",  # key ID only
        lambda m: m.replace(b"\n\n", b"\n"),
    ],
)
def test_malformed_notes_are_rejected(mangle: Callable[[bytes], bytes]) -> None:
    good = signed()
    bad = mangle(good)
    assert bad != good
    with pytest.raises(NoteFormatError):
        note.open_note(bad, [OURS])


def test_note_limits() -> None:
    big = "x" * (note.MAX_NOTE_SIZE) + "\n"
    with pytest.raises(note.NoteLimitError) as raised:
        note.open_note(msg(big, "\n", PETER_SIG), [PETER])
    assert isinstance(raised.value, LimitExceededError) and status.http_status(raised.value) == 413
    signers = [note.Ed25519Signer(f"k{i}", SEED) for i in range(note.MAX_SIGNATURES)]
    opened = note.open_note(note.sign_note(TEXT, signers), [s.verifier() for s in signers])
    assert len(opened.signatures) == note.MAX_SIGNATURES


def test_text_may_hold_blank_lines_and_the_last_one_splits() -> None:
    text = "a\n\nb\n\n\nc\n"
    opened = note.open_note(signed(text), [OURS])
    assert opened.text == text
    assert note.open_note(signed("\n"), [OURS]).text == "\n"
    assert note.open_note(signed("a\n\n"), [OURS]).text == "a\n\n"


def test_ambiguous_verifiers() -> None:
    @dataclass(frozen=True)
    class Impostor:
        name: str
        key_id: bytes

        def verify(self, message: bytes, signature: bytes) -> bool:
            return True

    impostor = Impostor(PETER.name, PETER.key_id)
    with pytest.raises(note.AmbiguousKeyError):
        note.open_note(msg(TEXT, "\n", PETER_SIG), [PETER, impostor])
    assert note.open_note(msg(TEXT, "\n", ENOCH_SIG), [ENOCH, PETER, impostor]).signatures
    assert note.open_note(msg(TEXT, "\n", PETER_SIG), [PETER, PETER]).signatures  # the same key twice


def test_sign_note_rejections() -> None:
    signer = note.Ed25519Signer("PeterNeumann", SEED)
    for text in ("abc", "a\rb\n", "a\x01\n", ""):
        with pytest.raises(ValueError):
            note.sign_note(text, [signer])
    with pytest.raises(ValueError):
        note.sign_note(TEXT, [])
    with pytest.raises(ValueError):
        note.sign_note(TEXT, [], existing=[note.Signature("a+b", b"1234", b"sig")])
    for name in ("", "a b", "a+b", "a\u2028b"):
        with pytest.raises(ValueError):
            note.Ed25519Signer(name, SEED)
    with pytest.raises(ValueError):
        note.Ed25519Signer("a", SEED[:31])


@FAST
@given(st.binary(max_size=400))
def test_open_note_any_bytes(data: bytes) -> None:
    with contextlib.suppress(NoteFormatError, NoVerifiedSignatureError, InvalidSignatureError):
        note.open_note(data, [PETER, ENOCH])


@FAST
@given(st.integers(0, 250), st.integers(0, 255), st.data())
def test_open_note_mutated_note(position: int, value: int, data: st.DataObject) -> None:
    good = bytearray(msg(TEXT, "\n", PETER_SIG, ENOCH_SIG))
    good[position % len(good)] = value
    extra = data.draw(st.sampled_from(["", "\n", "— x AAAAAA==\n", "\n\n"]))
    try:
        opened = note.open_note(bytes(good) + extra.encode(), [PETER])
    except PrivprocError as error:
        assert isinstance(error, (NoteFormatError, NoVerifiedSignatureError, InvalidSignatureError))
        return
    assert opened.signatures


# --- keys and cosignatures ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", [note.ALG_ED25519, note.ALG_COSIGNATURE_V1])
def test_generate_key_round_trip(alg: int) -> None:
    skey, vkey = note.generate_key("example.com/witness", alg)
    signer = note.parse_signer_key(skey)
    verifier = note.parse_verifier_key(vkey)
    assert signer.verifier() == verifier and verifier.alg == alg
    assert vkey.split("+")[1] == note.key_id("example.com/witness", alg, verifier.public_key).hex()
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == alg
    opened = note.open_note(note.sign_note(TEXT, [signer]), [verifier])
    assert opened.signatures[0].key_id == verifier.key_id
    with pytest.raises(ValueError):
        note.generate_key("x", 0x02)


def test_cosignature_v1_round_trip() -> None:
    witness = note.CosignatureV1Signer("witness.example/w1", SEED, clock=lambda: 1679315147.9)
    verifier = witness.verifier()
    assert type(verifier) is note.CosignatureV1Verifier
    assert verifier.key_id == note.key_id("witness.example/w1", 0x04, witness.public_key)
    body = C2SP["checkpoint_body"]
    signature = witness.sign(body.encode())
    assert signature[:8] == (1679315147).to_bytes(8, "big") and len(signature) == 72
    # The signed message is the spec's: header, time line, then the checkpoint body.
    plain = note.Ed25519Verifier("witness.example/w1", witness.public_key)
    assert plain.verify(f"cosignature/v1\ntime 1679315147\n{body}".encode(), signature[8:])

    log = note.Ed25519Signer(C2SP["checkpoint_origin"], SEED[::-1])
    by_log = note.sign_note(body, [log])
    cosigned = note.sign_note(body, [witness], existing=note.open_note(by_log, [log.verifier()]).signatures)
    opened = note.open_note(cosigned, [log.verifier(), verifier])
    assert [s.name for s in opened.signatures] == [C2SP["checkpoint_origin"], "witness.example/w1"]
    assert note.cosignature_timestamp(opened.signatures[1]) == 1679315147

    # The timestamp is signed; the plain Ed25519 type of the same key does not verify it.
    stamp = bytearray(signature)
    stamp[7] ^= 1
    forged = note.Signature(witness.name, witness.key_id, bytes(stamp))
    with pytest.raises(InvalidSignatureError):
        note.open_note(msg(body, "\n", forged.line(), "\n"), [verifier])
    with pytest.raises(NoVerifiedSignatureError):
        note.open_note(cosigned, [plain])
    too_late = (1 << 63).to_bytes(8, "big") + signature[8:]
    assert not verifier.verify(body.encode(), too_late)
    with pytest.raises(ValueError):
        witness.sign_at(b"x", 1 << 63)


def test_cosignature_covers_extension_lines() -> None:
    witness = note.CosignatureV1Signer("w", SEED, clock=lambda: 5)
    signed_note = note.sign_note(
        "test\n123\nf+7CoKgXKE/tNys9TTXcr/ad6U/K3xvznmzew9y6SP0=\nExtendo\n", [witness]
    )
    assert note.open_note(signed_note, [witness.verifier()]).signatures
    with pytest.raises(InvalidSignatureError):
        note.open_note(signed_note.replace(b"Extendo", b"Extend@"), [witness.verifier()])


def test_transparency_dev_cosignature_vectors() -> None:
    keys = G["cosigv1_vkeys"]
    assert type(note.parse_verifier_key(keys["ed25519"])) is note.Ed25519Verifier
    cosigner = note.parse_verifier_key(keys["cosignature_v1"])
    assert type(cosigner) is note.CosignatureV1Verifier and cosigner.key_string() == keys["cosignature_v1"]
    for bad in G["cosigv1_bad_vkeys"]:
        with pytest.raises(KeyFormatError):
            note.parse_verifier_key(bad)
    vector = G["cosigv1_timestamp"]
    raw = base64.b64decode(vector["signature"])
    assert note.cosignature_timestamp(note.Signature("w", raw[:4], raw[4:])) == vector["timestamp"]
    raw = base64.b64decode(vector["not_a_cosignature"])
    with pytest.raises(NoteFormatError):
        note.cosignature_timestamp(note.Signature("w", raw[:4], raw[4:]))


def test_c2sp_examples_parse() -> None:
    with pytest.raises(NoVerifiedSignatureError) as raised:
        note.open_note(C2SP["cosigned_checkpoint"].encode(), [PETER])
    opened = raised.value.note
    assert opened is not None and opened.text == C2SP["checkpoint_body"]
    assert [s.name for s in opened.unverified] == [C2SP["checkpoint_origin"], "witness.example.com/w1"]
    assert note.cosignature_timestamp(opened.unverified[1]) == C2SP["cosignature_timestamp"]
    checkpoint = Checkpoint.parse(opened.text)
    assert checkpoint.origin == C2SP["checkpoint_origin"] and checkpoint.size == C2SP["checkpoint_size"]
    assert checkpoint.encode() == C2SP["checkpoint_body"]
    with pytest.raises(NoVerifiedSignatureError) as raised:
        note.open_note(C2SP["signed_note"].encode(), [])
    assert raised.value.note is not None and raised.value.note.text == C2SP["signed_note_text"]


# --- checkpoints --------------------------------------------------------------------------------

ROOT = leaf_hash(b"root")


def test_checkpoint_encode_parse() -> None:
    checkpoint = Checkpoint("example.com/log", 0, ROOT)
    assert checkpoint.encode() == f"example.com/log\n0\n{base64.b64encode(ROOT).decode()}\n"
    assert Checkpoint.parse(checkpoint.encode()) == checkpoint
    with_ext = Checkpoint("o", 2**64 - 1, ROOT, ("ext one", "ext\u2014two"))
    assert Checkpoint.parse(with_ext.encode().encode()) == with_ext


def test_open_checkpoint() -> None:
    log = note.Ed25519Signer("example.com/log", SEED)
    checkpoint = Checkpoint("example.com/log", 42, ROOT)
    signed_checkpoint = note.sign_note(checkpoint.encode(), [log])
    opened, signed_note = note.open_checkpoint(signed_checkpoint, "example.com/log", [log.verifier()])
    assert opened == checkpoint and signed_note.signatures[0].name == "example.com/log"
    with pytest.raises(note.WrongOriginError):
        note.open_checkpoint(signed_checkpoint, "example.com/other", [log.verifier()])
    with pytest.raises(CheckpointFormatError):
        note.open_checkpoint(
            note.sign_note("example.com/log\n42\n", [log]), "example.com/log", [log.verifier()]
        )


B64_ROOT = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        f"o\n1\n{B64_ROOT}",  # no final newline
        "o\n1\n",
        f"\n1\n{B64_ROOT}\n",  # empty origin
        f"o\n01\n{B64_ROOT}\n",
        f"o\n00\n{B64_ROOT}\n",
        f"o\n+1\n{B64_ROOT}\n",
        f"o\n-1\n{B64_ROOT}\n",
        f"o\n 1\n{B64_ROOT}\n",
        f"o\n1 \n{B64_ROOT}\n",
        f"o\n1_000\n{B64_ROOT}\n",
        f"o\n\u0661\n{B64_ROOT}\n",  # Arabic-Indic digit one
        f"o\n0x10\n{B64_ROOT}\n",
        f"o\n18446744073709551616\n{B64_ROOT}\n",  # 2^64
        f"o\n{'1' * 5000}\n{B64_ROOT}\n",
        f"o\n\n{B64_ROOT}\n",
        f"o\n1\n{B64_ROOT[:-1]}\n",
        f"o\n1\n{B64_ROOT[:-2]}B=\n",  # non-canonical trailing bits
        f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"o\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",
        f"o\n1\n{base64.urlsafe_b64encode(bytes([0xFB] * 32)).decode()}\n",
        f"o\n1\n{B64_ROOT}\n\n",  # empty extension line
        f"o\n1\n{B64_ROOT}\next\n\n",
        f"o\r\n1\r\n{B64_ROOT}\r\n",
        f"o\x00\n1\n{B64_ROOT}\n",
        f"o\n1\n{B64_ROOT}\nbad\text\n",
        f"\ud800\n1\n{B64_ROOT}\n",
    ],
)
def test_checkpoint_parse_rejects(text: str) -> None:
    with pytest.raises(CheckpointFormatError):
        Checkpoint.parse(text)


def test_checkpoint_rejects_bad_bytes_and_fields() -> None:
    with pytest.raises(CheckpointFormatError):
        Checkpoint.parse(b"\xff\n1\n" + B64_ROOT.encode() + b"\n")
    for args in (("", 1, ROOT), ("o\n", 1, ROOT), ("o", -1, ROOT), ("o", 2**64, ROOT), ("o", 1, ROOT[:5])):
        with pytest.raises(ValueError):
            Checkpoint(*args)
    with pytest.raises(ValueError):
        Checkpoint("o", 1, ROOT, ("",))


lines = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=30)


@FAST
@given(lines, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), st.lists(lines, max_size=3))
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(checkpoint.encode()) == checkpoint


@FAST
@given(st.binary(max_size=200) | st.text(alphabet="o0123456789\n=+/AQgw ", max_size=80).map(str.encode))
def test_checkpoint_parse_any_bytes(data: bytes) -> None:
    try:
        checkpoint = Checkpoint.parse(data)
    except CheckpointFormatError:
        return
    assert checkpoint.encode().encode() == data
