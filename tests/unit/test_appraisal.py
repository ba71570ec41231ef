"""Appraisal: the real Milan report, simulator reports, and every typed rejection."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from privproc.attestation import appraisal as appraisal_module
from privproc.attestation.abi import AttestationReport, GuestPolicy, Product, TcbVersion
from privproc.attestation.appraisal import ChainCache, Reason, SnpPolicy, appraise
from privproc.attestation.evidence import Evidence, EvidenceType
from privproc.attestation.kds import VcekInfo, certificate_validity, split_pem_chain
from privproc.attestation.measure import measure_image
from privproc.attestation.simulator import DevelopmentRoot, SimulatedSnp
from privproc.attestation.verify import sign_report
from tests.support import SEV_SNP_VECTORS

VECTOR_TIME = datetime(2024, 6, 1, tzinfo=UTC)


def _real_evidence(chain_file: str = "ask_ark_milan.pem") -> Evidence:
    folder = SEV_SNP_VECTORS
    ask, ark = split_pem_chain((folder / chain_file).read_bytes())
    return Evidence(
        EvidenceType.SEV_SNP,
        (folder / "attestation.bin").read_bytes(),
        ((folder / "vcek.testcer").read_bytes(), ask, ark),
    )


def test_real_milan_report_is_genuine_but_refused_for_debug() -> None:
    evidence = _real_evidence()
    refused = appraise(evidence, SnpPolicy(), report_data=None, now=VECTOR_TIME)
    assert refused.reasons == (Reason.DEBUG,)  # signature and chain are fine; its policy allows debug
    assert refused.claims is not None and refused.claims.product == "Milan-B0" and refused.claims.debug
    accepted = appraise(evidence, SnpPolicy(allow_debug=True), report_data=None, now=VECTOR_TIME)
    assert accepted.verified
    wrong_data = appraise(evidence, SnpPolicy(allow_debug=True), report_data=bytes(64), now=VECTOR_TIME)
    assert wrong_data.reasons == (Reason.REPORT_DATA,)


def test_real_report_with_another_products_chain_is_refused() -> None:
    evidence = _real_evidence("ask_ark_genoa.pem")
    assert appraise(evidence, SnpPolicy(allow_debug=True), report_data=None, now=VECTOR_TIME).reasons == (
        Reason.CHAIN,
    )


def _policy(root: DevelopmentRoot, **kw: object) -> SnpPolicy:
    return dataclasses.replace(SnpPolicy().with_development_root(root.ark_fingerprint), **kw)  # type: ignore[arg-type]


def _resigned(root: DevelopmentRoot, report: AttestationReport, **changes: object) -> Evidence:
    changed = dataclasses.replace(report, **changes)  # type: ignore[arg-type]
    signed = sign_report(changed, root.vcek_key)
    return Evidence(EvidenceType.SEV_SNP, signed.encode(), (root.vcek, root.ask, root.ark))


def test_simulator_evidence_passes_the_same_verifier(root: DevelopmentRoot) -> None:
    manifest = measure_image()
    simulator = SimulatedSnp(root, measurement=manifest.measurement, host_data=manifest.host_data)
    evidence = simulator.evidence(b"\x11" * 64)
    policy = _policy(root, measurements={manifest.measurement: 7}, host_data=manifest.host_data)
    appraisal = appraise(evidence, policy, report_data=b"\x11" * 64)
    assert appraisal.verified and appraisal.claims is not None and appraisal.claims.release_log_index == 7
    # Without the development root explicitly trusted, the same evidence is refused.
    assert appraise(evidence, SnpPolicy(), report_data=b"\x11" * 64).reasons == (Reason.UNTRUSTED_ROOT,)


def test_a_changed_predictor_file_changes_the_measurement(root: DevelopmentRoot, tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.mkdir()
    (image / "predictor.py").write_text("ANSWER = 42\n")
    before = measure_image(root=image)
    (image / "predictor.py").write_text("ANSWER = 43\n")
    after = measure_image(root=image)
    assert before.measurement != after.measurement and before.host_data == after.host_data
    evidence = SimulatedSnp(root, measurement=after.measurement, host_data=after.host_data).evidence(
        bytes(64)
    )
    logged_old = _policy(root, measurements={before.measurement: 1})
    assert appraise(evidence, logged_old, report_data=bytes(64)).reasons == (Reason.MEASUREMENT_UNKNOWN,)
    logged_new = _policy(root, measurements={before.measurement: 1, after.measurement: 2})
    assert appraise(evidence, logged_new, report_data=bytes(64)).verified
    # A changed configuration changes HOST_DATA.
    assert measure_image(root=image, config={"max_tokens": 64}).host_data != after.host_data


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"chip_id": b"\x99" * 64}, Reason.CHIP_MISMATCH),
        (
            {"reported_tcb": TcbVersion(9, 9, 99, 250).to_u64(Product.MILAN)},
            Reason.REPORTED_TCB_ABOVE_CERTIFICATE,
        ),
        ({"policy": GuestPolicy(0x30000 | 1 << 19)}, Reason.DEBUG),
        ({"policy": GuestPolicy(0x30000 | 1 << 18)}, Reason.MIGRATION_AGENT),
        ({"vmpl": 2}, Reason.VMPL),
        ({"measurement": b"\x01" * 48}, Reason.MEASUREMENT_UNKNOWN),
        ({"host_data": b"\x02" * 32}, Reason.HOST_DATA),
        ({"report_data": b"\x03" * 64}, Reason.REPORT_DATA),
    ],
)
def test_each_rejection_has_its_reason(
    root: DevelopmentRoot, changes: dict[str, object], reason: Reason
) -> None:
    manifest = measure_image()
    simulator = SimulatedSnp(root, measurement=manifest.measurement, host_data=manifest.host_data)
    evidence = _resigned(root, simulator.report(bytes(64)), **changes)
    policy = _policy(root, measurements={manifest.measurement: 0}, host_data=manifest.host_data)
    assert appraise(evidence, policy, report_data=bytes(64)).reasons == (reason,)


def test_minimum_tcb_is_read_from_the_vcek_not_the_report(root: DevelopmentRoot) -> None:
    manifest = measure_image()
    report = SimulatedSnp(root, measurement=manifest.measurement, host_data=manifest.host_data).report(
        bytes(64)
    )
    policy = _policy(root, min_tcb=TcbVersion(root.tcb.bootloader, 0, root.tcb.snp + 1, 0))
    evidence = Evidence(EvidenceType.SEV_SNP, report.encode(), (root.vcek, root.ask, root.ark))
    assert appraise(evidence, policy, report_data=None).reasons == (Reason.TCB_BELOW_MINIMUM,)
    # Claiming a newer TCB in the report does not help: the VCEK says otherwise.
    lying = _resigned(root, report, reported_tcb=TcbVersion(9, 9, 99, 250).to_u64(Product.MILAN))
    assert set(appraise(lying, policy, report_data=None).reasons) == {
        Reason.TCB_BELOW_MINIMUM,
        Reason.REPORTED_TCB_ABOVE_CERTIFICATE,
    }


def test_forged_signature_and_garbage(root: DevelopmentRoot) -> None:
    manifest = measure_image()
    report = SimulatedSnp(root, measurement=manifest.measurement, host_data=manifest.host_data).report(
        bytes(64)
    )
    tampered = bytearray(report.encode())
    tampered[0x90] ^= 1  # inside MEASUREMENT, after signing
    evidence = Evidence(EvidenceType.SEV_SNP, bytes(tampered), (root.vcek, root.ask, root.ark))
    assert appraise(evidence, _policy(root), report_data=None).reasons == (Reason.SIGNATURE,)
    assert appraise(Evidence(EvidenceType.SEV_SNP, b"junk", ()), _policy(root), report_data=None).reasons == (
        Reason.MALFORMED,
    )
    assert appraise(Evidence(EvidenceType.TDX_QUOTE, b"", ()), _policy(root), report_data=None).reasons == (
        Reason.UNSUPPORTED_TYPE,
    )
    swapped = Evidence(EvidenceType.SEV_SNP, report.encode(), (root.vcek, root.ark, root.ask))
    assert appraise(swapped, _policy(root), report_data=None).reasons in (
        (Reason.CHAIN,),
        (Reason.UNTRUSTED_ROOT,),
    )


# --- the chain cache ----------------------------------------------------------------------------


def _count_chain_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = appraisal_module.verify_chain

    def counting(*args: object, **kwargs: object) -> VcekInfo:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(appraisal_module, "verify_chain", counting)
    return calls


def test_chain_cache_skips_only_the_chain(root: DevelopmentRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_chain_checks(monkeypatch)
    manifest = measure_image()
    simulator = SimulatedSnp(root, measurement=manifest.measurement, host_data=manifest.host_data)
    policy = _policy(root, measurements={manifest.measurement: 3}, host_data=manifest.host_data)
    chains = ChainCache()
    for data in (b"\x01" * 64, b"\x02" * 64):
        assert appraise(simulator.evidence(data), policy, report_data=data, chains=chains).verified
    assert len(calls) == 1 and len(chains) == 1
    # A cached chain vouches for nothing else: the report's signature and every policy check still run.
    forged = dataclasses.replace(simulator.report(bytes(64)), measurement=b"\x05" * 48)
    unsigned = Evidence(EvidenceType.SEV_SNP, forged.encode(), (root.vcek, root.ask, root.ark))
    assert appraise(unsigned, policy, report_data=bytes(64), chains=chains).reasons == (Reason.SIGNATURE,)
    assert appraise(
        simulator.evidence(bytes(64)), policy, report_data=b"\x09" * 64, chains=chains
    ).reasons == (Reason.REPORT_DATA,)
    debug = _resigned(root, simulator.report(bytes(64)), policy=GuestPolicy(0x30000 | 1 << 19))
    assert appraise(debug, policy, report_data=bytes(64), chains=chains).reasons == (Reason.DEBUG,)
    assert len(calls) == 1


def test_chain_cache_answers_only_inside_every_certificates_validity(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_chain_checks(monkeypatch)
    evidence = _real_evidence()
    policy = SnpPolicy(allow_debug=True)
    chains = ChainCache()
    assert appraise(evidence, policy, report_data=None, now=VECTOR_TIME, chains=chains).verified
    assert appraise(evidence, policy, report_data=None, now=VECTOR_TIME, chains=chains).verified
    assert len(calls) == 1
    expiry = min(certificate_validity(der)[1] for der in evidence.certificate_chain)
    later = expiry + timedelta(seconds=1)
    assert appraise(evidence, policy, report_data=None, now=later, chains=chains).reasons == (Reason.CHAIN,)
    assert len(calls) == 2  # verified again, and refused, rather than served from the cache
    with pytest.raises(ValueError, match="timezone-aware"):
        vcek, ask, ark = evidence.certificate_chain
        chains.verify((vcek, ask, ark), (Product.MILAN, b"\0" * 32), datetime(2024, 6, 1))


def test_chain_cache_keeps_no_refusal_and_is_bounded(root: DevelopmentRoot) -> None:
    chains = ChainCache(max_entries=1)
    wrong_product = _real_evidence("ask_ark_genoa.pem")
    policy = SnpPolicy(allow_debug=True).with_development_root(root.ark_fingerprint)
    assert appraise(wrong_product, policy, report_data=None, now=VECTOR_TIME, chains=chains).reasons == (
        Reason.CHAIN,
    )
    assert len(chains) == 0
    assert appraise(_real_evidence(), policy, report_data=None, now=VECTOR_TIME, chains=chains).verified
    simulated = SimulatedSnp(root, measurement=b"\x07" * 48, host_data=bytes(32)).evidence(bytes(64))
    assert appraise(simulated, policy, report_data=None, chains=chains).verified
    assert len(chains) == 1
    with pytest.raises(ValueError):
        ChainCache(max_entries=0)
