"""Canary strings, and the one scan that looks for them (issue 13's canary test).

A canary is a random string put into something that must stay on the device (or in the CVM's
memory): a chat message, a draft, an account credential, the device's address. After the
stack ran, :func:`scan` looks for every canary in every place an operator could read: files
(read as bytes, whatever their format) and texts (captured output, error texts, exported
telemetry). Canaries are lower-case letters and digits, so a leak through an event's
identifier-typed field would pass the events' own checks: the scan is what catches it.

:func:`renderings` is what is looked for: the canary's bytes as they are (UTF-8 and UTF-16),
in hex, and in base64 at each of the three alignments it can have inside a longer encoded
value. That covers the encodings a log line, a JSON document, a protobuf or a SQLite page
would give it; a compressed or hashed copy is not looked for (it cannot be, cheaply).
"""

from __future__ import annotations

import base64
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ALPHABET = string.ascii_lowercase + string.digits
#: 16 symbols of 36: ~82 bits, never found by chance, long enough that every rendering is too.
LENGTH = 16


def new_canary() -> str:
    """A fresh canary: it matches the events' identifier pattern (the hard case for a filter)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def renderings(secret: str) -> dict[str, bytes]:
    """Every form of ``secret`` the scan looks for, by the name of its encoding."""
    raw = secret.encode()
    forms = {
        "raw": raw,
        "utf-16": secret.encode("utf-16-le"),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }
    for shift in range(3):
        # Inside a longer value, only whole 3-byte groups of the secret encode the same way
        # whatever surrounds them: the secret from ``shift`` on, cut to a multiple of three.
        part = raw[shift:]
        part = part[: len(part) - len(part) % 3]
        forms[f"base64/{shift}"] = base64.b64encode(part)
        forms[f"base64url/{shift}"] = base64.urlsafe_b64encode(part)
    return forms


@dataclass(frozen=True)
class Finding:
    """One secret found: where (a file or a text's label), which secret (its label), how."""

    where: str
    secret: str
    rendering: str


def files_under(root: Path) -> list[Path]:
    """Every regular file under ``root``, recursively (no symlink followed; sockets skipped)."""
    return sorted(path for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def scan(
    secrets_by_label: Mapping[str, str],
    *,
    files: Iterable[Path] = (),
    texts: Mapping[str, str | bytes] | None = None,
) -> list[Finding]:
    """Every rendering of every secret found in ``files`` (read whole, as bytes) and ``texts``.

    ``secrets_by_label`` names each secret for the report (``"draft 1"``, ``"client address"``);
    a file is reported by its path, a text by its key in ``texts``.
    """
    needles = [
        (label, form, needle)
        for label, secret in secrets_by_label.items()
        for form, needle in renderings(secret).items()
    ]
    haystacks: list[tuple[str, bytes]] = [(str(path), path.read_bytes()) for path in files]
    haystacks += [
        (where, text.encode() if isinstance(text, str) else text) for where, text in (texts or {}).items()
    ]
    return [
        Finding(where, label, form)
        for where, data in haystacks
        for label, form, needle in needles
        if needle in data
    ]


def process_memory(pid: int) -> bytes:
    """The writable memory of a live process (heap, stacks, anonymous mappings), concatenated.

    What a process received or computed can only be there: read-only mappings are code and
    files. Regions the kernel will not read (guard pages) are skipped.
    """
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("rw") or (len(fields) > 5 and fields[5].startswith("[v")):
                continue  # not writable, or the kernel's [vvar]/[vsyscall] pages
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            try:
                memory.seek(start)
                chunks.append(memory.read(end - start))
            except (OSError, OverflowError):
                continue
    return b"".join(chunks)
