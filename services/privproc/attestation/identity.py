"""``privproc serve gateway-identity``: the gateway's mTLS service certificate, issued and renewed.

The gateway reaches predictors over mutual TLS under the verifier's CA
(:mod:`privproc.gateway.predictors`). Its own certificate is the operator's
to issue, from the CA's key, never over the network: this process holds
the CA (``--ca-dir``: ``ca.pem`` and ``ca.key``, a read-only mount works)
and writes ``OUT/tls.key`` then ``OUT/tls.crt``, each replaced atomically,
then a fresh pair half-way through each certificate's life. The gateway
reads the files again on each admission check, so it takes a renewed pair
while it runs, and refuses a pair whose key is not the certificate's (the
moment between the two writes). ``--once`` writes one pair and exits: an
init container, so the gateway never starts without one.

In a cluster this is the only container that mounts the CA's key; under
``privproc up`` the supervisor does the same in its own process
(:func:`issue` and :func:`renew_forever`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from privproc import events
from privproc.attestation.workload import VerifierCA
from privproc.errors import ConfigError
from privproc.runtime import mtls, settings
from privproc.runtime.keyfiles import replace_file
from privproc.runtime.tasks import supervise

#: The pair's file names in the output directory (those of a Kubernetes TLS Secret).
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
#: Wait before trying again to write a renewed certificate that could not be written.
RETRY_SECONDS = 30.0


@settings.declared("gateway-identity")
class GatewayIdentityConfig:
    """``privproc serve gateway-identity``: the gateway's mTLS certificate, issued and renewed."""

    ca_dir: Path = settings.option(help="directory of the verifier's CA: ca.pem and ca.key")
    out_dir: Path = settings.option(help="where tls.key and tls.crt are written (the gateway reads them)")
    once: bool = settings.option(default=False, help="write one pair and exit (an init container)")
    retry_seconds: float = settings.option(
        default=RETRY_SECONDS, help="wait before trying again when a renewed pair cannot be written"
    )


def issue(ca_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """A fresh key and service certificate from the CA in ``ca_dir``, into ``out_dir``.

    Returns the certificate's and the key's paths. The key is written first: a
    reader that sees the new certificate sees its key too.
    """
    ca = VerifierCA.load(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    identity = mtls.Identity.of(ca.issue_service(key.public_key(), mtls.WORKLOAD_NAME), key)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = out_dir / CERT_FILE, out_dir / KEY_FILE
    replace_file(key_path, identity.key_pem)
    replace_file(cert_path, identity.certificate_pem)
    return cert_path, key_path


def renewal_delay(certificate_file: Path) -> float:
    """Seconds until the certificate in ``certificate_file`` is to be replaced (half its life left)."""
    certificate = x509.load_pem_x509_certificate(certificate_file.read_bytes())
    return mtls.renewal_delay(certificate, datetime.datetime.now(datetime.UTC))


async def renew_forever(ca_dir: Path, out_dir: Path, *, retry_seconds: float = RETRY_SECONDS) -> None:
    """Issue a fresh pair half-way to each one's expiry, for ever (the current pair is there)."""
    delay = renewal_delay(out_dir / CERT_FILE)
    while True:
        await asyncio.sleep(delay)
        try:
            await asyncio.to_thread(issue, ca_dir, out_dir)
            delay = renewal_delay(out_dir / CERT_FILE)
        except (OSError, ConfigError) as err:  # the current pair still has half its life: retry soon
            reason = "ca_unreadable" if isinstance(err, ConfigError) else "unwritable"
            events.emit(events.IdentityIssueFailed(reason=reason))
            delay = retry_seconds
            continue
        events.emit(events.IdentityIssued(renewal=True))


class GatewayIdentityService:
    """Writes the first pair on start; renews it (supervised) until stopped, or stops (``--once``)."""

    name = "gateway-identity"

    def __init__(self, config: GatewayIdentityConfig) -> None:
        self.config = config
        #: Set when the service has done its work (``--once``): :func:`privproc.runtime.lifecycle.run`
        #: then stops it and exits 0.
        self.finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, object]:
        config = self.config
        cert_path, key_path = await asyncio.to_thread(issue, config.ca_dir, config.out_dir)
        events.emit(events.IdentityIssued(renewal=False))
        if config.once:
            self.finished.set()
        else:
            self._task = supervise(
                "identity.renewal",
                lambda: renew_forever(config.ca_dir, config.out_dir, retry_seconds=config.retry_seconds),
            )
        return {"cert_file": str(cert_path), "key_file": str(key_path)}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def build(config: GatewayIdentityConfig) -> GatewayIdentityService:
    return GatewayIdentityService(config)
