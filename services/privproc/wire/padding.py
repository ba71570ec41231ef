"""Size buckets, sans I/O: whoever sees a padded message learns its bucket, not its length.

Two layers are padded, each to its own set of sizes:

* :data:`FRAME_BUCKETS` — the ``ProcessRequest`` / ``ProcessResponse``
  frames inside the RA-TLS session (:mod:`privproc.wire.session`):
  powers of two from 1 KiB to 128 KiB. The application data TLS encrypts is
  exactly one bucket, so the gateway, which relays the TLS records, learns
  the bucket only.
* :data:`MESSAGE_BUCKETS` — the Binary HTTP messages inside OHTTP (the
  client's requests, every answer of the gateway: summaries, refusals,
  errors, 401 challenges): each frame bucket plus :data:`MESSAGE_HEADROOM`.
  RFC 9458 encapsulation adds a fixed overhead, so the relay learns the
  bucket only.

Why these sets: a power-of-two ladder leaks at most three bits per message
(eight sizes) and costs less than twice the length; the 1 KiB floor makes
every short draft, answer, refusal and error the same size. The message
buckets sit a fixed 1 KiB above the frame buckets rather than on the next
power of two because a bucketed frame, once wrapped in TLS records (22 bytes
per 16 KiB record, plus the client's Finished or the server's close_notify)
and in the Binary HTTP control data and headers, grows by a few hundred
bytes: the headroom keeps that from doubling its size on the wire.
"""

from __future__ import annotations

from collections.abc import Sequence

from privproc.errors import LimitExceededError

__all__ = [
    "FRAME_BUCKETS",
    "MESSAGE_BUCKETS",
    "MESSAGE_HEADROOM",
    "STREAM_FRAME_BUCKETS",
    "bucket_for",
    "pad_with_zeros",
]

#: Sizes of a framed message inside the RA-TLS session (bytes): 1 KiB … 128 KiB.
FRAME_BUCKETS: tuple[int, ...] = tuple(1 << k for k in range(10, 18))

#: Sizes of one frame of a streamed answer (a ``ProcessChunk``): 256 B, then the frame buckets.
#: A tick's worth of text fits the smallest, so text frames and padding frames look alike.
STREAM_FRAME_BUCKETS: tuple[int, ...] = (256, *FRAME_BUCKETS)

#: Room for TLS record overhead and Binary HTTP framing around one frame (bytes).
MESSAGE_HEADROOM = 1 << 10

#: Sizes of a Binary HTTP message inside OHTTP (bytes): 2, 3, 5, 9, 17, 33, 65, 129 KiB.
MESSAGE_BUCKETS: tuple[int, ...] = tuple(size + MESSAGE_HEADROOM for size in FRAME_BUCKETS)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest of ``buckets`` (ascending) that holds ``length`` bytes.

    Raises :class:`~privproc.errors.LimitExceededError` if none does: a
    message is never sent at its own length.
    """
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError("length must be a non-negative integer")
    for size in buckets:
        if length <= size:
            return size
    raise LimitExceededError("message larger than the largest size bucket")


def pad_with_zeros(data: bytes, buckets: Sequence[int]) -> bytes:
    """``data`` followed by zero bytes up to its bucket.

    Only for formats whose padding is trailing zero bytes, such as Binary
    HTTP (RFC 9292, Section 3.8).
    """
    return data + bytes(bucket_for(len(data), buckets) - len(data))
