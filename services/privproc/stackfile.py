"""``stack.json``: how a running local stack tells clients where it is.

``privproc up`` writes it once every service is healthy; the client SDK and
CLI read it. It is a documented contract (docs/operations.md, "stack.json"): a newer
writer may add sections, and readers ignore what they do not know. It holds
addresses and public values (keys, the verifier's CA certificate, pinned
release keys), plus one secret on the local stack: the demo account's ACS
credential, which is why the file is written mode 0600. The services' own
secrets (CDN publisher credentials, signing keys) stay in their state
directories and never appear here.

Shape (version 1)::

    {"version": 1,
     "relay":   {"grpc": "127.0.0.1:P", "ohttp_url": "http://127.0.0.1:P/ohttp-relay"},
     "gateway": {"grpc": "127.0.0.1:P", "origin": "privproc.local",
                 "ohttp_url": "http://127.0.0.1:P/.well-known/ohttp-gateway",
                 "keys_url": "http://127.0.0.1:P/.well-known/ohttp-gateway"},
     "cdn":     {"grpc": "127.0.0.1:P", "http_url": "http://127.0.0.1:P",
                 "keys_url": "http://127.0.0.1:P/ohttp-keys",
                 "issuer_directory_url": "http://127.0.0.1:P/.well-known/private-token-issuer-directory",
                 "checkpoint_url": "http://127.0.0.1:P/checkpoint",
                 "proofs_url": "http://127.0.0.1:P/proofs/"},
     "acs":     {"grpc": "127.0.0.1:P", "http_url": "http://127.0.0.1:P",
                 "issuer_directory_url": "http://127.0.0.1:P/.well-known/private-token-issuer-directory",
                 "token_request_url": "http://127.0.0.1:P/token-request",
                 "issuer_name": "issuer.privproc.local"},
     "ledger":  {"grpc": "127.0.0.1:P", "tiles_url": "http://127.0.0.1:P",
                 "origin": "log.privproc.local", "vkey": "log.privproc.local+…"},
     "witness": {"grpc": "127.0.0.1:P", "url": "http://127.0.0.1:P", "vkey": "witness.privproc.local+…"},
     "min_cosignatures": 1,
     "verifier": {"grpc": "127.0.0.1:P", "ca_cert": "-----BEGIN CERTIFICATE-----…"},
     "attestation": {"development_root": "<hex SHA-256 of the simulator's ARK>",
                     "measurement": "<hex, 48 bytes>", "model_digest": "sha256:…",
                     "release_log_index": N or null (``up --skip-publish``),
                     "release_keys": ["release+<hex key ID>+<base64>", …]},
     "predictor": {"grpc": "127.0.0.1:P (mutual TLS only)", "model": {"language_model": …}},
     "demo_account": {"id": "demo", "credential": "pp1.demo...."}}

``demo_account`` exists only for the local stack: its credential lets the
demo and tests obtain tokens (whoever reads the file can spend that
account's token allowance); a real deployment has no such section.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privproc.errors import ConfigError

VERSION = 1
DEFAULT_STATE_DIR = Path(".privproc")
FILE_NAME = "stack.json"


@dataclass(frozen=True)
class RelayEndpoints:
    grpc: str
    ohttp_url: str


@dataclass(frozen=True)
class GatewayEndpoints:
    grpc: str
    origin: str
    ohttp_url: str
    keys_url: str


@dataclass(frozen=True)
class CdnEndpoints:
    grpc: str
    http_url: str
    keys_url: str
    issuer_directory_url: str
    checkpoint_url: str
    proofs_url: str


@dataclass(frozen=True)
class AcsEndpoints:
    grpc: str
    http_url: str
    issuer_directory_url: str
    token_request_url: str
    issuer_name: str


@dataclass(frozen=True)
class LedgerEndpoints:
    grpc: str
    tiles_url: str
    origin: str
    vkey: str


@dataclass(frozen=True)
class WitnessEndpoints:
    grpc: str
    url: str
    vkey: str


@dataclass(frozen=True)
class VerifierEndpoints:
    grpc: str
    ca_cert: str


@dataclass(frozen=True)
class DemoAccount:
    id: str
    credential: str = field(repr=False)


@dataclass(frozen=True)
class StackFile:
    relay: RelayEndpoints
    gateway: GatewayEndpoints
    cdn: CdnEndpoints
    acs: AcsEndpoints | None
    demo_account: DemoAccount | None
    ledger: LedgerEndpoints | None
    witness: WitnessEndpoints | None
    #: Witness cosignatures a client requires on every checkpoint.
    min_cosignatures: int
    verifier: VerifierEndpoints | None
    #: SHA-256 of the simulator's development ARK, trusted by this stack's clients (None: real hardware only).
    development_root: bytes | None
    #: The whole document, sections of later versions included.
    raw: dict[str, Any]
    #: Release keys the clients pin (signed-note verifier keys): a CVM release must be signed by one.
    release_keys: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> StackFile:
        try:
            acs = document.get("acs")
            demo = document.get("demo_account")
            ledger = document.get("ledger")
            witness = document.get("witness")
            verifier = document.get("verifier")
            dev_root = (document.get("attestation") or {}).get("development_root")
            return cls(
                relay=RelayEndpoints(**_pick(document["relay"], RelayEndpoints)),
                gateway=GatewayEndpoints(**_pick(document["gateway"], GatewayEndpoints)),
                cdn=CdnEndpoints(**_pick(document["cdn"], CdnEndpoints)),
                acs=AcsEndpoints(**_pick(acs, AcsEndpoints)) if acs is not None else None,
                demo_account=DemoAccount(**_pick(demo, DemoAccount)) if demo is not None else None,
                ledger=LedgerEndpoints(**_pick(ledger, LedgerEndpoints)) if ledger is not None else None,
                witness=WitnessEndpoints(**_pick(witness, WitnessEndpoints)) if witness is not None else None,
                min_cosignatures=int(document.get("min_cosignatures", 1)),
                verifier=VerifierEndpoints(**_pick(verifier, VerifierEndpoints))
                if verifier is not None
                else None,
                development_root=bytes.fromhex(dev_root) if isinstance(dev_root, str) else None,
                raw=document,
                release_keys=_release_keys(document.get("attestation") or {}),
            )
        except (KeyError, TypeError) as err:
            raise ConfigError("stack.json lacks a required endpoint") from err

    @classmethod
    def load(cls, path: Path) -> StackFile:
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise ConfigError("no stack.json: is `privproc up` running?") from err
        except ValueError as err:
            raise ConfigError("stack.json is not JSON") from err
        if not isinstance(document, dict):
            raise ConfigError("stack.json is not a JSON object")
        document["_path"] = str(path)  # where it was read from (not part of the file)
        return cls.from_json(document)


def _release_keys(attestation: dict[str, Any]) -> tuple[str, ...]:
    keys = attestation.get("release_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TypeError("release_keys is a list of verifier keys")
    return tuple(keys)


def _pick(section: Any, kind: type) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise TypeError("section is not an object")
    names = kind.__dataclass_fields__  # type: ignore[attr-defined]
    return {name: section[name] for name in names}


def write(path: Path, document: dict[str, Any]) -> None:
    """Write atomically (rename), 0600, so a reader never sees half a file."""
    StackFile.from_json(document)  # never publish a file our own reader rejects
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps({"version": VERSION, **document}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
