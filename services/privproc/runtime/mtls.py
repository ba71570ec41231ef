"""Mutual TLS for internal gRPC: both ends hold certificates from the verifier's CA.

Predictors (CVMs) present workload certificates the verifier issued after
appraising their evidence; the gateway presents its service certificate
from the same CA. Each side trusts only that CA, so a predictor without a
verifier-issued certificate cannot be reached, and nothing but the
gateway (or another admitted CVM) can reach a predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def server_credentials(identity: Identity, client_ca_pem: bytes) -> grpc.ServerCredentials:
    """Server side: present ``identity``, require a client certificate from ``client_ca_pem``."""
    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.certificate_pem)],
        root_certificates=client_ca_pem,
        require_client_auth=True,
    )


def channel_credentials(identity: Identity, server_ca_pem: bytes) -> grpc.ChannelCredentials:
    """Client side: present ``identity``, accept only a server certificate from ``server_ca_pem``."""
    return grpc.ssl_channel_credentials(
        root_certificates=server_ca_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.certificate_pem,
    )


def channel_options(name: str = WORKLOAD_NAME) -> list[tuple[str, str | int]]:
    """Check the server's certificate for ``name`` whatever address it is dialled at."""
    return [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]
