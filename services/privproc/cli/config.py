"""``privproc config schema [SERVICE]``: the JSON schema of each service's configuration.

A deployment's values file (a Helm chart's ``values.schema.json``) reuses
it: one object per service, each option with its type, default, help, flag
(``x-privproc-flag``), environment variable (``x-privproc-env``) and whether
it names a secret file (``x-privproc-secret-file``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from privproc.cli.serve import SERVICES
from privproc.runtime import settings


def register(sub: Any) -> None:
    config = sub.add_parser("config", help="the services' configuration: schema")
    config.add_argument("action", choices=["schema"])
    config.add_argument("service", nargs="?", choices=[*SERVICES, "up"], help="one service (default: all)")
    config.set_defaults(func=config_cmd)


def schemas(names: list[str]) -> dict[str, Any]:
    """Each named service's JSON schema (``up``: the local stack's own options)."""
    from privproc.stack import StackConfig

    return {
        name: settings.json_schema(StackConfig if name == "up" else SERVICES[name].config_class())
        for name in names
    }


def config_cmd(args: argparse.Namespace) -> int:
    if args.service is not None:
        document = schemas([args.service])[args.service]
    else:
        document = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "privproc services",
            "type": "object",
            "properties": schemas(list(SERVICES)),
            "additionalProperties": False,
        }
    print(json.dumps(document, indent=2, sort_keys=True))
    return 0
