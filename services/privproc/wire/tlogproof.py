"""C2SP tlog-proof: an offline-verifiable proof that an entry is in a log — sans-I/O.

::

    c2sp.org/tlog-proof@v1
    extra <base64 opaque data>        (optional; here: the entry itself)
    index <n>
    <base64 hash>                     (inclusion proof, leaf sibling first)
    ...
                                      (empty line)
    <signed checkpoint note, verbatim>

The extra data is not authenticated by the format: privproc puts the entry
there and the verifier hashes it into the leaf the inclusion proof checks,
so a wrong entry fails the proof.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from privproc.errors import WireError

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64
MAX_PROOF_BYTES = 64 << 10
_DECIMAL = re.compile(r"^(0|[1-9][0-9]{0,19})$")


class TlogProofFormatError(WireError):
    """Bytes that are not a tlog-proof."""


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TlogProofFormatError("invalid base64 in proof") from None


@dataclass(frozen=True)
class TlogProof:
    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes  # the signed note, verbatim
    extra: bytes | None = None

    def encode(self) -> bytes:
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode() for h in self.hashes)
        return ("\n".join(lines) + "\n\n").encode() + self.checkpoint

    @classmethod
    def decode(cls, data: bytes) -> TlogProof:
        if len(data) > MAX_PROOF_BYTES:
            raise TlogProofFormatError("proof too large")
        head, sep, checkpoint = data.partition(b"\n\n")
        if not sep or not checkpoint:
            raise TlogProofFormatError("proof lacks its checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise TlogProofFormatError("proof header is not ASCII") from None
        if lines[0] != HEADER:
            raise TlogProofFormatError("not a tlog-proof")
        pos = 1
        extra = None
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = _b64(lines[pos][len("extra ") :])
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise TlogProofFormatError("proof lacks its index")
        index_text = lines[pos][len("index ") :]
        if not _DECIMAL.match(index_text):
            raise TlogProofFormatError("bad index")
        pos += 1
        hash_lines = lines[pos:]
        if len(hash_lines) > MAX_PROOF_HASHES:
            raise TlogProofFormatError("proof too long")
        hashes = tuple(_b64(line) for line in hash_lines)
        if any(len(h) != 32 for h in hashes):
            raise TlogProofFormatError("proof hash of the wrong size")
        return cls(int(index_text), hashes, checkpoint, extra)
