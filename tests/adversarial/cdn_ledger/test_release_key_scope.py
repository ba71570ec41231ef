"""Attack (issue 11, item 12): any publisher key can log a CVM release, and clients admit it.

The gateway's operator holds the gateway's ledger publisher key. Publisher
keys are now scoped to entry kinds at the ledger, so that key cannot log a
``cvm-release``; and even a release that reaches a log (a ledger that grants
too much) is admitted only if the entry itself is signed by a release key
the device pins.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privproc.attestation import releases
from privproc.attestation.appraisal import SnpPolicy, appraise
from privproc.attestation.measure import ImageManifest, measure_image, release_entry
from privproc.attestation.simulator import SIMULATED_TCB, DevelopmentRoot, SimulatedSnp
from privproc.errors import ConfigError, PermissionDeniedError
from privproc.ledger import tool
from privproc.ledger.checkpoints import CheckpointStore, grpc_consistency_source
from privproc.ledger.follower import LogFollower, http_fetcher
from privproc.ledger.publisher import LedgerPublisher
from privproc.ledger.server import LedgerConfig, LedgerService, parse_publisher
from privproc.wire import note
from privproc.wire.entries import KIND_CVM_RELEASE, parse_entry
from privproc.wire.tlogclient import LogPolicy, TransparencyVerifier
from tests.livestack import LOG_ORIGIN, Stack, secret_file, signed_release_entry


async def _publish(target: str, key: str, entry: bytes) -> int:
    publisher = LedgerPublisher(target, key)
    try:
        return (await publisher.publish(entry)).index
    finally:
        await publisher.close()


async def _entries(ledger_grpc: str, tiles_url: str, log_vkey: str) -> list[tuple[int, bytes]]:
    """Every entry of a log (no witness), read from its tiles as a device's refresher does."""
    policy = LogPolicy(note.parse_verifier_key(log_vkey).name, log_vkey, (), 0)
    source, close = grpc_consistency_source(ledger_grpc)
    try:
        verifier = TransparencyVerifier(policy, CheckpointStore(None), source)
        return list((await LogFollower(verifier, http_fetcher(tiles_url)).sync()).new_entries)
    finally:
        await close()


async def test_the_gateway_key_cannot_log_a_release(stack: Stack) -> None:
    assert stack.ledger is not None and stack.file.ledger is not None
    manifest = measure_image()
    size = stack.ledger.served_size
    # A release signed inside by the gateway's key, or a genuine release replayed: either way the
    # gateway's publisher key is not authorised for the cvm-release kind.
    replayed = signed_release_entry(manifest, stack.keys, version="9.0.0")
    for entry in (_gateway_signed_release(stack, manifest), replayed):
        with pytest.raises(PermissionDeniedError):
            await _publish(stack.file.ledger.grpc, stack.keys.gateway, entry)
    # Nor can the ACS's key; the release key can.
    release = signed_release_entry(manifest, stack.keys)
    with pytest.raises(PermissionDeniedError):
        await _publish(stack.file.ledger.grpc, stack.keys.acs, release)
    assert stack.ledger.served_size == size
    assert await _publish(stack.file.ledger.grpc, stack.keys.release, release) == size


def _gateway_signed_release(stack: Stack, manifest: ImageManifest) -> bytes:
    """A well-formed release whose inside signature is the gateway publisher key's."""
    return release_entry(
        manifest,
        version="9.0.0",
        signer=note.parse_signer_key(stack.keys.gateway),
        min_tcb=SIMULATED_TCB,
        supersedes_at=0,
        not_after=2**40,
    )


def test_a_publisher_key_without_scope_is_refused(tmp_path: Path) -> None:
    _, vkey = note.generate_key("gateway")
    with pytest.raises(ConfigError):
        parse_publisher(vkey)  # the old form: a bare key, allowed every kind
    with pytest.raises(ConfigError):
        parse_publisher("everything:" + vkey)
    assert parse_publisher("ohttp-key-config:" + vkey)[2] == frozenset({"ohttp-key-config"})
    log_key, _ = note.generate_key(LOG_ORIGIN)
    with pytest.raises(ConfigError):
        LedgerService(LedgerConfig(tmp_path / "ledger", secret_file(tmp_path, "log.key", log_key), (vkey,)))


async def test_a_release_signed_by_a_publisher_key_is_refused_by_the_device(
    stack: Stack, tmp_path: Path
) -> None:
    """A ledger that wrongly lets the gateway log releases: the device's pin check still refuses."""
    log_key, log_vkey = note.generate_key("loose.test")
    loose = LedgerService(
        LedgerConfig(
            tmp_path / "loose-ledger",
            secret_file(tmp_path, "loose.key", log_key),
            (f"{KIND_CVM_RELEASE}:{stack.keys.gateway_vkey}",),
        )
    )
    manifest = measure_image()
    endpoints = await loose.start()
    try:
        rogue = _gateway_signed_release(stack, manifest)
        index = await _publish(str(endpoints["grpc"]), stack.keys.gateway, rogue)
        logged = await _entries(str(endpoints["grpc"]), str(endpoints["tiles_url"]), log_vkey)
    finally:
        await loose.stop()
    assert [i for i, _ in logged] == [index]
    entry = parse_entry(logged[0][1])
    root = DevelopmentRoot.load_or_create(tmp_path / "simulator")
    evidence = SimulatedSnp(root, measurement=manifest.measurement, host_data=manifest.host_data).evidence(
        bytes(64)
    )
    appraisal = appraise(evidence, SnpPolicy().with_development_root(root.ark_fingerprint), report_data=None)
    assert appraisal.verified and appraisal.claims is not None
    registry = releases.ReleaseRegistry([stack.keys.release_vkey])
    registry.observe(index, entry)
    with pytest.raises(releases.ReleaseNotPinnedError):
        registry.admit(index, entry, appraisal.claims, 0)


async def test_the_monitor_flags_a_release_no_pinned_key_signed(stack: Stack, tmp_path: Path) -> None:
    """The release publisher's ledger credential logs a release signed inside by another key (say
    the gateway's): devices refuse it, and the monitor shows it to everyone."""
    assert stack.file.ledger is not None
    manifest = measure_image()
    target = stack.file.ledger.grpc
    genuine = await _publish(target, stack.keys.release, signed_release_entry(manifest, stack.keys))
    rogue = await _publish(target, stack.keys.release, _gateway_signed_release(stack, manifest))
    pins = {"attestation": {"release_keys": [stack.keys.release_vkey]}}
    stack_path = tmp_path / "stack.json"
    stack_path.write_text(json.dumps({**stack.file.raw, **pins}))
    report = await tool.monitor(stack_path, tmp_path / "monitor" / "checkpoints.json")
    flagged = [a["index"] for a in report["alerts"] if a["alert"] == "release_not_signed_by_a_pinned_key"]
    assert rogue in flagged and genuine not in flagged
