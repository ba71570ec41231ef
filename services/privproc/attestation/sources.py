"""Where evidence comes from: Linux configfs-tsm on a real CVM, else the simulator.

configfs-tsm (``/sys/kernel/config/tsm/report``): a process makes a report
directory, writes 64 bytes of ``inblob`` (SNP REPORT_DATA), reads
``outblob`` (the report), ``auxblob`` (the SNP certificate table) and
``provider`` (``sev_guest`` or ``tdx_guest``), checks ``generation`` did not
move under it (another writer raced it), and removes the directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

from privproc.attestation.evidence import Evidence, EvidenceType, parse_cert_table, snp_chain_from_table
from privproc.errors import UnavailableError

CONFIGFS_TSM = Path("/sys/kernel/config/tsm/report")
REPORT_DATA_SIZE = 64


class EvidenceSource(Protocol):
    """Produces evidence whose REPORT_DATA is exactly ``report_data`` (64 bytes).

    A source may say whether :meth:`evidence` waits on the kernel or firmware
    (``blocking = True``: callers on an event loop run it in a thread) or is
    quick CPU work (``blocking = False``); one that does not say is treated as
    blocking.
    """

    def evidence(self, report_data: bytes) -> Evidence: ...


def is_blocking(source: EvidenceSource) -> bool:
    """Whether ``source`` waits on something outside the process (the safe answer if it does not say)."""
    return bool(getattr(source, "blocking", True))


class ConfigfsTsmSource:
    """The kernel's attestation report interface on a real SEV-SNP (or TDX) guest."""

    #: Each report is a round trip through the kernel to the security processor.
    blocking = True

    def __init__(self, root: Path = CONFIGFS_TSM) -> None:
        self.root = root

    @staticmethod
    def available(root: Path = CONFIGFS_TSM) -> bool:
        return root.is_dir()

    def evidence(self, report_data: bytes) -> Evidence:
        if len(report_data) != REPORT_DATA_SIZE:
            raise ValueError("REPORT_DATA is 64 bytes")
        entry = self.root / f"privproc-{secrets.token_hex(8)}"
        try:
            entry.mkdir()
        except OSError as err:
            raise UnavailableError("configfs-tsm unavailable") from err
        try:
            generation = (entry / "generation").read_text().strip()
            (entry / "inblob").write_bytes(report_data)
            report = (entry / "outblob").read_bytes()
            aux = (entry / "auxblob").read_bytes() if (entry / "auxblob").exists() else b""
            provider = (entry / "provider").read_text().strip()
            if str(int(generation) + 1) != (entry / "generation").read_text().strip():
                raise UnavailableError("configfs-tsm report raced with another writer")
        except OSError as err:
            raise UnavailableError("configfs-tsm report failed") from err
        finally:
            if entry.exists():
                os.rmdir(entry)
        if provider == "sev_guest":
            chain = snp_chain_from_table(parse_cert_table(aux)) if aux else ()
            return Evidence(EvidenceType.SEV_SNP, report, chain, aux)
        if provider == "tdx_guest":
            return Evidence(EvidenceType.TDX_QUOTE, report, (), aux)
        raise UnavailableError("unknown configfs-tsm provider")
