"""Generate ``charts/privproc/values.schema.json`` from the services' configuration and values.yaml.

``make chart-schema`` writes it; ``tests/test_chart_schema.py`` checks the
committed file is what this generates. Two sources, nothing hand-written:

* each component's ``config:`` map (extra options of ``privproc serve
  SERVICE``, which the chart passes as ``PRIVPROC_<SERVICE>_<OPTION>``
  variables) is validated by that service's JSON schema, as ``privproc
  config schema`` prints it, less the options the chart sets itself
  (addresses, ports, directories, keys) and every secret file (those come
  from Kubernetes Secrets, never from values);
* the chart's own fields take their type and default from values.yaml and
  their description from the comment above each one (every field must have
  one: the tool fails on an undocumented field).

Usage::

    python tools/chart_schema.py [--check] [--out charts/privproc/values.schema.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from privproc.cli.config import schemas

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "privproc"
OUT = CHART / "values.schema.json"

#: values path of a component's ``config:`` map -> the service whose options it holds.
CONFIG_MAPS: dict[tuple[str, ...], str] = {
    ("relay", "config"): "relay",
    ("gateway", "config"): "gateway",
    ("predictor", "config"): "predictor",
    ("predictor", "logSidecar", "config"): "log-sidecar",
    ("cdn", "config"): "cdn",
    ("verifier", "config"): "verifier",
    ("ledger", "config"): "ledger",
    ("witness", "config"): "witness",
    ("acs", "config"): "acs",
}

#: Options every served component gets from the chart (listening address, fixed ports, state).
_COMMON = {"host", "grpc_port", "http_port", "state_dir", "telemetry.directory"}
#: Options the chart sets per service (peers' addresses, public keys, files it mounts).
CHART_SET: dict[str, set[str]] = {
    "relay": _COMMON | {"gateway_target", "gateway_url"},
    "gateway": _COMMON
    | {
        "acs_target",
        "cdn_target",
        "ledger_target",
        "issuer_name",
        "redis_url",
        "predictor_targets",
        "predictor_service",
        "predictor_port_name",
        "verifier_ca_file",
        "mtls_cert_file",
    },
    "predictor": _COMMON
    | {
        "verifier_target",
        "verifier_ca_file",
        "simulator_dir",
        "ledger_target",
        "release_proofs_url",
        "log_socket",
        "model_cache",
        "image_digest",
        "model",
    },
    "log-sidecar": _COMMON | {"socket_path", "output", "allowlist_digest"},
    "cdn": _COMMON,
    "verifier": _COMMON
    | {
        "ca_dir",
        "ledger_grpc",
        "ledger_tiles_url",
        "log_vkey",
        "witness_vkeys",
        "release_keys",
        "development_root",
    },
    "ledger": _COMMON | {"publishers", "witnesses"},
    "witness": _COMMON | {"logs"},
    "acs": _COMMON | {"cdn_target", "ledger_target", "issuer_name", "demo_account"},
}

#: Chart fields whose content is Kubernetes' own (resources, selectors, peers, ...): any object.
FREE_FORM = {
    "podAnnotations",
    "resources",
    "nodeSelector",
    "tolerations",
    "affinity",
    "annotations",
    "pullSecrets",
    "publicFrom",
    "gatewayFrom",
    "cdnPublishersFrom",
    "apiServer",
    "extraEgress",
    "to",
    "command",
    "args",
}

#: The chart's ``model:`` fields and the predictor's model options they feed (same values).
MODEL_FIELDS = {
    "languageModel": "language_model",
    "embedder": "embedder",
    "dtype": "dtype",
    "summaryStrategy": "summary_strategy",
}

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


def descriptions(text: str) -> dict[tuple[str, ...], str]:
    """Each values.yaml key's path -> the comment block right above it (``# --`` marks stripped)."""
    found: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip().removeprefix("--").strip())
            continue
        match = _KEY.match(line)
        if match is None:  # a list item or a flow collection's continuation
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending:
            found[tuple(key for _, key in stack)] = " ".join(pending)
        pending = []
    return found


def _service_schema(name: str, document: dict[str, Any]) -> dict[str, Any]:
    """``name``'s options a values file may set: the chart's own and secret files left out."""
    schema = copy.deepcopy(document)
    schema.pop("$schema", None)
    _prune(schema, CHART_SET[name], ())
    schema["description"] = (
        f"extra `privproc serve {name}` options (as `privproc config schema {name}` lists them), "
        f"passed as its PRIVPROC_{name.upper().replace('-', '_')}_* environment variables"
    )
    return schema


def _prune(schema: dict[str, Any], drop: set[str], prefix: tuple[str, ...]) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    for key in list(properties):
        path = ".".join((*prefix, key))
        option = properties[key]
        if path in drop or option.get("x-privproc-secret-file"):
            del properties[key]
        elif option.get("type") == "object" and "properties" in option:
            _prune(option, drop, (*prefix, key))
        else:
            _clean(option)
    schema.pop("required", None)  # the chart gives every required option itself


def _clean(option: dict[str, Any]) -> None:
    """Keep what a values validator needs; ``format: path`` is no JSON-schema format."""
    option.pop("format", None)
    for branch in option.get("anyOf", []):
        branch.pop("format", None)
    if isinstance(option.get("items"), dict):
        option["items"].pop("format", None)


def _json_type(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    if value is None:
        return {}
    return {"type": "object"}


def _chart_schema(
    value: Any,
    path: tuple[str, ...],
    described: dict[tuple[str, ...], str],
    services: dict[str, Any],
) -> dict[str, Any]:
    if path in CONFIG_MAPS:
        return _service_schema(CONFIG_MAPS[path], services[CONFIG_MAPS[path]])
    description = described.get(path)
    if path and description is None:
        raise SystemExit(f"values.yaml: {'.'.join(path)} has no comment describing it")
    if path == ("model",):
        return _model_schema(value, services["predictor"], description or "")
    schema = _json_type(value)
    if path and path[-1] == "nodePorts":
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                port: {"type": "integer", "minimum": 30000, "maximum": 32767} for port in ("grpc", "http")
            },
        }
    elif isinstance(value, dict) and path[-1:] and path[-1] in FREE_FORM:
        pass  # Kubernetes' own objects
    elif isinstance(value, dict):
        schema["additionalProperties"] = False
        schema["properties"] = {
            key: _chart_schema(item, (*path, key), described, services) for key, item in value.items()
        }
    if description is not None:
        schema["description"] = description
    if not isinstance(value, dict | list):
        schema["default"] = value
    return schema


def _model_schema(value: dict[str, Any], predictor: dict[str, Any], description: str) -> dict[str, Any]:
    options = predictor["properties"]["model"]["properties"]
    properties = {}
    for field, option in MODEL_FIELDS.items():
        item = {k: v for k, v in options[option].items() if k in ("type", "enum", "description")}
        item["default"] = value[field]
        properties[field] = item
    return {
        "type": "object",
        "additionalProperties": False,
        "description": description,
        "properties": properties,
    }


def build() -> dict[str, Any]:
    """The chart's values schema (a JSON object)."""
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    services = schemas(sorted({*CONFIG_MAPS.values()}))
    schema = _chart_schema(values, (), descriptions(text), services)
    schema["properties"]["global"] = {"type": "object", "description": "Helm's values shared with subcharts"}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "privproc chart values (generated by tools/chart_schema.py: do not edit)",
        **schema,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--check", action="store_true", help="fail if the file differs from the generated one"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is stale: run `make chart-schema`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
