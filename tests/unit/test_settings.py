"""Each service's configuration, declared once: flags, environment, argv and schema agree.

Every service gets a Config value with EVERY option off its default; from it
the flags (``to_argv``) and the environment (``PRIVPROC_<SERVICE>_<FIELD>``)
must each rebuild it exactly, so no field is reachable one way only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from privproc.acs.server import AcsConfig
from privproc.attestation.identity import GatewayIdentityConfig
from privproc.attestation.verifier import VerifierConfig
from privproc.cdn.server import CdnConfig, parse_publisher
from privproc.cli import main
from privproc.cli.serve import SERVICES
from privproc.errors import ConfigError
from privproc.gateway.server import GatewayConfig
from privproc.ledger.server import LedgerConfig, WitnessEndpoint
from privproc.ledger.witness_server import WitnessConfig
from privproc.logsidecar.server import LogSidecarConfig
from privproc.predictor.loading import ModelSpec
from privproc.predictor.server import PredictorConfig
from privproc.relay.server import RelayConfig
from privproc.runtime import settings
from privproc.runtime.http import HttpLimits
from privproc.runtime.telemetry import TelemetryOptions
from privproc.stack import StackConfig
from privproc.wire import note

LOG_VKEY = note.generate_key("log.example")[1]
WITNESS_VKEY = note.generate_key("witness.example", note.ALG_COSIGNATURE_V1)[1]
PUBLISHER_VKEY = note.generate_key("gateway")[1]
RELEASE_VKEY = note.generate_key("release")[1]
LIMITS = HttpLimits(
    head_timeout_seconds=1.5,
    body_timeout_seconds=2.5,
    idle_timeout_seconds=3.5,
    max_connections=77,
    max_connections_per_address=5,
)
TELEMETRY = TelemetryOptions(
    otlp_endpoint="grpc://collector:4317", directory=Path("/var/lib/telemetry"), export_interval_seconds=2.0
)

#: Per service, a Config with every option off its default (checked by the first test).
EVERYTHING_SET: dict[str, Any] = {
    "cdn": CdnConfig(
        publishers=(
            parse_publisher("gateway:gateway:/run/secrets/cdn-gateway"),
            parse_publisher("mirror:checkpoint+proofs/release-*:/run/secrets/cdn-mirror"),
        ),
        host="0.0.0.0",
        grpc_port=7001,
        http_port=7002,
        http_limits=LIMITS,
        telemetry=TELEMETRY,
    ),
    "witness": WitnessConfig(
        state_dir=Path("/var/lib/witness"),
        signer_key_file=Path("/run/secrets/witness.key"),
        logs=(LOG_VKEY, note.generate_key("other.example")[1]),
        host="::1",
        grpc_port=7003,
        http_port=7004,
        http_limits=LIMITS,
        telemetry=TELEMETRY,
    ),
    "ledger": LedgerConfig(
        state_dir=Path("/var/lib/ledger"),
        signer_key_file=Path("/run/secrets/ledger.key"),
        publishers=(f"ohttp-key-config:{PUBLISHER_VKEY}", f"cvm-release,cvm-revocation:{RELEASE_VKEY}"),
        witnesses=(WitnessEndpoint("http://witness:8080", WITNESS_VKEY),),
        host="10.0.0.1",
        grpc_port=7005,
        http_port=7006,
        min_cosignatures=2,
        batch_seconds=0.5,
        max_batch=12,
        telemetry=TELEMETRY,
    ),
    "verifier": VerifierConfig(
        state_dir=Path("/var/lib/verifier"),
        ledger_grpc="ledger:9000",
        ledger_tiles_url="http://ledger:9001",
        log_vkey=LOG_VKEY,
        ca_dir=Path("/run/secrets/verifier-ca"),
        witness_vkeys=(WITNESS_VKEY,),
        min_cosignatures=2,
        development_root=bytes(range(32)),
        allow_debug=True,
        host="10.0.0.2",
        grpc_port=7007,
        refresh_seconds=9.0,
        certificate_minutes=5.0,
        unlogged_measurements=(b"\x01" * 48, b"\x02" * 48),
        release_keys=(RELEASE_VKEY,),
        telemetry=TELEMETRY,
    ),
    "predictor": PredictorConfig(
        verifier_target="verifier:9000",
        verifier_ca_file=Path("/etc/privproc/verifier-ca.pem"),
        host="10.0.0.3",
        grpc_port=7008,
        max_connection_age_seconds=60.0,
        connection_age_grace_seconds=30.0,
        renewal_retry_seconds=3.0,
        telemetry_interval_seconds=900.0,
        ledger_target="ledger:9000",
        release_proofs_url="http://cdn/proofs/",
        staple_refresh_seconds=4.0,
        image_digest="sha256:" + "ab" * 32,
        model=ModelSpec("tiny-random", "none", "bfloat16", "extractive", True),
        state_dir=Path("/var/lib/predictor"),
        model_cache=Path("/var/cache/models"),
        simulator_dir=Path("/var/lib/simulator"),
        log_socket=Path("/run/privproc-log/events.sock"),
        stream_tick_seconds=0.25,
        stream_keepalive_seconds=2.0,
        max_queued_generations=3,
    ),
    "acs": AcsConfig(
        state_dir=Path("/var/lib/acs"),
        host="10.0.0.4",
        grpc_port=7009,
        http_port=7010,
        issuer_name="issuer.example",
        epoch_seconds=3600.0,
        tokens_per_window=10,
        window_seconds=60.0,
        token_types=(0x0001,),
        cdn_target="cdn:9000",
        cdn_credential_file=Path("/run/secrets/cdn-acs"),
        demo_account="demo",
        demo_account_credential_file=Path("/run/secrets/test-account/credential"),
        ledger_target="ledger:9000",
        ledger_key_file=Path("/run/secrets/acs-publisher.key"),
        http_limits=LIMITS,
        telemetry=TELEMETRY,
    ),
    "gateway": GatewayConfig(
        host="10.0.0.5",
        grpc_port=7011,
        http_port=7012,
        origin="example.org",
        rotation_seconds=60.0,
        grace_seconds=6.0,
        ohttp_seed_file=Path("/run/secrets/gateway-ohttp.seed"),
        max_request_bytes=1234,
        cdn_target="cdn:9000",
        cdn_credential_file=Path("/run/secrets/cdn-gateway"),
        acs_target="acs:9000",
        issuer_name="issuer.example",
        redis_url="redis://redis:6379/0",
        state_dir=Path("/var/lib/gateway"),
        epoch_seconds=3600.0,
        clock_skew_seconds=5.0,
        handshake_seconds=3.0,
        session_seconds=30.0,
        sessions_per_predictor=2,
        max_request_seconds=45.0,
        idle_seconds=12.0,
        max_sessions=20,
        issuer_refresh_seconds=1.0,
        ledger_target="ledger:9000",
        ledger_key_file=Path("/run/secrets/gateway-publisher.key"),
        predictor_targets=("predictor-0:9000", "predictor-1:9000"),
        # (a gateway takes one or the other; the declarations are checked one by one here)
        predictor_service="privproc/pp-predictor",
        predictor_port_name="mtls",
        mtls_cert_file=Path("/run/secrets/gateway-mtls.pem"),
        mtls_key_file=Path("/run/secrets/gateway-mtls.key"),
        verifier_ca_file=Path("/etc/privproc/verifier-ca.pem"),
        admission_seconds=1.0,
        http_limits=LIMITS,
        telemetry=TELEMETRY,
    ),
    "relay": RelayConfig(
        gateway_target="gateway:9000",
        gateway_url="http://gateway/.well-known/ohttp-gateway",
        host="10.0.0.6",
        grpc_port=7013,
        http_port=7014,
        max_request_bytes=4321,
        rate_per_second=2.0,
        burst=4,
        timeout_seconds=7.0,
        idle_seconds=11.0,
        http_limits=LIMITS,
        telemetry=TELEMETRY,
    ),
    "log-sidecar": LogSidecarConfig(
        socket_path=Path("/run/privproc-log/events.sock"),
        output=Path("/var/log/privproc/events.jsonl"),
        interval_seconds=30.0,
        allowlist_digest="ab" * 32,
        max_connections=4,
        telemetry=TELEMETRY,
    ),
    "gateway-identity": GatewayIdentityConfig(
        ca_dir=Path("/run/secrets/verifier-ca"),
        out_dir=Path("/run/identity"),
        once=True,
        retry_seconds=5.0,
    ),
    "up": StackConfig(
        state_dir=Path("/tmp/stack"),
        rotation_seconds=60.0,
        redis_url="redis://redis:6379/0",
        skip_publish=True,
        model=ModelSpec("tiny-random", "none", "bfloat16", "generative", True),
        model_cache=Path("/tmp/models"),
        otlp_endpoint="http://collector:4318",
    ),
}


def _configs() -> list[type[Any]]:
    return [SERVICES[name].config_class() for name in SERVICES] + [StackConfig]


def _env_of(config: Any) -> dict[str, str]:
    """``config`` as environment variables, every option set."""
    environ = {}
    service = settings.service_name(type(config))
    for leaf in settings.leaves(type(config)):
        value = config
        for name in leaf.path:
            value = getattr(value, name)
        env = leaf.env(service)
        assert env is not None
        if leaf.repeated:
            environ[env] = json.dumps([leaf.format(item) for item in value])
        elif leaf.item_type is bool:
            environ[env] = "true" if value else "false"
        else:
            environ[env] = leaf.format(value)
    return environ


def test_every_service_and_up_is_covered_with_every_option_off_its_default() -> None:
    assert set(EVERYTHING_SET) == {*SERVICES, "up"}
    for name, config in EVERYTHING_SET.items():
        assert settings.service_name(type(config)) == name
        assert type(config) in _configs()
        for leaf in settings.leaves(type(config)):
            value = config
            for part in leaf.path:
                value = getattr(value, part)
            assert leaf.required or value != leaf.default, (name, leaf.dest)


@pytest.mark.parametrize("name", list(EVERYTHING_SET))
def test_config_to_argv_and_back_is_the_same_config(name: str) -> None:
    config = EVERYTHING_SET[name]
    argv = settings.to_argv(config)
    assert settings.from_args(type(config), argv) == config
    # Every option appears: each field is reachable by its flag.
    flags = {arg for arg in argv if arg.startswith("--")}
    assert {leaf.flag for leaf in settings.leaves(type(config)) if leaf.item_type is not bool} <= flags


@pytest.mark.parametrize("name", list(EVERYTHING_SET))
def test_the_environment_alone_gives_the_same_config(name: str) -> None:
    config = EVERYTHING_SET[name]
    environ = _env_of(config)
    assert all(key.startswith(f"PRIVPROC_{name.upper().replace('-', '_')}_") for key in environ)
    assert settings.load(type(config), {}, environ) == config


def test_flags_parse_to_the_config_the_services_used_to_get() -> None:
    argv = [
        "--state-dir", "/s", "--signer-key-file", "/k",
        "--publisher", f"ohttp-key-config:{PUBLISHER_VKEY}",
        "--witness", f"http://w:1,{WITNESS_VKEY}",
    ]  # fmt: skip
    config = settings.from_args(LedgerConfig, argv)
    assert config == LedgerConfig(
        state_dir=Path("/s"),
        signer_key_file=Path("/k"),
        publishers=(f"ohttp-key-config:{PUBLISHER_VKEY}",),
        witnesses=(WitnessEndpoint("http://w:1", WITNESS_VKEY),),
    )
    gateway = settings.from_args(GatewayConfig, ["--http-idle-timeout", "5", "--epoch-seconds", "100"])
    # The gateway's own default limits (1,024 per address) with the one flag given.
    assert gateway.http_limits == HttpLimits(idle_timeout_seconds=5.0, max_connections_per_address=1024)
    assert gateway.token_key_lifetime_seconds == 200.0
    relay = settings.from_args(RelayConfig, ["--gateway", "g:1", "--rate", "3"])
    assert (relay.gateway_target, relay.rate_per_second, relay.http_limits.max_connections_per_address) == (
        "g:1",
        3.0,
        16,
    )


def test_a_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, RelayConfig)
    environ = {"PRIVPROC_RELAY_BURST": "7", "PRIVPROC_RELAY_RATE_PER_SECOND": "9"}
    config = settings.load(RelayConfig, parser.parse_args(["--burst", "3"]), environ)
    assert (config.burst, config.rate_per_second, config.timeout_seconds) == (3, 9.0, 30.0)
    limits = settings.load(RelayConfig, {}, {"PRIVPROC_RELAY_HTTP_LIMITS_HEAD_TIMEOUT_SECONDS": "2"})
    assert limits.http_limits == HttpLimits(head_timeout_seconds=2.0, max_connections_per_address=16)


def test_a_repeated_option_from_the_environment_is_one_value_or_a_json_array() -> None:
    one = settings.load(WitnessConfig, {}, {**_required_witness(), "PRIVPROC_WITNESS_LOGS": LOG_VKEY})
    assert one.logs == (LOG_VKEY,)
    many = settings.load(
        WitnessConfig, {}, {**_required_witness(), "PRIVPROC_WITNESS_LOGS": json.dumps([LOG_VKEY] * 2)}
    )
    assert many.logs == (LOG_VKEY, LOG_VKEY)


def _required_witness() -> dict[str, str]:
    return {"PRIVPROC_WITNESS_STATE_DIR": "/s", "PRIVPROC_WITNESS_SIGNER_KEY_FILE": "/k"}


def test_a_missing_or_bad_value_is_a_config_error_naming_the_flag_and_variable() -> None:
    with pytest.raises(ConfigError, match=r"--signer-key-file \(or PRIVPROC_WITNESS_SIGNER_KEY_FILE\)"):
        settings.load(WitnessConfig, {}, {"PRIVPROC_WITNESS_STATE_DIR": "/s"})
    with pytest.raises(ConfigError, match="PRIVPROC_RELAY_BURST"):
        settings.load(RelayConfig, {}, {"PRIVPROC_RELAY_BURST": "many"})
    with pytest.raises(ConfigError, match="PRIVPROC_UP_SKIP_PUBLISH"):
        settings.load(StackConfig, {}, {"PRIVPROC_UP_SKIP_PUBLISH": "perhaps"})
    with pytest.raises(ConfigError, match="positive"):  # HttpLimits' own check
        settings.from_args(CdnConfig, ["--publisher", "a:acs:/f", "--http-head-timeout", "0"])
    with pytest.raises(argparse.ArgumentError, match="NAME:SCOPE:CREDENTIAL_FILE"):
        settings.from_args(CdnConfig, ["--publisher", "nonsense"])
    with pytest.raises(argparse.ArgumentError, match="KIND"):
        settings.from_args(LedgerConfig, ["--state-dir", "/s", "--signer-key-file", "/k", "--publisher", "x"])


def test_every_field_of_every_config_is_an_option_or_a_group() -> None:
    with pytest.raises(TypeError, match="neither an option nor a group"):

        @settings.declared("broken")
        class Broken:
            plain: int = 0

    for config in _configs():
        names = {leaf.dest for leaf in settings.leaves(config)}
        top = {f.name for f in dataclasses.fields(config)}
        assert {name.split(".")[0] for name in names} == top


@pytest.mark.parametrize("name", list(EVERYTHING_SET))
def test_the_schema_validates_defaults_and_a_full_config(name: str) -> None:
    config = EVERYTHING_SET[name]
    schema = settings.json_schema(type(config))
    full = settings.to_json(config)
    _validate(full, schema)
    defaults = {key: value for key, value in full.items() if key in schema.get("required", [])}
    for key, spec in schema["properties"].items():
        if key not in defaults:
            defaults[key] = spec["default"] if "default" in spec else _defaults_of(spec)
    _validate(defaults, schema)
    with pytest.raises(AssertionError):
        _validate({**full, "unknown": 1}, schema)
    required = schema.get("required", [])
    if required:
        with pytest.raises(AssertionError):
            _validate({k: v for k, v in full.items() if k != required[0]}, schema)


def _defaults_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: spec["default"] for key, spec in schema["properties"].items()}


_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


def _validate(value: Any, schema: dict[str, Any]) -> None:
    """The subset of JSON Schema the settings module writes (no jsonschema package here)."""
    if "anyOf" in schema:
        errors = 0
        for option in schema["anyOf"]:
            try:
                _validate(value, option)
            except AssertionError:
                errors += 1
        assert errors < len(schema["anyOf"]), (value, schema)
        return
    if "enum" in schema:
        assert value in schema["enum"], (value, schema["enum"])
    if "type" in schema:
        assert isinstance(value, _TYPES[schema["type"]]), (value, schema["type"])
        assert (
            schema["type"] in ("integer", "number")
            or not isinstance(value, bool)
            or schema["type"] == "boolean"
        )
    if schema.get("type") == "array":
        for item in value:
            _validate(item, schema["items"])
    if schema.get("type") == "object":
        for key in schema.get("required", []):
            assert key in value, key
        for key, item in value.items():
            assert key in schema["properties"] or schema.get("additionalProperties", True), key
            _validate(item, schema["properties"][key])


def test_config_schema_command_prints_every_service(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "schema"])
    assert exit_info.value.code == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document["properties"]) == set(SERVICES)
    gateway = document["properties"]["gateway"]["properties"]
    assert gateway["ledger_key_file"]["x-privproc-secret-file"] is True
    assert gateway["ohttp_seed_file"]["x-privproc-secret-file"] is True
    assert gateway["http_limits"]["properties"]["head_timeout_seconds"]["x-privproc-env"] == (
        "PRIVPROC_GATEWAY_HTTP_LIMITS_HEAD_TIMEOUT_SECONDS"
    )
    with pytest.raises(SystemExit):
        main(["config", "schema", "relay"])
    relay = json.loads(capsys.readouterr().out)
    assert relay["title"] == "privproc relay configuration"


def test_serve_takes_its_flags_from_the_service_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "relay", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--gateway-url" in out and "PRIVPROC_RELAY_GATEWAY_URL" in out
    assert "--publisher" not in out  # another service's flag
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "relay", "--publisher", "x"])
    assert exit_info.value.code == 2
