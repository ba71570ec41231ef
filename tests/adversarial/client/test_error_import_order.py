"""Attack: a peer's ``malformed: …`` answer turned into a different error class depending on import order.

The client rebuilds a service's typed error from its ``reason: text`` status
(:func:`privproc.errors.error_from_status`). When subclasses that merely
inherit ``malformed`` registered themselves, whichever module was imported
last decided what the client saw: a ``PrivacyPassFormatError`` in one
process, a ``BhttpError`` in another, for the same bytes from the peer.
Each order below runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

_PROBE = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
from privproc.errors import error_from_status
print(json.dumps({reason: type(error_from_status(reason + ": peer said so")).__name__
                  for reason in ("malformed", "crypto")}))
"""

ORDERS = [
    ["privproc.errors", "privproc.wire.privacypass"],
    ["privproc.errors", "privproc.wire.bhttp"],
    ["privproc.errors", "privproc.wire.bhttp", "privproc.wire.note", "privproc.wire.ohttp"],
    ["privproc.wire.note", "privproc.wire.ohttp", "privproc.wire.privacypass", "privproc.crypto.rsa_raw"],
]


@pytest.mark.parametrize("order", ORDERS, ids=lambda order: order[-1].rsplit(".", 1)[-1])
def test_malformed_from_a_peer_is_the_same_class_whatever_was_imported(order: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(order)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    assert json.loads(done.stdout) == {"malformed": "WireError", "crypto": "CryptoError"}
