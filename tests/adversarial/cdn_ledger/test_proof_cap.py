"""Issue 11, item 9: the CDN's proof cap was a slow outage, and the rotation tasks died silently.

Proofs were never pruned (``MAX_PROOFS=1024``, ~26 a day), so after ~39 days every publish
failed; the gateway's rotation task then died without a log line, and clients refused once
the old key expired. Played here with an injectable clock: more rotations than the old cap
(each one a key configuration and its proof, as the gateway publishes them), and a CDN that
fails mid-run under a real gateway, then comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio

from privproc.acs.server import AcsConfig, AcsService
from privproc.cdn.server import CdnConfig, CdnService, CdnServicer
from privproc.cdn.store import ISSUER_DIRECTORY, MAX_PROOFS, OHTTP_KEYS
from privproc.gateway.server import GatewayConfig, GatewayService
from privproc.runtime.rpc import GrpcServer
from privproc.v1 import cdn_pb2, cdn_pb2_grpc, common_pb2
from privproc.wire import ohttp
from privproc.wire.entries import OhttpKeyConfigEntry
from privproc.wire.tlogproof import TlogProof
from tests.livestack import cdn_publishers

HOUR = 3600.0
#: A bound on a hang, not a timing assertion.
HANG = 30.0
CHECKPOINT_NOTE = b"log.test\n1\nAAAA\n\n\xe2\x80\x94 log.test sig\n"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _credential(tmp_path: Path) -> Path:
    path = tmp_path / "cdn-gateway"
    path.write_text("test-gateway-credential-0123456789")
    return path


def _timestamp(seconds: float) -> Any:
    message = common_pb2.KeyConfigs().not_before
    message.FromNanoseconds(int(seconds * 1e9))
    return message


async def test_rotations_past_the_old_cap_keep_publishing_and_the_store_stays_bounded(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    credential = _credential(tmp_path)
    cdn = CdnService(CdnConfig(publishers=cdn_publishers({"gateway": credential})), clock=clock)
    endpoints = await cdn.start()
    body = ohttp.encode_key_config_list([ohttp.GatewayKey.generate(1).config])
    metadata = (("authorization", f"Bearer {credential.read_text()}"),)
    rotations = MAX_PROOFS + 76  # ~45 days of hourly rotations: past the old cap
    try:
        async with aio.insecure_channel(str(endpoints["grpc"])) as channel:
            stub = cdn_pb2_grpc.KeyCdnStub(channel)
            for rotation in range(rotations):
                clock.now += HOUR
                not_after = clock.now + HOUR + 600  # rotation plus grace, as the gateway advertises
                entry = OhttpKeyConfigEntry.describing(body, 1, int(clock.now), int(not_after)).encode()
                proof = TlogProof(rotation, (), CHECKPOINT_NOTE, extra=entry).encode()
                name = "ohttp-keys-" + hashlib.sha256(body + rotation.to_bytes(4, "big")).hexdigest()
                await stub.PublishProof(
                    cdn_pb2.PublishProofRequest(name=name, proof=proof), metadata=metadata, timeout=5
                )
                configs = common_pb2.KeyConfigs(
                    ohttp_keys=body, not_before=_timestamp(clock.now), not_after=_timestamp(not_after)
                )
                await stub.PublishKeyConfigs(
                    cdn_pb2.PublishKeyConfigsRequest(key_configs=configs), metadata=metadata, timeout=5
                )
                # Bounded: only the proofs of keys still valid (plus a cache lifetime) are kept.
                assert cdn.store.proof_count() <= 3
        async with aiohttp.ClientSession() as session:
            async with session.get(str(endpoints["proofs_url"]) + name) as resp:
                assert resp.status == 200 and await resp.read() == proof
            async with session.get(str(endpoints["keys_url"])) as resp:
                assert resp.status == 200 and await resp.read() == body
    finally:
        await cdn.stop()


class _FailingCdn(CdnServicer):
    """The real CDN servicer, refusing every key publish as the full store of old did ("too many proofs")."""

    async def PublishKeyConfigs(
        self, request: cdn_pb2.PublishKeyConfigsRequest, context: aio.ServicerContext[Any, Any]
    ) -> cdn_pb2.PublishKeyConfigsResponse:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad_request: too many proofs")
        raise AssertionError("unreachable")


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    found = []
    for record in caplog.records:
        if record.name == "privproc.events":
            line = json.loads(record.getMessage())
            if line["event"] == name:
                found.append(line)
    return found


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(int(HANG / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def _served_keys(cdn: CdnService) -> bytes | None:
    try:
        return cdn.store.get(OHTTP_KEYS).body
    except Exception:
        return None


async def test_rotation_survives_a_failing_cdn_logs_it_and_publishes_when_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(1_800_000_000.0)
    credential = _credential(tmp_path)
    publishers = cdn_publishers({"gateway": credential})
    cdn = CdnService(CdnConfig(publishers=publishers))
    endpoints = await cdn.start()
    port = int(str(endpoints["grpc"]).rsplit(":", 1)[1])
    gateway = GatewayService(
        GatewayConfig(
            cdn_target=str(endpoints["grpc"]),
            cdn_credential_file=credential,
            rotation_seconds=100.0,
            grace_seconds=10.0,
        ),
        clock=clock,
    )
    failing: GrpcServer | None = None
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        await gateway.start()
        try:
            first = gateway.core.schedule.advertisement().body
            assert _served_keys(cdn) == first
            # The CDN dies; in its place, on the same port, a CDN that refuses every publish.
            await cdn.stop()
            failing = GrpcServer("cdn")
            failing.add(
                cdn_pb2_grpc.add_KeyCdnServicer_to_server, _FailingCdn(cdn.store), "privproc.v1.KeyCdn"
            )
            await failing.start("127.0.0.1", port)
            clock.now += 100.0  # a rotation is due: its publish fails
            await _until(lambda: bool(_events(caplog, "task.failed")))
            failed = _events(caplog, "task.failed")[0]
            assert (failed["task"], failed["reason"]) == ("gateway.rotation", "bad_request")
            second = gateway.core.schedule.advertisement().body
            assert second != first
            # The real CDN comes back (empty, as after a restart): the loop publishes what it owes.
            await failing.stop(grace=0)
            failing = None
            cdn = CdnService(CdnConfig(publishers=publishers, grpc_port=port))
            await cdn.start()
            await _until(lambda: _served_keys(cdn) == second)
            # And rotation goes on: the next key is published too.
            clock.now += 100.0
            await _until(lambda: gateway.core.schedule.advertisement().body != second)
            third = gateway.core.schedule.advertisement().body
            await _until(lambda: _served_keys(cdn) == third)
            assert not any(task.done() for task in gateway._tasks)
        finally:
            await gateway.stop()
            if failing is not None:
                await failing.stop(grace=0)
            await cdn.stop()


class _FailingDirectoryCdn(CdnServicer):
    """The real CDN servicer, refusing every issuer-directory publish."""

    async def PublishIssuerDirectory(
        self, request: cdn_pb2.PublishIssuerDirectoryRequest, context: aio.ServicerContext[Any, Any]
    ) -> cdn_pb2.PublishIssuerDirectoryResponse:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad_request: refused")
        raise AssertionError("unreachable")


def _served_directory(cdn: CdnService) -> bytes | None:
    try:
        return cdn.store.get(ISSUER_DIRECTORY).body
    except Exception:
        return None


async def test_acs_key_rotation_survives_a_failing_cdn_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    epoch = 2.0
    clock = Clock(1_800_000_000.0)
    credential = tmp_path / "cdn-acs"
    credential.write_text("test-acs-credential-0123456789")
    publishers = cdn_publishers({"acs": credential})
    cdn = CdnService(CdnConfig(publishers=publishers))
    endpoints = await cdn.start()
    port = int(str(endpoints["grpc"]).rsplit(":", 1)[1])
    acs = AcsService(
        AcsConfig(
            state_dir=tmp_path / "acs",
            cdn_target=str(endpoints["grpc"]),
            cdn_credential_file=credential,
            epoch_seconds=epoch,
        ),
        clock=clock,
    )
    failing: GrpcServer | None = None
    with caplog.at_level(logging.DEBUG, logger="privproc.events"):
        await acs.start()
        try:
            first = _served_directory(cdn)
            assert first == acs.directory_body()
            await cdn.stop()
            failing = GrpcServer("cdn")
            failing.add(
                cdn_pb2_grpc.add_KeyCdnServicer_to_server,
                _FailingDirectoryCdn(cdn.store),
                "privproc.v1.KeyCdn",
            )
            await failing.start("127.0.0.1", port)
            clock.now += 3 * epoch  # new issuer keys: the directory changes, its publish fails
            await _until(lambda: any(e["task"] == "acs.rotation" for e in _events(caplog, "task.failed")))
            await failing.stop(grace=0)
            failing = None
            cdn = CdnService(CdnConfig(publishers=publishers, grpc_port=port))
            await cdn.start()
            await _until(lambda: _served_directory(cdn) == acs.directory_body())
            assert _served_directory(cdn) != first
            assert acs._task is not None and not acs._task.done()
        finally:
            await acs.stop()
            if failing is not None:
                await failing.stop(grace=0)
            await cdn.stop()
