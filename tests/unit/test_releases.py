"""The release rules a device applies to a logged ``cvm-release``, and the key-consistency history."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privproc.attestation import releases
from privproc.attestation.abi import TcbVersion
from privproc.attestation.appraisal import Claims, Reason, SnpPolicy, appraise
from privproc.attestation.measure import ImageManifest, measure_image, release_entry
from privproc.attestation.simulator import SIMULATED_TCB, DevelopmentRoot, SimulatedSnp
from privproc.errors import ConfigError, CryptoError
from privproc.ledger.keyconsistency import (
    KeyConfigHistory,
    LoggedKeyConfig,
    StaleKeyConfigError,
    key_config_alerts,
)
from privproc.stackfile import StackFile
from privproc.wire import entries, note

NOW = 1_800_000_000
RELEASE_KEY, RELEASE_VKEY = note.generate_key("release")
GATEWAY_KEY, _ = note.generate_key("gateway")


@pytest.fixture(scope="module")
def manifest() -> ImageManifest:
    return measure_image(config={"language_model": "tiny"})


def _claims(root: DevelopmentRoot, manifest: ImageManifest, *, host_data: bytes | None = None) -> Claims:
    source = SimulatedSnp(root, measurement=manifest.measurement, host_data=host_data or manifest.host_data)
    appraisal = appraise(
        source.evidence(bytes(64)), SnpPolicy().with_development_root(root.ark_fingerprint), report_data=None
    )
    assert appraisal.verified and appraisal.claims is not None
    return appraisal.claims


def _release(manifest: ImageManifest, key: str = RELEASE_KEY, **options: Any) -> entries.CvmReleaseEntry:
    fields: dict[str, Any] = {
        "version": "1.0.0",
        "min_tcb": SIMULATED_TCB,
        "supersedes_at": NOW - 10,
        "not_after": NOW + 3600,
    }
    raw = release_entry(manifest, signer=note.parse_signer_key(key), **{**fields, **options})
    return entries.CvmReleaseEntry.parse(raw)


def _registry() -> releases.ReleaseRegistry:
    return releases.ReleaseRegistry([RELEASE_VKEY])


def test_a_current_signed_release_is_admitted(root: DevelopmentRoot, manifest: ImageManifest) -> None:
    registry = _registry()
    release = _release(manifest)
    registry.observe(4, release)
    admitted = registry.admit(4, release, _claims(root, manifest), NOW)
    assert admitted.index == 4 and admitted.version == "1.0.0" and admitted.not_after == NOW + 3600
    assert admitted.release_key == release.release_key == registry.release_keys[0]
    assert admitted.to_json()["min_tcb"]["snp"] == SIMULATED_TCB.snp
    assert registry.admit_measurement(_claims(root, manifest), NOW) == admitted
    assert registry.measurements() == {manifest.measurement: 4}


def test_stale_firmware_tcb_zero_is_refused(
    tmp_path: Path, root_dir: Path, root: DevelopmentRoot, manifest: ImageManifest
) -> None:
    """A host rolled back to TCB 0.0.0.0: its VCEK still chains to the trusted ARK (the appraisal
    alone accepts it), but the release's minimum TCB refuses it."""
    stale_dir = tmp_path / "stale"
    stale_dir.mkdir()
    for name in ("ark.key", "ask.key", "vcek.key", "chip_id", "ARK-Milan.der", "SEV-Milan.der"):
        (stale_dir / name).write_bytes((root_dir / name).read_bytes())
    stale = DevelopmentRoot.load_or_create(stale_dir, tcb=TcbVersion(0, 0, 0, 0))
    assert stale.ark_fingerprint == root.ark_fingerprint
    claims = _claims(stale, manifest)
    assert claims.vcek_tcb == TcbVersion(0, 0, 0, 0)
    with pytest.raises(releases.ReleaseTcbError):
        _registry().admit(0, _release(manifest), claims, NOW)
    # Each component counts on its own: high levels elsewhere do not make up for an old SNP firmware.
    needs_newer_snp = TcbVersion(0, 0, SIMULATED_TCB.snp + 1, 0)
    with pytest.raises(releases.ReleaseTcbError):
        _registry().admit(0, _release(manifest, min_tcb=needs_newer_snp), _claims(root, manifest), NOW)


def test_wrong_host_data_is_refused(root: DevelopmentRoot, manifest: ImageManifest) -> None:
    claims = _claims(root, manifest, host_data=b"\x07" * 32)  # launched with another configuration
    with pytest.raises(releases.ReleaseHostDataError):
        _registry().admit(0, _release(manifest), claims, NOW)


def test_expired_release_is_refused(root: DevelopmentRoot, manifest: ImageManifest) -> None:
    release = _release(manifest, not_after=NOW)
    registry = _registry()
    registry.admit(0, release, _claims(root, manifest), NOW - 1)
    with pytest.raises(releases.ReleaseExpiredError):
        registry.admit(0, release, _claims(root, manifest), NOW)


def test_revoked_release_is_refused(root: DevelopmentRoot, manifest: ImageManifest) -> None:
    signer = note.parse_signer_key(RELEASE_KEY)
    release = _release(manifest)
    for revocation in (
        entries.CvmRevocationEntry.sign(signer=signer, release_index=5).encode(),
        entries.CvmRevocationEntry.sign(signer=signer, measurement=manifest.measurement.hex()).encode(),
    ):
        registry = _registry()
        registry.observe(5, release)
        registry.admit(5, release, _claims(root, manifest), NOW)
        registry.observe(6, entries.parse_entry(revocation))
        with pytest.raises(releases.ReleaseRevokedError):
            registry.admit(5, release, _claims(root, manifest), NOW)
    # A revocation signed by a key the client does not pin withdraws nothing.
    registry = _registry()
    forged = entries.CvmRevocationEntry.sign(
        signer=note.parse_signer_key(GATEWAY_KEY), release_index=5
    ).encode()
    registry.observe(6, entries.parse_entry(forged))
    assert registry.admit(5, release, _claims(root, manifest), NOW).index == 5
    assert registry.ignored == 1


def test_superseded_release_is_refused(root: DevelopmentRoot, manifest: ImageManifest) -> None:
    old = _release(manifest, version="1.0.0")
    registry = _registry()
    registry.observe(1, old)
    rollout = _release(manifest, version="1.1.0", supersedes_at=NOW + 600)
    registry.observe(2, rollout)
    assert registry.admit(1, old, _claims(root, manifest), NOW).index == 1  # still rolling out
    with pytest.raises(releases.ReleaseSupersededError):
        registry.admit(1, old, _claims(root, manifest), NOW + 600)
    # An old version logged later does not roll the track back.
    replayed = _release(manifest, version="1.0.0", not_after=NOW + 7200)
    registry.observe(3, replayed)
    with pytest.raises(releases.ReleaseSupersededError):
        registry.admit(3, replayed, _claims(root, manifest), NOW + 600)
    assert registry.admit(2, rollout, _claims(root, manifest), NOW + 600).version == "1.1.0"


def test_release_signed_by_an_unpinned_key_is_refused(root: DevelopmentRoot, manifest: ImageManifest) -> None:
    """The gateway's publisher key signs a well-formed release: the device pins only release keys."""
    rogue = _release(manifest, key=GATEWAY_KEY)
    registry = _registry()
    registry.observe(0, rogue)
    with pytest.raises(releases.ReleaseNotPinnedError):
        registry.admit(0, rogue, _claims(root, manifest), NOW)
    with pytest.raises(releases.ReleaseMismatchError):  # not learnt as a release either
        registry.admit_measurement(_claims(root, manifest), NOW)


def test_a_remembered_signature_still_gets_every_other_check(
    root: DevelopmentRoot, manifest: ImageManifest
) -> None:
    """The registry verifies a release's signature once; admission checks everything else every time."""
    registry = _registry()
    release = _release(manifest, not_after=NOW + 10)
    calls: list[str] = []
    real = releases.verify_release_signature

    def counting(entry: entries.SignedEntry, keys: Any) -> str:
        calls.append(entry.release_key)
        return real(entry, keys)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(releases, "verify_release_signature", counting)
        for _ in range(3):
            registry.admit(0, release, _claims(root, manifest), NOW)
        assert len(calls) == 1
        with pytest.raises(releases.ReleaseExpiredError):
            registry.admit(0, release, _claims(root, manifest), NOW + 10)
        with pytest.raises(releases.ReleaseHostDataError):
            registry.admit(0, release, _claims(root, manifest, host_data=b"\x07" * 32), NOW)
        # Another entry (one field changed, the signature kept) is verified afresh, and refused.
        tampered = dataclasses.replace(release, not_after=NOW + 20)
        with pytest.raises(releases.ReleaseNotPinnedError):
            registry.admit(0, tampered, _claims(root, manifest), NOW)
        with pytest.raises(releases.ReleaseNotPinnedError):
            registry.admit(0, tampered, _claims(root, manifest), NOW)
        assert len(calls) == 3  # a refusal is never remembered


def test_release_of_another_measurement_or_kind_is_refused(
    root: DevelopmentRoot, manifest: ImageManifest
) -> None:
    other = measure_image(config={"language_model": "other"})
    with pytest.raises(releases.ReleaseMismatchError):
        _registry().admit(0, _release(other), _claims(root, manifest), NOW)
    key_entry = entries.parse_entry(entries.OhttpKeyConfigEntry.describing(b"k", 1, 0, NOW * 2).encode())
    with pytest.raises(releases.ReleaseMismatchError):
        _registry().admit(0, key_entry, _claims(root, manifest), NOW)
    with pytest.raises(releases.ReleaseMismatchError):
        # Not well formed, however it was made: refused as the log would refuse it.
        malformed = dataclasses.replace(_release(manifest), host_data="not hex")
        _registry().admit(0, malformed, _claims(root, manifest), NOW)


def test_refusals_are_typed_and_distinct() -> None:
    classes = [
        releases.ReleaseMismatchError,
        releases.ReleaseNotPinnedError,
        releases.ReleaseTcbError,
        releases.ReleaseHostDataError,
        releases.ReleaseExpiredError,
        releases.ReleaseRevokedError,
        releases.ReleaseSupersededError,
    ]
    assert len({c.reason for c in classes}) == len(classes)
    # The operator's verifier reports each one as the appraisal reason of the same name.
    assert all(c.reason in set(Reason) for c in classes)
    assert all(issubclass(c, releases.ReleaseRefusedError) and issubclass(c, CryptoError) for c in classes)


def test_registry_from_stack_pins_the_stack_release_keys() -> None:
    document: dict[str, Any] = {
        "relay": {"grpc": "a", "ohttp_url": "b"},
        "gateway": {"grpc": "a", "origin": "o", "ohttp_url": "b", "keys_url": "c"},
        "cdn": {"grpc": "a", "http_url": "b", "keys_url": "c", "issuer_directory_url": "d",
                "checkpoint_url": "e", "proofs_url": "f"},
    }  # fmt: skip
    with pytest.raises(ConfigError):
        releases.ReleaseRegistry.from_stack(StackFile.from_json(document))
    for bad in (["release+00000000+AAAA"], [note.generate_key("w", note.ALG_COSIGNATURE_V1)[1]]):
        with pytest.raises(ConfigError):
            releases.ReleaseRegistry.from_stack(
                StackFile.from_json({**document, "attestation": {"release_keys": bad}})
            )
    pinned = StackFile.from_json({**document, "attestation": {"release_keys": [RELEASE_VKEY]}})
    assert releases.ReleaseRegistry.from_stack(pinned).release_keys == (
        "release+" + RELEASE_VKEY.split("+")[1],
    )


# --- key consistency ------------------------------------------------------------------------------


def _key_entry(body: bytes, key_id: int, not_before: int, not_after: int) -> entries.OhttpKeyConfigEntry:
    return entries.OhttpKeyConfigEntry.parse(
        entries.OhttpKeyConfigEntry.describing(body, key_id, not_before, not_after).encode()
    )


def test_only_the_newest_valid_key_configuration_is_accepted() -> None:
    history = KeyConfigHistory()
    old = _key_entry(b"old", 1, NOW - 3600, NOW + 600)  # in its grace period
    new = _key_entry(b"new", 2, NOW - 5, NOW + 4200)
    history.observe(3, old)
    history.check(3, old, NOW - 10)  # before the new one begins: the old one is the newest valid
    history.observe(7, new)
    history.check(7, new, NOW)
    with pytest.raises(StaleKeyConfigError):
        history.check(3, old, NOW)
    # A newer one that is not valid yet (or no more) does not count.
    future = _key_entry(b"future", 3, NOW + 3000, NOW + 9000)
    history.observe(9, future)
    history.check(7, new, NOW)


def test_key_history_is_bounded() -> None:
    history = KeyConfigHistory(max_remembered=4)
    for i in range(10):
        history.observe(i, _key_entry(b"%d" % i, i, NOW, NOW + 10))
    assert len(history) == 4
    with pytest.raises(StaleKeyConfigError):
        history.check(0, _key_entry(b"0", 0, NOW, NOW + 10), NOW)


def test_monitor_flags_overlapping_live_configurations_beyond_grace() -> None:
    rotation = [
        LoggedKeyConfig(1, "a" * 64, 1, NOW - 3600, NOW + 300),  # in grace after its successor began
        LoggedKeyConfig(2, "b" * 64, 2, NOW - 300, NOW + 3900),
    ]
    assert key_config_alerts(rotation, NOW, max_grace_seconds=600) == []
    partitioned = [
        LoggedKeyConfig(1, "a" * 64, 1, NOW - 60, NOW + 3600),
        LoggedKeyConfig(2, "b" * 64, 2, NOW - 60, NOW + 3600),
    ]
    alerts = key_config_alerts(partitioned, NOW, max_grace_seconds=600)
    assert alerts == [{"alert": "multiple_live_key_configs", "indexes": [1, 2], "overlap_seconds": 3660}]


# --- the publishing tool ---------------------------------------------------------------------------


def test_publish_tool_builds_signed_releases_and_revocations(manifest: ImageManifest) -> None:
    from privproc.ledger import tool

    tcb = "bootloader=4,tee=0,snp=22,microcode=213"
    assert tool.parse_tcb(tcb) == SIMULATED_TCB
    assert tool.parse_tcb("fmc=1," + tcb).fmc == 1
    for bad in (
        "",
        "bootloader=4,tee=0,snp=22",
        "bootloader=4,tee=0,snp=22,microcode=256",
        "bootloader=5," + tcb,
        "bl=4,tee=0,snp=22,microcode=1",
    ):
        with pytest.raises(ConfigError):
            tool.parse_tcb(bad)
    made = tool.release_json(manifest, RELEASE_KEY, version="2.0.0", min_tcb=tcb, now=NOW, rollout_hours=1)
    entry = entries.CvmReleaseEntry.parse(made.encode())
    assert entry.host_data == manifest.host_data.hex() and entry.not_after == NOW + 30 * 86400
    assert entry.supersedes_at == NOW + 3600 and entry.min_tcb["microcode"] == 213
    pinned = {_registry().release_keys[0]: note.parse_verifier_key(RELEASE_VKEY)}
    assert entries.verify_release_signature(entry, pinned)
    with pytest.raises(ConfigError):  # already expired
        tool.release_json(manifest, RELEASE_KEY, version="2.0.0", min_tcb=tcb, not_after=NOW - 1, now=NOW)
    with pytest.raises(ConfigError):  # versions are dotted numbers (they order releases)
        tool.release_json(manifest, RELEASE_KEY, version="test", min_tcb=tcb)
    revocation = tool.revocation_json(RELEASE_KEY, release_index=3, measurement=None)
    assert entries.CvmRevocationEntry.parse(revocation.encode()).release_index == 3
    with pytest.raises(ConfigError):
        tool.revocation_json(RELEASE_KEY, release_index=3, measurement="ab" * 48)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40), st.sampled_from(["a", "b", "c"]), st.integers(0, 20), st.integers(0, 20)
        ),
        max_size=12,
    ),
    st.integers(0, 40),
    st.integers(0, 25),
)
def test_key_history_refuses_exactly_when_a_newer_live_configuration_is_known(
    logged: list[tuple[int, str, int, int]], served: int, now: int
) -> None:
    history = KeyConfigHistory()
    for index, digest, start, length in logged:
        history.observe(index, _key_entry(digest.encode(), 1, start, start + length))
    records = {i: (d, s, s + n) for i, d, s, n in logged}  # a later observation of an index wins
    offered = _key_entry(b"a", 1, 0, 40)
    newer = [i for i, (d, s, e) in records.items() if i > served and s <= now <= e and d != "a"]
    if newer:
        with pytest.raises(StaleKeyConfigError):
            history.check(served, offered, now)
    else:
        history.check(served, offered, now)


def test_a_changed_allowlist_is_a_new_measurement_and_a_new_release(
    root: DevelopmentRoot, manifest: ImageManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privproc import events

    assert manifest.allowlist_digest == "sha256:" + events.allowlist_digest()
    logged = _release(manifest)
    assert logged.allowlist_digest == manifest.allowlist_digest
    # The same code, weights and configuration, but a sidecar letting out another allow-list.
    monkeypatch.setattr(events, "allowlist_digest", lambda: "ee" * 32)
    changed = measure_image(config={"language_model": "tiny"})
    assert changed.files == manifest.files and changed.model_digest == manifest.model_digest
    assert changed.allowlist_digest == "sha256:" + "ee" * 32
    assert changed.measurement != manifest.measurement
    assert changed.host_data == manifest.host_data  # the configuration did not change
    release = _release(changed)
    assert release.allowlist_digest == "sha256:" + "ee" * 32
    assert release.measurements == (changed.measurement.hex(),)
    # The release logged for the old allow-list does not admit the new image: it needs its own.
    registry = _registry()
    registry.observe(1, logged)
    with pytest.raises(releases.ReleaseMismatchError):
        registry.admit_measurement(_claims(root, changed), NOW)
    registry.observe(2, release)
    assert registry.admit_measurement(_claims(root, changed), NOW).index == 2


def test_a_sidecar_built_with_one_allowlist_refuses_to_run_with_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privproc import events
    from privproc.logsidecar.server import LogSidecarConfig, LogSidecarService

    built_with = events.allowlist_digest()
    # (No --output: stderr, so nothing is opened by the services made here.)
    config = LogSidecarConfig(socket_path=tmp_path / "s.sock", allowlist_digest=built_with)
    assert LogSidecarService(config).config is config
    # The same code with one bound widened: a session count that could now carry any number.
    spec = events.REGISTRY["predictor.session_opened"]
    widened = events.EventSpec(
        spec.name, spec.level, spec.description, {"sessions": events.Int(2**53)}, spec.time_resolution
    )
    monkeypatch.setitem(events.REGISTRY, spec.name, widened)
    assert events.allowlist_digest() != built_with
    with pytest.raises(ConfigError, match="allow-list differs"):
        LogSidecarService(config)
    # ... and the image measured with it is another release.
    assert measure_image().allowlist_digest == "sha256:" + events.allowlist_digest()
