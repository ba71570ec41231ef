"""Mutual TLS for internal gRPC: both ends hold certificates from the verifier's CA.

Predictors (CVMs) present workload certificates the verifier issued after
appraising their evidence; the gateway presents its service certificate
from the same CA. Each side trusts only that CA, so a predictor without a
verifier-issued certificate cannot be reached, and nothing but the
gateway (or another admitted CVM) can reach a predictor.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

#: The name in every workload certificate; channels check it.
WORKLOAD_NAME = "cvm.privproc.local"


@dataclass(frozen=True)
class Identity:
    """A certificate chain (PEM) and its private key (PEM)."""

    certificate_pem: bytes
    key_pem: bytes

    @classmethod
    def of(cls, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Identity:
        return cls(
            certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )


class IdentityError(ValueError):
    """A certificate and key that do not parse or do not belong together."""


def certificate_of(identity: Identity) -> x509.Certificate:
    """The leaf certificate of ``identity``, once its key is checked to be the certificate's key."""
    try:
        certificate = x509.load_pem_x509_certificate(identity.certificate_pem)
        key = serialization.load_pem_private_key(identity.key_pem, password=None)
    except ValueError:
        raise IdentityError("certificate or key does not parse") from None
    if certificate.public_key() != key.public_key():
        raise IdentityError("the key is not the certificate's")
    return certificate


def renewal_delay(certificate: x509.Certificate, now: datetime.datetime) -> float:
    """Seconds until a certificate just received should be replaced: half its remaining validity.

    (Not half its nominal validity: issuers backdate ``notBefore`` for clock skew.) At least 1 s.
    """
    return max(1.0, (certificate.not_valid_after_utc - now).total_seconds() / 2)


class RenewableServerIdentity:
    """What a gRPC server presents, replaceable while it serves (certificate renewal).

    gRPC calls the fetcher at each new TLS handshake; it hands over a new
    configuration only after :meth:`replace`. Connections made earlier keep
    the certificate they were made with, so servers also cap connection age
    (``grpc.max_connection_age_ms``): no connection outlives a certificate.
    Clients must present a certificate from ``client_ca_pem``.
    """

    def __init__(self, identity: Identity, client_ca_pem: bytes) -> None:
        self._client_ca_pem = client_ca_pem
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._initial = self._configuration(identity)
        self.certificate = certificate_of(identity)

    def _configuration(self, identity: Identity) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(identity.key_pem, identity.certificate_pem)], root_certificates=self._client_ca_pem
        )

    def replace(self, identity: Identity) -> None:
        """Present ``identity`` from the next handshake on (:class:`IdentityError` if it is not a pair)."""
        certificate = certificate_of(identity)
        configuration = self._configuration(identity)
        with self._lock:
            self._pending = configuration
            self.certificate = certificate

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called from gRPC's own threads: hand over a new configuration once.
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def credentials(self) -> grpc.ServerCredentials:
        # gRPC documents None as "no change"; the type stubs do not.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch)
        return grpc.dynamic_ssl_server_credentials(self._initial, fetch, require_client_authentication=True)


def channel_credentials(identity: Identity, server_ca_pem: bytes) -> grpc.ChannelCredentials:
    """Client side: present ``identity``, accept only a server certificate from ``server_ca_pem``."""
    return grpc.ssl_channel_credentials(
        root_certificates=server_ca_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.certificate_pem,
    )


def file_identity(
    certificate_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
) -> Callable[[], Identity]:
    """Reads an identity from its two PEM files each time it is called (so a renewed pair is seen)."""

    def read() -> Identity:
        with open(certificate_file, "rb") as cert, open(key_file, "rb") as key:
            return Identity(cert.read(), key.read())

    return read


def channel_options(name: str = WORKLOAD_NAME) -> list[tuple[str, str | int]]:
    """Check the server's certificate for ``name`` whatever address it is dialled at."""
    return [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]
