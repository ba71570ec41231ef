"""``privproc attest show|verify``: a SEV-SNP attestation report (exit 0 verified, 1 rejected)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from privproc.cli import options
from privproc.errors import ConfigError


def register(sub: Any) -> None:
    attest = sub.add_parser("attest", help="show or verify a SEV-SNP attestation report")
    attest.add_argument("action", choices=["show", "verify"])
    attest.add_argument("report", type=Path, help="the report, binary (1184 bytes) or hex")
    attest.add_argument("--vcek", type=Path, help="verify: the VCEK (or VLEK) certificate, DER or PEM")
    attest.add_argument("--chain", type=Path, help="verify: ASK then ARK, PEM (AMD KDS cert_chain)")
    attest.add_argument("--allow-debug", action="store_true", help="verify: accept a debug-enabled guest")
    options.add_json(attest)
    attest.set_defaults(func=attest_cmd)


def attest_cmd(args: argparse.Namespace) -> int:
    """``attest show`` prints a report's fields; ``attest verify`` checks signature, chain and policy."""
    from privproc.attestation import abi, kds
    from privproc.attestation.appraisal import SnpPolicy, appraise
    from privproc.attestation.evidence import Evidence, EvidenceType

    raw = args.report.read_bytes()
    if len(raw) != abi.REPORT_SIZE:  # hex, possibly with whitespace
        try:
            raw = bytes.fromhex("".join(raw.decode("ascii").split()))
        except (UnicodeDecodeError, ValueError):
            raise ConfigError("the report is neither 1184 bytes nor hex") from None
    report = abi.AttestationReport.parse(raw)
    if args.action == "show":
        fields = _report_fields(report)
        print(
            json.dumps(fields, indent=2)
            if args.json
            else "\n".join(f"{k:20s} {v}" for k, v in fields.items())
        )
        return 0
    if args.vcek is None or args.chain is None:
        raise SystemExit("privproc attest verify: --vcek and --chain (ASK then ARK, PEM) are required")
    ask, ark = kds.split_pem_chain(args.chain.read_bytes())
    vcek = args.vcek.read_bytes()
    if vcek.startswith(b"-----BEGIN"):
        vcek = kds.split_pem_chain(vcek)[0]
    evidence = Evidence(EvidenceType.SEV_SNP, raw, (vcek, ask, ark))
    appraisal = appraise(evidence, SnpPolicy(allow_debug=args.allow_debug), report_data=None)
    result = {
        "verified": appraisal.verified,
        "reasons": [str(r) for r in appraisal.reasons],
        "product": appraisal.claims.product if appraisal.claims else None,
        "measurement": report.measurement.hex(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("verified" if appraisal.verified else "REJECTED: " + ", ".join(result["reasons"]))  # type: ignore[arg-type]
        print(f"product      {result['product']}")
        print(f"measurement  {result['measurement']}")
    return 0 if appraisal.verified else 1


def _report_fields(report: Any) -> dict[str, Any]:
    return {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "policy": hex(report.policy.raw),
        "debug_allowed": report.policy.debug,
        "migration_agent": report.policy.migrate_ma,
        "vmpl": report.vmpl,
        "signature_algo": report.signature_algo,
        "current_tcb": hex(report.current_tcb),
        "reported_tcb": hex(report.reported_tcb),
        "committed_tcb": hex(report.committed_tcb),
        "launch_tcb": hex(report.launch_tcb),
        "platform_info": hex(report.platform_info.raw),
        "report_data": report.report_data.hex(),
        "measurement": report.measurement.hex(),
        "host_data": report.host_data.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "chip_id": report.chip_id.hex(),
        "firmware": f"{report.current_major}.{report.current_minor} build {report.current_build}",
    }
