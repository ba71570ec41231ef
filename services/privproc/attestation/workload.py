"""The verifier's CA: short-lived workload certificates for mutually attested TLS.

A CVM asks for a certificate with its evidence and a CSR; the verifier
issues one only if the evidence appraises and its REPORT_DATA binds the
CSR's key: ``SHA-512("privproc-workload-key/v1\\n" || SubjectPublicKeyInfo)``.
The certificate carries the CVM's measurement in an extension, lives minutes
to an hour, and is what internal gRPC (gateway ↔ predictor, CVM ↔ CVM)
authenticates with. Non-CVM services of the operator (the gateway) get a
service certificate from the same CA through the operator's own tooling,
never over the network.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privproc.errors import BadRequestError, ConfigError, PermissionDeniedError

BINDING_DOMAIN = b"privproc-workload-key/v1\n"
#: OID of the measurement extension (UUID arc 2.25: no registry needed).
MEASUREMENT_OID = x509.ObjectIdentifier("2.25.215573046925409736384377151359342406221")
MAX_VALIDITY = datetime.timedelta(hours=1)
#: The CA's files in its directory (``privproc serve verifier --ca-dir``, ``privproc cluster secrets``).
CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.pem"


def key_binding(public_key_spki_der: bytes) -> bytes:
    """The REPORT_DATA that binds evidence to a key."""
    return hashlib.sha512(BINDING_DOMAIN + public_key_spki_der).digest()


def spki(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass
class VerifierCA:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def load(cls, directory: Path) -> VerifierCA:
        """The CA kept in ``directory`` (``ca.key``, ``ca.pem``); only read (a read-only mount works)."""
        try:
            key_pem = (directory / CA_KEY_FILE).read_bytes()
            cert_pem = (directory / CA_CERT_FILE).read_bytes()
        except OSError as err:
            raise ConfigError("the verifier CA directory has no readable ca.key and ca.pem") from err
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise ConfigError("the verifier CA's ca.key or ca.pem does not parse") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != certificate.public_key():
            raise ConfigError("the verifier CA's ca.key is not the key of its ca.pem")
        return cls(key, certificate)

    @classmethod
    def load_or_create(cls, directory: Path, name: str = "privproc verifier CA") -> VerifierCA:
        """The CA kept in ``directory``, made (0700 directory, 0600 key) on first use."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if key_path.exists() and cert_path.exists():
            return cls.load(directory)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))  # fmt: skip
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(key, certificate)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        validity: datetime.timedelta,
        measurement: bytes | None,
        now: datetime.datetime | None,
    ) -> x509.Certificate:
        if validity > MAX_VALIDITY or validity <= datetime.timedelta(0):
            raise BadRequestError("certificate lifetime out of range")
        now = now or datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=30))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        )
        if measurement is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(MEASUREMENT_OID, measurement), critical=False
            )
        return builder.sign(self.key, hashes.SHA256())

    def issue_workload(
        self,
        csr_der: bytes,
        *,
        bound_report_data: bytes,
        measurement: bytes,
        validity: datetime.timedelta = datetime.timedelta(minutes=15),
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """A certificate for the CSR's key, if the (already appraised) evidence binds it."""
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError:
            raise BadRequestError("CSR does not parse") from None
        public_key = csr.public_key()
        if not csr.is_signature_valid or not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise BadRequestError("CSR must be a valid EC key request")
        if key_binding(spki(public_key)) != bound_report_data:
            raise PermissionDeniedError("evidence does not bind the CSR's key")
        return self._issue(public_key, "cvm.privproc.local", validity, measurement, now)

    def issue_service(
        self,
        public_key: ec.EllipticCurvePublicKey,
        name: str,
        *,
        validity: datetime.timedelta = MAX_VALIDITY,
    ) -> x509.Certificate:
        """An operator service's certificate (the gateway), issued locally by the operator."""
        return self._issue(public_key, name, validity, None, None)


def measurement_of(certificate: x509.Certificate) -> bytes | None:
    try:
        ext = certificate.extensions.get_extension_for_oid(MEASUREMENT_OID).value
    except x509.ExtensionNotFound:
        return None
    return bytes(ext.value) if isinstance(ext, x509.UnrecognizedExtension) else None
