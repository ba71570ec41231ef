"""Chunked OHTTP (draft-ietf-ohai-chunked-ohttp-08): the draft's vectors, round trips, attacks, fuzzing.

The draft has one example (Appendix A), copied in
``tests/vectors/draft-ietf-ohai-chunked-ohttp-08.json``. It has no vectors
for the attacks; those streams are derived here from RFC 9458 Appendix A's
gateway key (``tests/vectors/rfc9458-appendixA.json``) and fixed client
ephemeral keys, so every byte of them is reproducible.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privproc.errors import CryptoError, LimitExceededError, TruncatedError
from privproc.runtime.status import http_status
from privproc.wire import bhttp, hpke, ohttp, varint
from privproc.wire import ohttp_chunked as oc
from tests.support import load_vector

D = load_vector("draft-ietf-ohai-chunked-ohttp-08.json")
A = load_vector("rfc9458-appendixA.json")
h = bytes.fromhex

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- helpers --------------------------------------------------------------------


def draft_key() -> ohttp.GatewayKey:
    return ohttp.GatewayKey(
        config=ohttp.KeyConfig.decode(h(D["key_config"])), secret=h(D["server_x25519_sk"])
    )


def rfc9458_key() -> ohttp.GatewayKey:
    return ohttp.GatewayKey(
        config=ohttp.KeyConfig.decode(h(A["key_config"])), secret=h(A["server_x25519_sk"])
    )


def ephemeral(n: int) -> bytes:
    """A fixed client ephemeral secret per stream, so derived streams are reproducible."""
    return bytes([n]) * 32


def split_at(data: bytes, lengths: Sequence[int]) -> list[bytes]:
    out, start = [], 0
    for length in lengths:
        out.append(data[start : start + length])
        start += length
    assert start == len(data)
    return out


def frames(prefix: bytes, sealed_stream: bytes) -> tuple[bytes, list[bytes]]:
    """A stream cut into its prefix and each chunk with its length prefix (the final last)."""
    rest = sealed_stream[len(prefix) :]
    out = []
    while rest:
        length, end = varint.decode(rest)
        if length == 0:
            out.append(rest)
            break
        out.append(rest[: end + length])
        rest = rest[end + length :]
    return prefix, out


def deliver(
    opener: oc.RequestOpener | oc.ResponseOpener, pieces: Sequence[bytes]
) -> tuple[list[oc.Chunk], Exception | None]:
    """Feed ``pieces`` then the end of stream; every chunk delivered before a failure, and the failure."""
    delivered: list[oc.Chunk] = []
    try:
        for piece in [*pieces, None]:
            if piece is None:
                opener.receive_eof()
            else:
                opener.receive_data(piece)
            while isinstance(event := opener.next_event(), oc.Chunk):
                delivered.append(event)
    except oc.ChunkedOhttpError as err:
        return delivered, err
    assert isinstance(opener.next_event(), oc.End)
    return delivered, None


# Three non-final chunks and a final one: the stream the attacks tamper with.
PLAIN = [b"first chunk", b"second chunk", b"third", b"the final chunk"]


def request_stream(n: int = 1, plain: Sequence[bytes] = PLAIN) -> tuple[bytes, list[bytes], oc.RequestSealer]:
    """Request stream ``n``: its header, its chunks (each with its length prefix), its sealer."""
    sealer = oc.RequestSealer(rfc9458_key().config, ephemeral_secret=ephemeral(n))
    stream = b"".join(sealer.seal(p) for p in plain[:-1]) + sealer.finish(plain[-1])
    prefix, chunks = frames(stream[: ohttp.REQUEST_HEADER_SIZE + hpke.NENC], stream)
    return prefix, chunks, sealer


def response_stream(
    n: int = 1, nonce: int = 7, plain: Sequence[bytes] = PLAIN
) -> tuple[bytes, list[bytes], oc.RequestSealer]:
    """A response to request stream ``n``: its nonce, its chunks, and the request's sealer (to open it)."""
    prefix, chunks, sealer = request_stream(n)
    opener = request_opener()
    opener.feed(prefix + b"".join(chunks))
    response = opener.response_sealer(response_nonce=bytes([nonce]) * ohttp.RESPONSE_NONCE_LEN)
    stream = b"".join(response.seal(p) for p in plain[:-1]) + response.finish(plain[-1])
    response_prefix, response_chunks = frames(stream[: ohttp.RESPONSE_NONCE_LEN], stream)
    return response_prefix, response_chunks, sealer


def request_opener() -> oc.RequestOpener:
    return oc.RequestOpener(ohttp.Keyring([rfc9458_key()]))


def expected(count: int, plain: Sequence[bytes] = PLAIN) -> list[oc.Chunk]:
    return [oc.Chunk(p, final=i == len(plain) - 1) for i, p in enumerate(plain[:count])]


# --- the draft's example (Appendix A) ---------------------------------------------


def test_vector_request_is_reproduced_chunk_by_chunk() -> None:
    request = h(D["bhttp_request"])
    pieces = split_at(request, D["request_chunk_plaintext_lengths"])
    sealer = oc.RequestSealer(draft_key().config, ephemeral_secret=h(D["client_ephemeral_sk"]))
    out = [sealer.seal(piece) for piece in pieces[:-1]] + [sealer.finish(pieces[-1])]
    header, *chunks = D["encapsulated_request"]
    assert out == [h(header + chunks[0]), h(chunks[1]), h(chunks[2])]


def test_vector_info_secret_and_response_keys() -> None:
    config = draft_key().config
    header = ohttp.request_header(config, ohttp.SymmetricSuite(1, 1))
    info = oc.REQUEST_LABEL + b"\x00" + header
    assert info == h(D["hpke_info"])
    enc, ctx = hpke.setup_sender(config.public_key, info, ephemeral_secret=h(D["client_ephemeral_sk"]))
    assert enc == h(D["client_ephemeral_pk"])
    secret = ctx.export(oc.RESPONSE_LABEL, ohttp.RESPONSE_NONCE_LEN)
    assert secret == h(D["exported_secret"])
    nonce = h(D["encapsulated_response"][0])
    assert enc + nonce == h(D["response_salt"])
    key, aead_nonce = ohttp.response_keys(secret, enc, nonce)
    assert (key, aead_nonce) == (h(D["response_aead_key"]), h(D["response_aead_nonce"]))
    # Nonces of chunks 0, 1 and 2: aead_nonce XOR counter.
    for counter, chunk_nonce in enumerate(D["response_chunk_nonces"]):
        assert (int.from_bytes(aead_nonce, "big") ^ counter).to_bytes(12, "big") == h(chunk_nonce)


@pytest.mark.parametrize("split", [1, 7, 1000], ids=lambda n: f"{n}-byte pieces")
def test_vector_request_opens_at_the_gateway(split: int) -> None:
    stream = h("".join(D["encapsulated_request"]))
    opener = oc.RequestOpener(ohttp.Keyring([draft_key()]))
    delivered, error = deliver(opener, [stream[i : i + split] for i in range(0, len(stream), split)])
    assert error is None and opener.complete
    pieces = split_at(h(D["bhttp_request"]), D["request_chunk_plaintext_lengths"])
    assert delivered == [oc.Chunk(pieces[0]), oc.Chunk(pieces[1]), oc.Chunk(b"", final=True)]
    assert bhttp.decode_request(b"".join(c.data for c in delivered)) == bhttp.Request(
        "GET", "https", "example.com", "/"
    )


def test_vector_response_is_reproduced_and_opened() -> None:
    opener = oc.RequestOpener(ohttp.Keyring([draft_key()]))
    opener.feed(h("".join(D["encapsulated_request"])))
    nonce, *chunks = D["encapsulated_response"]
    sealer = opener.response_sealer(response_nonce=h(nonce))
    pieces = split_at(h(D["bhttp_response"]), D["response_chunk_plaintext_lengths"])
    out = [sealer.seal(pieces[0]), sealer.seal(pieces[1]), sealer.finish(pieces[2])]
    assert out == [h(nonce + chunks[0]), h(chunks[1]), h(chunks[2])]

    client = oc.RequestSealer(draft_key().config, ephemeral_secret=h(D["client_ephemeral_sk"]))
    delivered, error = deliver(client.response_opener(), [h(nonce), *map(h, chunks)])
    assert error is None
    assert [c.data for c in delivered] == pieces
    assert bhttp.decode_response(b"".join(c.data for c in delivered)) == bhttp.Response(200)


def test_chunked_and_plain_ohttp_do_not_open_as_each_other() -> None:
    key = rfc9458_key()
    delivered, error = deliver(request_opener(), [h(A["encapsulated_request"])])
    assert isinstance(error, oc.ChunkedOhttpError) and delivered == []
    # A one-chunk chunked request, its zero length dropped, is framed like a plain one.
    single = oc.RequestSealer(key.config).finish(b"\x00")
    with pytest.raises(ohttp.KeyConfigRejectedError):
        ohttp.Keyring([key]).decapsulate_request(
            single[: ohttp.REQUEST_HEADER_SIZE + hpke.NENC] + single[-17:]
        )


# --- round trips under any chunking -------------------------------------------------

plaintexts = st.lists(st.binary(min_size=1, max_size=300), max_size=6)


@FAST
@given(plaintexts, st.binary(max_size=300), st.integers(1, 64), st.data())
def test_round_trip_under_any_split(
    pieces: list[bytes], last: bytes, max_chunk: int, data: st.DataObject
) -> None:
    sealer = oc.RequestSealer(rfc9458_key().config, max_chunk=max_chunk)
    stream = b"".join(sealer.seal(p) for p in pieces) + sealer.finish(last)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    split = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    opener = request_opener()
    delivered, error = deliver(opener, split)
    assert error is None
    assert b"".join(c.data for c in delivered) == b"".join(pieces) + last
    assert all(0 < len(c.data) <= max_chunk for c in delivered[:-1])
    assert [c.final for c in delivered] == [False] * (len(delivered) - 1) + [True]

    # And the answer, the same way.
    response = opener.response_sealer(max_chunk=max_chunk)
    answer = b"".join(response.seal(p) for p in reversed(pieces)) + response.finish(last)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(answer)), max_size=12)))
    split = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True)]
    delivered, error = deliver(sealer.response_opener(), split)
    assert error is None
    assert b"".join(c.data for c in delivered) == b"".join(reversed(pieces)) + last


def test_streamed_binary_http_request_through_chunked_ohttp() -> None:
    head = bhttp.encode_request_head(
        bhttp.Request("POST", "https", "gw.example", "/v1/sessions", (("a", "b"),))
    )
    sealer = oc.RequestSealer(rfc9458_key().config)
    stream = (
        sealer.seal(head)
        + sealer.seal(bhttp.encode_content_chunk(b"hello "))
        + sealer.finish(bhttp.encode_content_chunk(b"world") + bhttp.encode_end())
    )
    opener = request_opener()
    decoder = bhttp.MessageDecoder(response=False)
    events: list[bhttp.Event] = []
    for byte in range(len(stream)):
        for chunk in opener.feed(stream[byte : byte + 1]):
            decoder.receive_data(chunk.data)
            events += decoder.events()
    # Content arrived before the stream ended.
    assert events[0] == bhttp.RequestHead("POST", "https", "gw.example", "/v1/sessions", (("a", "b"),))
    assert bhttp.ContentChunk(b"hello ") in events
    for chunk in opener.feed_eof():
        decoder.receive_data(chunk.data)
    decoder.receive_eof()
    events += decoder.events()
    assert b"".join(e.data for e in events if isinstance(e, bhttp.ContentChunk)) == b"hello world"
    assert events[-1] == bhttp.EndOfMessage()


def test_sealer_splits_at_the_chunk_bound_and_never_seals_an_empty_non_final_chunk() -> None:
    sealer = oc.RequestSealer(rfc9458_key().config, max_chunk=4)
    first = sealer.seal(b"")
    assert len(first) == ohttp.REQUEST_HEADER_SIZE + hpke.NENC  # the header, no chunk
    assert sealer.seal(b"") == b""
    body = sealer.seal(b"abcdefghij")  # 4 + 4 + 2
    assert [len(c) for c in frames(b"", body)[1]] == [1 + 20, 1 + 20, 1 + 18]
    end = sealer.finish(b"abcde")  # 4, then a final chunk of 1
    assert [len(c) for c in frames(b"", end)[1]] == [1 + 20, 1 + 17]
    assert sealer.finished
    with pytest.raises(ValueError, match="finished"):
        sealer.seal(b"x")
    with pytest.raises(ValueError, match="finished"):
        sealer.finish()


def test_receivers_accept_chunks_of_2_14_bytes() -> None:
    with pytest.raises(ValueError, match="2\\^14"):
        oc.RequestOpener(ohttp.Keyring([rfc9458_key()]), max_chunk=oc.DEFAULT_MAX_CHUNK - 1)
    big = bytes(range(256)) * 64
    assert len(big) == oc.DEFAULT_MAX_CHUNK
    sealer = oc.RequestSealer(rfc9458_key().config)
    stream = sealer.seal(big) + sealer.finish(big)
    delivered, error = deliver(request_opener(), [stream])
    assert error is None and [c.data for c in delivered] == [big, big]


def test_message_bound_applies_to_sealer_and_opener() -> None:
    sealer = oc.RequestSealer(rfc9458_key().config, max_message=10)
    sealer.seal(b"0123456789")
    with pytest.raises(oc.ChunkedLimitError):
        sealer.seal(b"x")
    big = oc.RequestSealer(rfc9458_key().config)
    stream = big.seal(b"0123456789") + big.finish(b"x")
    opener = oc.RequestOpener(ohttp.Keyring([rfc9458_key()]), max_message=10)
    delivered, error = deliver(opener, [stream])
    assert isinstance(error, oc.ChunkedLimitError) and [c.data for c in delivered] == [b"0123456789"]


# --- attacks: each fails closed, nothing past the tampered point is delivered --------


def _open_request(prefix: bytes, chunks: Sequence[bytes]) -> tuple[list[oc.Chunk], Exception | None]:
    return deliver(request_opener(), [prefix, *chunks])


def _open_response(
    sealer: oc.RequestSealer, prefix: bytes, chunks: Sequence[bytes]
) -> tuple[list[oc.Chunk], Exception | None]:
    return deliver(sealer.response_opener(), [prefix, *chunks])


def test_untampered_streams_open() -> None:
    prefix, chunks, sealer = request_stream()
    assert _open_request(prefix, chunks) == (expected(4), None)
    prefix, chunks, sealer = response_stream()
    assert _open_response(sealer, prefix, chunks) == (expected(4), None)


@pytest.mark.parametrize("side", ["request", "response"])
def test_truncation_at_every_byte(side: str) -> None:
    prefix, chunks, sealer = request_stream() if side == "request" else response_stream()
    stream = prefix + b"".join(chunks)
    ends = [len(prefix)]
    for chunk in chunks[:-1]:
        ends.append(ends[-1] + len(chunk))
    for cut in range(len(stream)):
        opener = request_opener() if side == "request" else sealer.response_opener()
        delivered, error = deliver(opener, [stream[:cut]])
        assert isinstance(error, oc.ChunkedOhttpError), cut
        whole = sum(1 for end in ends[1:] if end <= cut)
        assert delivered == expected(whole), cut
        assert not opener.complete


@pytest.mark.parametrize("side", ["request", "response"])
def test_dropping_the_final_chunk_is_truncation(side: str) -> None:
    prefix, chunks, sealer = request_stream() if side == "request" else response_stream()
    opener = request_opener() if side == "request" else sealer.response_opener()
    delivered, error = deliver(opener, [prefix, *chunks[:-1]])
    assert isinstance(error, oc.ChunkedTruncatedError) and isinstance(error, TruncatedError)
    assert delivered == expected(3)


def _attacked(
    side: str, tamper: Callable[[list[bytes]], list[bytes]], n: int = 1
) -> tuple[list[oc.Chunk], Exception | None]:
    if side == "request":
        prefix, chunks, _ = request_stream(n)
        return _open_request(prefix, tamper(list(chunks)))
    prefix, chunks, sealer = response_stream(n)
    return _open_response(sealer, prefix, tamper(list(chunks)))


SIDES = pytest.mark.parametrize("side", ["request", "response"])


@SIDES
@pytest.mark.parametrize("i", [0, 1, 2])
def test_reordering_two_chunks(side: str, i: int) -> None:
    def swap(chunks: list[bytes]) -> list[bytes]:
        chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
        return chunks

    delivered, error = _attacked(side, swap)
    assert isinstance(error, CryptoError) and delivered == expected(i)


@SIDES
@pytest.mark.parametrize("i", [0, 1, 2])
def test_dropping_a_chunk(side: str, i: int) -> None:
    delivered, error = _attacked(side, lambda chunks: chunks[:i] + chunks[i + 1 :])
    assert isinstance(error, CryptoError) and delivered == expected(i)


@SIDES
@pytest.mark.parametrize("i", [0, 1, 2])
def test_replaying_a_chunk(side: str, i: int) -> None:
    delivered, error = _attacked(side, lambda chunks: chunks[: i + 1] + chunks[i:])
    assert isinstance(error, CryptoError) and delivered == expected(i + 1)


@SIDES
@pytest.mark.parametrize("i", [0, 1, 2, 3])
def test_splicing_a_chunk_from_another_stream(side: str, i: int) -> None:
    other = request_stream(2)[1] if side == "request" else response_stream(2, nonce=9)[1]
    delivered, error = _attacked(side, lambda chunks: [*chunks[:i], other[i], *chunks[i + 1 :]])
    assert isinstance(error, CryptoError) and delivered == expected(i)


@SIDES
def test_splicing_two_streams_at_a_chunk_boundary(side: str) -> None:
    other = request_stream(2)[1] if side == "request" else response_stream(2, nonce=9)[1]
    delivered, error = _attacked(side, lambda chunks: chunks[:2] + other[2:])
    assert isinstance(error, CryptoError) and delivered == expected(2)


def test_splicing_a_response_into_another_response_to_the_same_request() -> None:
    # Same request context, another response nonce: the keys differ.
    prefix, chunks, sealer = response_stream(1, nonce=7)
    _, others, _ = response_stream(1, nonce=8)
    delivered, error = _open_response(sealer, prefix, chunks[:1] + others[1:])
    assert isinstance(error, oc.ChunkedResponseDecryptError) and delivered == expected(1)


@SIDES
def test_a_chunk_after_the_final_one(side: str) -> None:
    delivered, error = _attacked(side, lambda chunks: [*chunks, chunks[0]])
    assert isinstance(error, CryptoError) and delivered == expected(3)


@SIDES
@pytest.mark.parametrize("i", [0, 1, 2])
def test_marking_a_non_final_chunk_final(side: str, i: int) -> None:
    def mark(chunks: list[bytes]) -> list[bytes]:
        _, start = varint.decode(chunks[i])
        return [*chunks[:i], b"\x00" + chunks[i][start:]]

    delivered, error = _attacked(side, mark)
    assert isinstance(error, CryptoError) and delivered == expected(i)


@SIDES
def test_marking_the_final_chunk_non_final(side: str) -> None:
    def unmark(chunks: list[bytes]) -> list[bytes]:
        sealed = chunks[-1][1:]
        return [*chunks[:-1], varint.encode(len(sealed)) + sealed]

    delivered, error = _attacked(side, unmark)
    assert isinstance(error, CryptoError) and delivered == expected(3)


@SIDES
def test_every_bit_flip_fails_at_the_chunk_it_hits(side: str) -> None:
    prefix, chunks, sealer = request_stream() if side == "request" else response_stream()
    stream = prefix + b"".join(chunks)
    starts = [len(prefix)]
    for chunk in chunks:
        starts.append(starts[-1] + len(chunk))
    for position in range(len(stream)):
        hit = sum(1 for start in starts[:-1] if start <= position)  # 0: the prefix
        for bit in range(8):
            flipped = bytearray(stream)
            flipped[position] ^= 1 << bit
            opener = request_opener() if side == "request" else sealer.response_opener()
            delivered, error = deliver(opener, [bytes(flipped)])
            assert isinstance(error, oc.ChunkedOhttpError), (position, bit)
            assert delivered == expected(max(hit - 1, 0)), (position, bit)


def test_an_authentic_empty_non_final_chunk_is_a_decryption_error() -> None:
    # Built with the HPKE context directly: the sealer refuses to make one.
    config = rfc9458_key().config
    header = ohttp.request_header(config, ohttp.SymmetricSuite(1, 1))
    enc, ctx = hpke.setup_sender(config.public_key, oc.REQUEST_LABEL + b"\x00" + header)
    first = ctx.seal(b"data")
    empty = ctx.seal(b"")
    final = ctx.seal(b"", oc.FINAL_AAD)
    stream = (
        header + enc + varint.encode(len(first)) + first + varint.encode(len(empty)) + empty + b"\x00" + final
    )
    delivered, error = deliver(request_opener(), [stream])
    assert isinstance(error, oc.ChunkAuthenticationError) and delivered == [oc.Chunk(b"data")]


def test_first_chunk_failures_say_fetch_the_key_again() -> None:
    prefix, chunks, _ = request_stream()
    unknown = bytes([prefix[0] ^ 0xFF]) + prefix[1:]
    for stream in (unknown + b"".join(chunks), prefix + chunks[1]):
        _, error = deliver(request_opener(), [stream])
        assert isinstance(error, oc.ChunkedKeyRejectedError) and error.reason == "ohttp_key"
    _, error = deliver(request_opener(), [prefix, chunks[0], chunks[2]])
    assert isinstance(error, oc.ChunkAuthenticationError) and not isinstance(
        error, ohttp.KeyConfigRejectedError
    )


def test_non_minimal_length_encodings_are_accepted() -> None:
    prefix, chunks, _ = request_stream()
    relengthed = []
    for chunk in chunks[:-1]:
        length, start = varint.decode(chunk)
        relengthed.append((0xC0 << 56 | length).to_bytes(8, "big") + chunk[start:])
    zero_final = bytes([0x40, 0]) + chunks[-1][1:]
    assert _open_request(prefix, [*relengthed, zero_final]) == (expected(4), None)


@pytest.mark.parametrize("length", [oc.DEFAULT_MAX_CHUNK + hpke.NT + 1, varint.MAX_VALUE])
def test_oversized_length_prefix_fails_before_buffering(length: int) -> None:
    prefix, chunks, _ = request_stream()
    opener = request_opener()
    tracemalloc.start()
    try:
        opener.receive_data(prefix + chunks[0] + varint.encode(length))
        assert opener.next_event() == oc.Chunk(PLAIN[0])
        with pytest.raises(oc.ChunkedLimitError) as caught:
            opener.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(caught.value, LimitExceededError) and http_status(caught.value) == 413
    assert peak < 64 << 10
    with pytest.raises(oc.ChunkedLimitError):  # and it stays failed
        opener.receive_data(b"more")


def test_an_oversized_final_chunk_fails_as_it_arrives() -> None:
    prefix, _chunks, _ = request_stream()
    opener = request_opener()
    opener.receive_data(prefix + b"\x00")
    assert opener.next_event() is oc.NEED_DATA
    opener.receive_data(bytes(oc.DEFAULT_MAX_CHUNK + hpke.NT))
    with pytest.raises(oc.ChunkedLimitError):
        opener.receive_data(b"\x00")


def test_feed_after_failure_and_data_after_eof() -> None:
    prefix, _chunks, _ = request_stream()
    opener = request_opener()
    opener.receive_data(prefix)
    opener.receive_eof()
    with pytest.raises(oc.ChunkedTruncatedError):
        opener.next_event()
    with pytest.raises(oc.ChunkedTruncatedError):
        opener.next_event()
    with pytest.raises(oc.ChunkedTruncatedError):
        opener.response_sealer()
    fresh = request_opener()
    with pytest.raises(ValueError, match="header"):
        fresh.response_sealer()
    fresh.receive_eof()
    with pytest.raises(ValueError, match="end of the stream"):
        fresh.receive_data(b"x")


def test_errors_map_to_statuses_and_say_nothing_of_the_content() -> None:
    assert http_status(oc.ChunkedTruncatedError("x")) == 400
    assert http_status(oc.ChunkAuthenticationError("x")) == 400
    assert http_status(oc.ChunkedLimitError("x")) == 413
    assert oc.ChunkedKeyRejectedError("x").reason == "ohttp_key"
    assert oc.ChunkedResponseDecryptError("x").reason == "response_decrypt"
    prefix, chunks, _ = request_stream(plain=[b"SECRET-CONTENT", b"MORE-SECRET"])
    _, error = _open_request(prefix, chunks[1:])
    assert error is not None and "SECRET" not in str(error) and "SECRET" not in repr(oc.Chunk(b"SECRET"))


# --- fuzzing ----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 50))
def test_random_bytes_only_ever_raise_the_typed_error(data: bytes, piece: int) -> None:
    _, _, sealer = request_stream()
    for opener in (request_opener(), sealer.response_opener()):
        delivered, error = deliver(opener, [data[i : i + piece] for i in range(0, len(data), piece)])
        assert isinstance(error, oc.ChunkedOhttpError)
        assert delivered == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_random_chunks_after_a_valid_prefix_only_ever_raise_the_typed_error(data: bytes, piece: int) -> None:
    prefix, _, sealer = request_stream()
    response_prefix = response_stream()[0]
    for opener, start in ((request_opener(), prefix), (sealer.response_opener(), response_prefix)):
        stream = start + data
        delivered, error = deliver(opener, [stream[i : i + piece] for i in range(0, len(stream), piece)])
        assert isinstance(error, oc.ChunkedOhttpError)
        assert delivered == []


def test_byte_at_a_time_is_linear() -> None:
    big = bytes(oc.DEFAULT_MAX_CHUNK)
    sealer = oc.RequestSealer(rfc9458_key().config)
    stream = b"".join(sealer.seal(big) for _ in range(3)) + sealer.finish(big)
    opener = request_opener()
    started = time.perf_counter()
    total = 0
    for i in range(len(stream)):
        total += sum(len(c.data) for c in opener.feed(stream[i : i + 1]))
    total += sum(len(c.data) for c in opener.feed_eof())
    elapsed = time.perf_counter() - started
    assert total == 4 * len(big)
    # ~65,600 one-byte feeds; quadratic buffering would take minutes.
    assert elapsed < 10


# --- the Incremental field (RFC 10036) ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        ("?1", True),
        (" ?1 ", True),
        ('?1;a=1;b;c="x";d=tok;e=?0;f=:AA==:;g=1.5', True),
        ("?0", False),
        ("1", False),
        ("?1, ?1", False),
        ("?2", False),
        ("?1;A=1", False),
        ("true", False),
        ("", False),
        (None, False),
    ],
)
def test_incremental_field(value: str | None, wanted: bool) -> None:
    assert oc.incremental_requested(value) is wanted
    assert oc.incremental_requested(oc.INCREMENTAL_TRUE)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_incremental_field_parser_takes_any_text(value: str) -> None:
    started = time.perf_counter()
    wanted = oc.incremental_requested(value)
    assert time.perf_counter() - started < 0.1
    assert wanted == (oc.incremental_requested(value) and value.strip(" ").startswith("?1"))
