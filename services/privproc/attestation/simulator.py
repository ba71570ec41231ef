"""A simulated SEV-SNP CVM: real-layout reports signed exactly like hardware's.

The simulator keeps a development root in its state directory — an
RSA-4096 ARK and ASK (RSA-PSS SHA-384, salt 48, like AMD's) and a P-384
VCEK carrying AMD's VCEK extensions (product, TCB SPLs, hwID) — and signs
ATTESTATION_REPORTs with the VCEK. Its measurement is the digest of the
predictor image (:mod:`privproc.attestation.measure`), its HOST_DATA the
configuration's digest. The development ARK is trusted only by clients
configured with its fingerprint (the local stack's; never the default).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from privproc.attestation.abi import AttestationReport, GuestPolicy, PlatformInfo, Product, TcbVersion
from privproc.attestation.evidence import Evidence, EvidenceType
from privproc.attestation.verify import sign_report
from privproc.wire import der

AMD_ARC = "1.3.6.1.4.1.3704.1."
PSS48 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
#: Guest policy of the simulated CVM: SMT allowed, reserved bit 17, no debug, no migration agent.
SIMULATED_POLICY = 0x30000
SIMULATED_TCB = TcbVersion(bootloader=4, tee=0, snp=22, microcode=213, fmc=None)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "privproc development (simulated SEV-SNP)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _load_or_make(path: Path, make: Callable[[], bytes]) -> bytes:
    if not path.exists():
        data = make()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return path.read_bytes()


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class DevelopmentRoot:
    """The simulator's ARK, ASK and VCEK (keys and certificates)."""

    ark: bytes  # DER
    ask: bytes
    vcek: bytes
    vcek_key: ec.EllipticCurvePrivateKey
    chip_id: bytes
    tcb: TcbVersion

    @property
    def ark_fingerprint(self) -> bytes:
        return hashlib.sha256(self.ark).digest()

    @classmethod
    def load_or_create(
        cls, directory: Path, *, rsa_bits: int = 4096, tcb: TcbVersion = SIMULATED_TCB
    ) -> DevelopmentRoot:
        """The root kept in ``directory`` (made on first use), with a VCEK for the platform ``tcb``.

        As AMD's KDS does for a real chip, the same ARK and ASK certify one
        VCEK per TCB: a root for an older ``tcb`` (a host that rolled its
        firmware back) chains to the same trusted ARK, and only the TCB in
        its VCEK certificate tells it apart.
        """
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

        def rsa_key(name: str) -> rsa.RSAPrivateKey:
            pem = _load_or_make(directory / name, lambda: _pem_key(rsa.generate_private_key(65537, rsa_bits)))
            key = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return key

        ark_key, ask_key = rsa_key("ark.key"), rsa_key("ask.key")
        vcek_pem = _load_or_make(
            directory / "vcek.key", lambda: _pem_key(ec.generate_private_key(ec.SECP384R1()))
        )
        vcek_key = serialization.load_pem_private_key(vcek_pem, password=None)
        assert isinstance(vcek_key, ec.EllipticCurvePrivateKey)
        chip_id = _load_or_make(directory / "chip_id", lambda: secrets.token_bytes(64))

        def cert(
            name: str,
            issuer: str,
            public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
            signer: rsa.RSAPrivateKey,
            exts: list[tuple[x509.ExtensionType, bool]],
            *,
            file_name: str | None = None,
        ) -> bytes:
            path = directory / (file_name or f"{name}.der")
            if path.exists():
                return path.read_bytes()
            now = datetime.datetime.now(datetime.UTC)
            builder = (
                x509.CertificateBuilder()
                .subject_name(_name(name))
                .issuer_name(_name(issuer))
                .public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=3650))
            )
            for ext, critical in exts:
                builder = builder.add_extension(ext, critical=critical)
            der = builder.sign(signer, hashes.SHA384(), rsa_padding=PSS48).public_bytes(
                serialization.Encoding.DER
            )
            path.write_bytes(der)
            return der

        def ca(path_length: int | None) -> list[tuple[x509.ExtensionType, bool]]:
            usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
            return [(x509.BasicConstraints(ca=True, path_length=path_length), True), (usage, True)]

        def amd(suffix: str, value: bytes) -> tuple[x509.ExtensionType, bool]:
            return x509.UnrecognizedExtension(x509.ObjectIdentifier(AMD_ARC + suffix), value), False

        vcek_exts: list[tuple[x509.ExtensionType, bool]] = [
            amd("1", der.encode_integer(0)),
            amd("2", der.encode_tlv(der.TAG_IA5_STRING, b"Milan-B0")),
            amd("3.1", der.encode_integer(tcb.bootloader)),
            amd("3.2", der.encode_integer(tcb.tee)),
            amd("3.3", der.encode_integer(tcb.snp)),
            *(amd(f"3.{i}", der.encode_integer(0)) for i in range(4, 8)),
            amd("3.8", der.encode_integer(tcb.microcode)),
            amd("4", chip_id),
        ]
        ark = cert("ARK-Milan", "ARK-Milan", ark_key.public_key(), ark_key, ca(None))
        ask = cert("SEV-Milan", "ARK-Milan", ask_key.public_key(), ark_key, ca(0))
        vcek_file = None if tcb == SIMULATED_TCB else f"SEV-VCEK-{tcb.to_u64(Product.MILAN):016x}.der"
        vcek = cert("SEV-VCEK", "SEV-Milan", vcek_key.public_key(), ask_key, vcek_exts, file_name=vcek_file)
        return cls(ark, ask, vcek, vcek_key, chip_id, tcb)


class SimulatedSnp:
    """An evidence source that signs real-layout reports with the development VCEK."""

    #: One ECDSA P-384 signature in this process (~0.2 ms): nothing to wait for.
    blocking = False

    def __init__(
        self, root: DevelopmentRoot, *, measurement: bytes, host_data: bytes, policy: int = SIMULATED_POLICY
    ):
        if len(measurement) != 48 or len(host_data) != 32:
            raise ValueError("SNP measurement is 48 bytes, HOST_DATA 32")
        self.root = root
        self.measurement = measurement
        self.host_data = host_data
        self.policy = policy

    def report(self, report_data: bytes) -> AttestationReport:
        if len(report_data) != 64:
            raise ValueError("REPORT_DATA is 64 bytes")
        tcb = self.root.tcb.to_u64(Product.MILAN)
        unsigned = AttestationReport(
            version=3,
            policy=GuestPolicy(self.policy),
            platform_info=PlatformInfo(1),
            current_tcb=tcb,
            reported_tcb=tcb,
            committed_tcb=tcb,
            launch_tcb=tcb,
            report_data=report_data,
            measurement=self.measurement,
            host_data=self.host_data,
            report_id=secrets.token_bytes(32),
            report_id_ma=b"\xff" * 32,
            chip_id=self.root.chip_id,
            cpuid_fam_id=0x19,
            cpuid_mod_id=0x01,
            cpuid_step=0x01,
            current_build=3,
            current_minor=55,
            current_major=1,
            committed_build=3,
            committed_minor=55,
            committed_major=1,
        )
        return sign_report(unsigned, self.root.vcek_key)

    def evidence(self, report_data: bytes) -> Evidence:
        report = self.report(report_data)
        return Evidence(EvidenceType.SEV_SNP, report.encode(), (self.root.vcek, self.root.ask, self.root.ark))
