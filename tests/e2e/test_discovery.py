"""Gateway discovery against a small HTTP server speaking the Kubernetes API's list and watch JSON:
predictors are discovered, admitted only when their verifier certificate checks out, dropped when
they go; a 410 relists; a cluster without discovery.k8s.io/v1 is read through Endpoints."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from privproc import events
from privproc.attestation.workload import VerifierCA
from privproc.errors import UnavailableError
from privproc.gateway.endpoint_watch import EndpointWatcher
from privproc.gateway.predictors import GrpcPredictorPool
from privproc.runtime import mtls
from privproc.runtime.rpc import GrpcServer
from privproc.runtime.tasks import supervise
from tests.e2e.test_mtls import _predictor, _workload

NAMESPACE, SERVICE = "pp", "pp-predictor"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
ENDPOINTS = f"/api/v1/namespaces/{NAMESPACE}/endpoints"


@dataclass
class FakeApi:
    """The API server's side: the objects a list returns, and the events the open watch streams."""

    slices_served: bool = True
    items: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1
    watches: asyncio.Queue[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=asyncio.Queue)
    requests: list[Mapping[str, str]] = field(default_factory=list)
    #: Every watch stream opened (each ended at teardown).
    streams: list[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        if request.path == SLICES and not self.slices_served:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        if request.query.get("watch") != "true":
            return web.json_response(
                {"kind": "List", "metadata": {"resourceVersion": str(self.version)}, "items": self.items}
            )
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        stream: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.streams.append(stream)
        await self.watches.put(stream)
        while (event := await stream.get()) is not None:
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response

    async def watch(self) -> asyncio.Queue[dict[str, Any] | None]:
        """The next watch the gateway opens."""
        return await asyncio.wait_for(self.watches.get(), 20)


def endpoint_slice(name: str, target: str, *, version: int, ready: bool = True) -> dict[str, Any]:
    """A slice of one endpoint (a slice's ports are those of all its endpoints: here each differs)."""
    address, _, port = target.rpartition(":")
    return {
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/service-name": SERVICE},
            "resourceVersion": str(version),
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": ready}}],
        "ports": [{"name": "grpc", "port": int(port), "protocol": "TCP"}],
    }


@dataclass
class World:
    api: FakeApi
    pool: GrpcPredictorPool
    good: str
    impostor: str
    seen: list[tuple[str, str]]
    watcher: EndpointWatcher
    task: asyncio.Task[None]


async def _until(condition: Callable[[], bool], seconds: float = 20) -> None:
    """Poll ``condition`` (set from the watcher's thread through the loop) until it holds."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the state is the pool's, no event to wait on
            await asyncio.sleep(0.05)


@pytest.fixture
async def world(
    tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[World]:
    caplog.set_level(logging.INFO, logger="privproc.events")  # the sink sees enabled events only
    api = FakeApi(slices_served=getattr(request, "param", True))
    app = web.Application()
    app.router.add_get(SLICES, api.handle)
    app.router.add_get(ENDPOINTS, api.handle)
    # A watch the client abandoned may leave its handler writing into nothing: do not wait for it.
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    ca = VerifierCA.load_or_create(tmp_path / "ca")
    rogue = VerifierCA.load_or_create(tmp_path / "rogue", name="rogue CA")
    key = ec.generate_private_key(ec.SECP256R1())
    gateway = mtls.Identity.of(ca.issue_service(key.public_key(), mtls.WORKLOAD_NAME), key)
    servers: list[GrpcServer] = []
    good_server, good = await _predictor(_workload(ca), ca.pem)
    impostor_server, impostor = await _predictor(_workload(rogue), ca.pem)  # certificate not the verifier's
    servers += [good_server, impostor_server]

    seen: list[tuple[str, str]] = []

    def sink(spec: events.EventSpec, values: Mapping[str, object]) -> bool:
        if spec.name.startswith(("gateway.predictor_", "gateway.discovery_")):
            seen.append((spec.name.removeprefix("gateway."), str(values.get("target", values.get("api")))))
        return False

    def client() -> Any:
        from kubernetes import client as k8s

        configuration = k8s.Configuration()
        configuration.host = f"http://127.0.0.1:{port}"
        return k8s.ApiClient(configuration)

    events.install_sink(sink)
    pool = GrpcPredictorPool([], gateway, ca.pem)
    watcher = EndpointWatcher(
        NAMESPACE, SERVICE, "grpc", pool.set_targets, api_client=client, watch_seconds=30
    )
    task = supervise("test.discovery", watcher.run, backoff_seconds=0.1, max_backoff_seconds=0.5)
    try:
        yield World(api, pool, good, impostor, seen, watcher, task)
    finally:
        events.install_sink(None)
        watcher.stop()
        task.cancel()
        for stream in api.streams:
            stream.put_nowait(None)
        await pool.close()
        for server in servers:
            await server.stop(0)
        await runner.cleanup()


async def test_discovered_predictors_are_admitted_only_with_a_verifier_certificate(world: World) -> None:
    api, pool = world.api, world.pool
    watch = await api.watch()  # listed (nothing yet), now watching
    assert "watch" not in api.requests[0] and api.requests[1]["resourceVersion"] == "1"
    assert api.requests[1]["labelSelector"] == f"kubernetes.io/service-name={SERVICE}"
    watch.put_nowait({"type": "ADDED", "object": endpoint_slice("s1", world.good, version=2)})
    watch.put_nowait({"type": "ADDED", "object": endpoint_slice("s2", world.impostor, version=3)})
    await _until(lambda: set(pool.targets()) == {world.good, world.impostor})
    assert await pool.refresh() == [world.good]
    assert await pool.refresh() == [world.good]  # no change: no event
    with pytest.raises(UnavailableError):
        await pool.open(world.impostor, b"", timeout_seconds=5)  # never routed to
    assert sorted(world.seen[1:]) == sorted(
        [
            ("predictor_discovered", world.good),
            ("predictor_discovered", world.impostor),
            ("predictor_admitted", world.good),
            ("predictor_refused", world.impostor),
        ]
    )
    assert world.seen[0] == ("discovery_synced", "endpointslices")

    # The good one goes (scaled down): dropped at once, no longer admitted.
    # (terminating first: not ready, then its slice goes)
    watch.put_nowait({"type": "MODIFIED", "object": endpoint_slice("s1", world.good, version=4, ready=False)})
    watch.put_nowait({"type": "DELETED", "object": endpoint_slice("s1", world.good, version=5)})
    await _until(lambda: pool.targets() == [world.impostor])
    assert pool.admitted() == [] and world.seen[-1] == ("predictor_dropped", world.good)
    # A bookmark changes nothing; the watch ending resumes from the last version, without a list.
    watch.put_nowait(
        {"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "metadata": {"resourceVersion": "7"}}}
    )
    watch.put_nowait(None)
    watch = await api.watch()
    assert api.requests[-1]["resourceVersion"] == "7" and api.requests[-1]["watch"] == "true"
    # 410 Gone: listed afresh (the good one is back), then watched from the list's version.
    api.items, api.version = [endpoint_slice("s1", world.good, version=9)], 9
    watch.put_nowait({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}})
    watch = await api.watch()
    assert "watch" not in api.requests[-2] and api.requests[-1]["resourceVersion"] == "9"
    await _until(lambda: pool.targets() == [world.good])
    assert await pool.refresh() == [world.good]
    assert world.seen[-4:] == [
        ("discovery_synced", "endpointslices"),
        ("predictor_discovered", world.good),
        ("predictor_dropped", world.impostor),
        ("predictor_admitted", world.good),
    ]
    # A line that is not the API's JSON: the task fails (and is retried), nothing is made up.
    failed = events.STATS.emitted["task.failed"]
    watch.put_nowait({"type": "ADDED", "object": ["not", "an", "object"]})
    watch = await api.watch()
    assert events.STATS.emitted["task.failed"] == failed + 1
    assert "watch" not in api.requests[-2]  # it listed again after the failure
    assert pool.targets() == [world.good] and not world.task.done()
    # Stopping never waits on the watch's blocked read (the event loop goes on at once).
    started = time.monotonic()
    world.watcher.stop()
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("world", [False], indirect=True)
async def test_without_endpointslices_the_endpoints_object_is_watched(world: World) -> None:
    api, pool = world.api, world.pool
    api.items = [
        {
            "kind": "Endpoints",
            "metadata": {"name": SERVICE, "resourceVersion": "1"},
            "subsets": [
                {
                    "addresses": [{"ip": world.good.rpartition(":")[0]}],
                    "ports": [{"name": "grpc", "port": int(world.good.rpartition(":")[2])}],
                }
            ],
        }
    ]
    watch = await api.watch()
    assert api.requests[-1]["fieldSelector"] == f"metadata.name={SERVICE}"
    await _until(lambda: pool.targets() == [world.good])
    assert await pool.refresh() == [world.good]
    assert ("discovery_synced", "endpoints") in world.seen
    watch.put_nowait({"type": "DELETED", "object": {**api.items[0], "subsets": []}})
    await _until(lambda: pool.targets() == [])
    assert world.seen[-1] == ("predictor_dropped", world.good)


def test_a_gateway_takes_static_predictors_or_a_service_not_both(tmp_path: Path) -> None:
    from privproc.errors import ConfigError
    from privproc.gateway.server import GatewayConfig, GatewayService

    files = {name: tmp_path / name for name in ("verifier_ca_file", "mtls_cert_file", "mtls_key_file")}
    with pytest.raises(ConfigError, match="not both"):
        GatewayService(GatewayConfig(predictor_targets=("10.0.0.1:1",), predictor_service="pp/p", **files))
    with pytest.raises(ConfigError, match="mTLS"):
        GatewayService(GatewayConfig(predictor_service="pp/p"))
