"""The chart's values.schema.json is the one tools/chart_schema.py generates (no helm needed)."""

from __future__ import annotations

import json

import pytest
import yaml

from tools import chart_schema


def test_committed_schema_is_the_generated_one() -> None:
    committed = chart_schema.OUT.read_text()
    assert committed == chart_schema.render(), "stale values.schema.json: run `make chart-schema`"


def test_every_config_map_is_a_service_schema_without_what_the_chart_sets() -> None:
    schema = json.loads(chart_schema.render())
    relay = schema["properties"]["relay"]["properties"]["config"]
    assert relay["additionalProperties"] is False
    assert "rate_per_second" in relay["properties"]
    assert relay["properties"]["rate_per_second"]["x-privproc-env"] == "PRIVPROC_RELAY_RATE_PER_SECOND"
    for chart_set in ("host", "grpc_port", "http_port", "gateway_url"):
        assert chart_set not in relay["properties"]
    gateway = schema["properties"]["gateway"]["properties"]["config"]["properties"]
    # Secret files come from Secrets the chart mounts, never from values.
    assert not [k for k, v in gateway.items() if v.get("x-privproc-secret-file")]
    assert "cdn_credential_file" not in gateway and "mtls_key_file" not in gateway
    sidecar = schema["properties"]["predictor"]["properties"]["logSidecar"]["properties"]["config"]
    assert "interval_seconds" in sidecar["properties"] and "socket_path" not in sidecar["properties"]
    assert schema["properties"]["model"]["properties"]["dtype"]["enum"] == ["float32", "bfloat16"]


def test_every_chart_field_is_described_and_typed() -> None:
    schema = json.loads(chart_schema.render())
    values = yaml.safe_load((chart_schema.CHART / "values.yaml").read_text())

    def walk(node: dict[str, object], value: object, path: str) -> None:
        assert node.get("description"), path
        properties = node.get("properties")
        if isinstance(value, dict) and isinstance(properties, dict) and not path.endswith("config"):
            for key, item in value.items():
                assert key in properties, f"{path}.{key}"
                walk(properties[key], item, f"{path}.{key}")

    for key, item in values.items():
        walk(schema["properties"][key], item, key)
    replicas = schema["properties"]["gateway"]["properties"]["replicas"]
    assert replicas["type"] == "integer" and replicas["default"] == 1
    assert replicas["description"].startswith("Replicas; more than one needs Redis")


def test_an_undocumented_field_is_refused() -> None:
    text = "# -- documented\nfirst: 1\nsecond: 2\n"
    described = chart_schema.descriptions(text)
    assert described == {("first",): "documented"}
    with pytest.raises(SystemExit, match="second has no comment"):
        chart_schema._chart_schema(yaml.safe_load(text), (), described, {})


def test_chart_and_local_images_follow_the_package_version() -> None:
    import tomllib

    version = tomllib.loads((chart_schema.ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((chart_schema.CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert chart["kubeVersion"] == ">=1.20.0-0"
    local = yaml.safe_load((chart_schema.ROOT / "k8s" / "local" / "values.yaml").read_text())
    assert local["image"]["tag"] == version and local["redis"]["image"]["tag"] == version
