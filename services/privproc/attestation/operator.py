"""What the operator's tooling shares: the stack's key names and logging a predictor release.

``privproc up`` (every service on loopback) and ``privproc cluster`` (a
cluster's Secrets and its release Job) make the same keys under the same
names, and log the predictor image's ``cvm-release`` the same way.
"""

from __future__ import annotations

import time
from pathlib import Path

from privproc import __version__
from privproc.attestation.abi import TcbVersion
from privproc.attestation.measure import ImageManifest, release_entry, release_proof_name
from privproc.ledger.publisher import LedgerPublisher
from privproc.runtime.cdn_publisher import CdnPublisher
from privproc.wire import note
from privproc.wire.entries import (
    KIND_CVM_RELEASE,
    KIND_CVM_REVOCATION,
    KIND_OHTTP_KEY_CONFIG,
    KIND_TOKEN_ISSUER_KEY,
)

#: The log's origin (its signer key's name) and the witness's cosignature key name.
LOG_ORIGIN = "log.privproc.local"
WITNESS_NAME = "witness.privproc.local"
#: The CDN's publishers; each has its own credential and the scope of its name.
CDN_PUBLISHERS = ("gateway", "acs", "release")
#: Ledger publisher key names (signed-note key names) and the entry kinds each may append.
GATEWAY_PUBLISHER = "gateway"
ACS_PUBLISHER = "acs"
RELEASE_PUBLISHER = "release"
PUBLISHER_KINDS = {
    GATEWAY_PUBLISHER: (KIND_OHTTP_KEY_CONFIG,),
    ACS_PUBLISHER: (KIND_TOKEN_ISSUER_KEY,),
    RELEASE_PUBLISHER: (KIND_CVM_RELEASE, KIND_CVM_REVOCATION),
}
#: How long a release logged by the operator's tooling admits its CVMs.
RELEASE_VALID_DAYS = 30


def ledger_publisher(kind_owner: str, verifier_key: str) -> str:
    """``privproc serve ledger --publisher`` for a publisher: ``KIND[,KIND]:VKEY``."""
    return ",".join(PUBLISHER_KINDS[kind_owner]) + ":" + verifier_key


async def publish_release(
    manifest: ImageManifest,
    signer_key: str,
    *,
    ledger_target: str,
    cdn_target: str,
    cdn_credential_file: Path,
    min_tcb: TcbVersion,
    valid_days: float = RELEASE_VALID_DAYS,
    service: str,
) -> int:
    """Log the predictor image's release, signed by the release key; its proof goes to the CDN.

    The entry carries the manifest's HOST_DATA, ``min_tcb`` as the minimum
    platform TCB, supersedes lower versions at once, and expires
    ``valid_days`` ahead. Returns its log index. ``service`` names the caller
    in the CDN publisher's events.
    """
    now = int(time.time())
    entry = release_entry(
        manifest,
        version=__version__,
        signer=note.parse_signer_key(signer_key),
        min_tcb=min_tcb,
        supersedes_at=now,
        not_after=now + int(valid_days * 86400),
    )
    publisher = LedgerPublisher(ledger_target, signer_key)
    try:
        proof = await publisher.publish(entry)
    finally:
        await publisher.close()
    await CdnPublisher(cdn_target, cdn_credential_file, service=service).proof(
        release_proof_name(manifest.measurement), proof.encode()
    )
    return proof.index
