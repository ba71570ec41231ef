"""Secret files an operator makes once: credentials and signed-note keys, 0600 in a 0700 directory.

``privproc up`` keeps its stack's secrets this way, and ``privproc cluster
secrets`` makes a cluster's (then rendered as Kubernetes Secrets). A file
already there is kept: running either again changes no key.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from privproc.wire import note


def random_credential() -> str:
    """A fresh bearer credential (a CDN publisher's, a test account's): 256 random bits, base64url."""
    return secrets.token_urlsafe(32)


def secret_file(directory: Path, name: str, make: Callable[[], str] | None = None) -> Path:
    """``directory/name`` (0600, in a 0700 directory), written with ``make()`` if it is not there.

    ``make`` defaults to :func:`random_credential`.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make() if make is not None else random_credential())
    return path


def signer_key_file(
    directory: Path, file_name: str, key_name: str, alg: int = note.ALG_ED25519
) -> tuple[Path, str]:
    """A signed-note private key named ``key_name`` in ``directory/file_name``, and its verifier key."""
    path = secret_file(directory, file_name, lambda: note.generate_key(key_name, alg)[0])
    return path, note.parse_signer_key(path.read_text().strip()).verifier().key_string()


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the old or the new bytes), mode 0600."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
