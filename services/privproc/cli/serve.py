"""``privproc serve SERVICE``: run one service in the foreground (what ``privproc up`` spawns).

Each service's flags come from its Config declaration
(:mod:`privproc.runtime.settings`); a flag given wins over its environment
variable ``PRIVPROC_<SERVICE>_<FIELD>``, which wins over the default. Only
the named service's module is imported: a ``serve`` process loads one
service.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privproc import events
from privproc.errors import PrivprocError, exception_token
from privproc.runtime import settings


@dataclass(frozen=True)
class ServiceEntry:
    """Where a service's Config and its ``build(config) -> service`` live."""

    module: str
    config: str
    help: str

    def config_class(self) -> type[Any]:
        kind: type[Any] = getattr(importlib.import_module(self.module), self.config)
        return kind

    def build(self, config: Any) -> Any:
        return importlib.import_module(self.module).build(config)


#: Every service, in the order ``privproc up`` starts them (then those it does not start).
SERVICES = {
    "cdn": ServiceEntry("privproc.cdn.server", "CdnConfig", "the key CDN"),
    "witness": ServiceEntry("privproc.ledger.witness_server", "WitnessConfig", "a tlog witness"),
    "ledger": ServiceEntry("privproc.ledger.server", "LedgerConfig", "the transparency log"),
    "verifier": ServiceEntry("privproc.attestation.verifier", "VerifierConfig", "the attestation verifier"),
    "predictor": ServiceEntry("privproc.predictor.server", "PredictorConfig", "the predictor (a CVM)"),
    "acs": ServiceEntry("privproc.acs.server", "AcsConfig", "the token issuer"),
    "gateway": ServiceEntry("privproc.gateway.server", "GatewayConfig", "the OHTTP gateway"),
    "relay": ServiceEntry("privproc.relay.server", "RelayConfig", "the OHTTP relay"),
    "log-sidecar": ServiceEntry(
        "privproc.logsidecar.server", "LogSidecarConfig", "the CVM's allow-listed log sidecar"
    ),
    # Not started by ``privproc up`` (its supervisor issues the certificate itself): a cluster's.
    "gateway-identity": ServiceEntry(
        "privproc.attestation.identity",
        "GatewayIdentityConfig",
        "issue and renew the gateway's mTLS certificate from the verifier's CA",
    ),
}


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run one service (flags: privproc serve SERVICE --help)")
    services = serve.add_subparsers(dest="name", required=True, metavar="SERVICE")
    for name, entry in SERVICES.items():
        # Its flags are added when it is the one run (see run): no other service module is imported.
        services.add_parser(name, help=entry.help, add_help=False)
    serve.set_defaults(func=run, takes_rest=True)


def service_parser(name: str) -> tuple[argparse.ArgumentParser, type[Any]]:
    """``privproc serve NAME``'s own parser, from its Config."""
    config = SERVICES[name].config_class()
    parser = argparse.ArgumentParser(
        prog=f"privproc serve {name}",
        description=(config.__doc__ or "").strip()
        + " A flag wins over its environment variable, which wins over the default.",
    )
    settings.add_arguments(parser, config)
    return parser, config


def run(args: argparse.Namespace, rest: list[str]) -> int:
    from privproc.runtime import parentdeath

    parentdeath.die_with_parent()
    parser, kind = service_parser(args.name)
    config = settings.load(kind, parser.parse_args(rest), os.environ)
    events.configure_logging(args.name)
    # A service whose Config has a ``log_socket`` (the CVM's predictor) logs through its sidecar
    # only, from here on: before building it (loading models) can print anything.
    log_socket: Path | None = getattr(config, "log_socket", None)
    if log_socket is None:
        return _serve(args.name, config)
    from privproc.runtime import logsink

    sink = logsink.route_process_to_sidecar(log_socket)
    try:
        return _serve(args.name, config)
    except Exception as err:
        # Its stderr is closed: the failure's reason (never its text) goes to the sidecar.
        reason = err.reason if isinstance(err, PrivprocError) else exception_token(err)
        events.emit(events.ServiceStartFailed(service=args.name, reason=reason))
        raise
    finally:
        sink.close(timeout=5.0)


def _serve(name: str, config: Any) -> int:
    from privproc.runtime import lifecycle, telemetry

    # Before the service is built: its instruments then record into these providers. A
    # service without the group (the predictor: only its sidecar lets anything out) gets none.
    installed = telemetry.install(name, getattr(config, "telemetry", None))

    async def serve() -> int:
        # Built inside the running loop: gRPC aio servers bind to it.
        return await lifecycle.run(SERVICES[name].build(config))

    try:
        # Non-zero when a background task could not go on: the supervisor sees the failure.
        return asyncio.run(serve())
    finally:
        installed.shutdown()  # the last export: what the final interval counted
