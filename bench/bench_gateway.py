"""The live gateway (and relay) on loopback: OHTTP health requests per second.

A real :class:`GatewayService` and a :class:`RelayService` run in this
process, on 127.0.0.1, on any free ports. ``CONCURRENCY`` client tasks each
send one request at a time for a fixed duration; the figure is answers per
second. Loads (each measured ``load_rounds`` times, round-robin, order
reversed every other round):

* ``grpc ohttp``: ``privproc.v1.Gateway/Handle`` with a pre-encapsulated
  health request; baseline: plain ``grpc.health.v1.Health/Check`` calls on
  the same server with the same concurrency.
* ``http ohttp``: ``POST /.well-known/ohttp-gateway`` (aiohttp client);
  baseline: ``GET /.well-known/ohttp-gateway`` (key configuration fetch).
* ``relay+gateway``: ``privproc.v1.Relay/Forward`` to a relay that forwards
  to the gateway over gRPC; baseline: the direct ``grpc ohttp`` load.
* ``grpc ohttp, client crypto in loop``: as ``grpc ohttp`` but each task
  encapsulates its request and opens the answer inside the timed loop;
  baseline: the direct ``grpc ohttp`` load.

Client, relay and gateway share one event loop (and the machine's CPUs),
so the client side is kept light: requests are encapsulated before the
timed loop (a pool replayed round-robin: the gateway answers a replayed
request afresh) and every answer is authenticated after the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench._common import Report, Result, Settings
from privproc import events
from privproc.gateway.server import GatewayConfig, GatewayService
from privproc.relay.server import RelayConfig, RelayService
from privproc.runtime.rpc import channel_options
from privproc.v1 import common_pb2, gateway_pb2_grpc, relay_pb2_grpc
from privproc.wire import bhttp, ohttp

GROUP = "gateway"
CONCURRENCY = 16
POOL_SIZE = 256
CALL_TIMEOUT = 10.0
HOST = "127.0.0.1"

#: One operation: ``call(i)`` for sequence number ``i``, returns the answer.
Call = Callable[[int], Awaitable[object]]
#: Checks one answer after the timed loop; False counts as an error.
Check = Callable[[int, object], bool]


@dataclass
class Load:
    name: str
    call: Call
    check: Check
    samples: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class _Run:
    ok: int
    elapsed: float
    answers: list[tuple[int, object]]


async def _drive(load: Load, seconds: float, concurrency: int) -> _Run:
    """``concurrency`` tasks call ``load`` back to back until ``seconds`` have passed."""
    sequence = itertools.count()
    answers: list[tuple[int, object]] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            i = next(sequence)
            try:
                answer = await load.call(i)
            except Exception as err:  # counted and reported, never fatal
                load.errors[type(err).__name__] += 1
                continue
            answers.append((i, answer))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return _Run(len(answers), elapsed, answers)


def _verify(load: Load, run: _Run) -> int:
    """Check every answer (outside the timed part); returns how many passed."""
    good = 0
    for i, answer in run.answers:
        try:
            passed = load.check(i, answer)
        except Exception as err:
            load.errors[f"check:{type(err).__name__}"] += 1
            continue
        if passed:
            good += 1
        else:
            load.errors["check:wrong_answer"] += 1
    return good


async def _measure(loads: list[Load], settings: Settings) -> None:
    for load in loads:
        _verify(load, await _drive(load, settings.load_warmup, CONCURRENCY))
    for round_ in range(settings.load_rounds):
        order = loads if round_ % 2 == 0 else list(reversed(loads))
        for load in order:
            run = await _drive(load, settings.load_seconds, CONCURRENCY)
            good = _verify(load, run)
            load.samples.append(good / run.elapsed)


def _opens_to_health(contexts: list[ohttp.ClientContext]) -> Check:
    """An answer passes if it authenticates under its request's context and says 200."""

    def check(i: int, answer: object) -> bool:
        if not isinstance(answer, bytes):
            return False
        inner = contexts[i % len(contexts)].decapsulate_response(answer)
        return bhttp.decode_response(inner).status == 200

    return check


async def _scenario(settings: Settings) -> Report:
    gateway = GatewayService(GatewayConfig(host=HOST, grpc_port=0, http_port=0, cdn_target=None))
    relay: RelayService | None = None
    stopped: list[str] = []
    before = dict(events.STATS.emitted)
    refused_before = sum(events.STATS.refused.values())
    try:
        gw = await gateway.start()
        relay = RelayService(
            RelayConfig(
                gateway_target=str(gw["grpc"]),
                host=HOST,
                grpc_port=0,
                http_port=0,
                # All bench traffic comes from 127.0.0.1: one client to the limiter.
                rate_per_second=1e9,
                burst=1_000_000_000,
            )
        )
        rl = await relay.start()
        report = await _against(settings, str(gw["grpc"]), str(gw["ohttp_url"]), str(rl["grpc"]))
    finally:
        t0 = time.perf_counter()
        if relay is not None:
            await relay.stop()
            stopped.append(f"relay {time.perf_counter() - t0:.2f} s")
        t1 = time.perf_counter()
        await gateway.stop()
        stopped.append(f"gateway {time.perf_counter() - t1:.2f} s")
    emitted = Counter(events.STATS.emitted)
    emitted.subtract(before)
    failures = {
        name: count
        for name, count in emitted.items()
        if count and name in ("request.failed", "request.internal_error", "relay.rate_limited")
    }
    refused = sum(events.STATS.refused.values()) - refused_before
    report.notes.append(f"gateway: service stop took {', '.join(stopped)}")
    report.notes.append(
        "gateway: service error events during the bench: "
        + (", ".join(f"{k}={v}" for k, v in sorted(failures.items())) or "none")
        + f"; refused log events: {refused}"
    )
    return report


async def _against(settings: Settings, grpc_target: str, gateway_url: str, relay_target: str) -> Report:
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with (
        aio.insecure_channel(grpc_target, options=channel_options()) as gw_channel,
        aio.insecure_channel(relay_target, options=channel_options()) as relay_channel,
        aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as session,
    ):
        # The key configuration, as a client would fetch it (here from the gateway: no CDN runs).
        async with session.get(gateway_url) as resp:
            resp.raise_for_status()
            keys_body = await resp.read()
        config, suite = ohttp.select_key_config(ohttp.decode_key_config_list(keys_body))
        request = bhttp.encode_request(bhttp.Request("GET", "https", "privproc.local", "/v1/health"))
        pool = [ohttp.encapsulate_request(config, request, suite=suite) for _ in range(POOL_SIZE)]
        payloads = [payload for payload, _ in pool]
        messages = [common_pb2.EncapsulatedRequest(payload=p) for p in payloads]
        contexts = [context for _, context in pool]
        opens = _opens_to_health(contexts)

        handle = gateway_pb2_grpc.GatewayStub(gw_channel).Handle
        forward = relay_pb2_grpc.RelayStub(relay_channel).Forward
        health_check = health_pb2_grpc.HealthStub(gw_channel).Check
        health_request = health_pb2.HealthCheckRequest(service="")
        serving = health_pb2.HealthCheckResponse.SERVING
        ohttp_headers = {"Content-Type": ohttp.MEDIA_TYPE_REQUEST}

        async def grpc_ohttp(i: int) -> object:
            reply = await handle(messages[i % POOL_SIZE], timeout=CALL_TIMEOUT)
            return bytes(reply.payload)

        async def grpc_health(_: int) -> object:
            reply = await health_check(health_request, timeout=CALL_TIMEOUT)
            return reply.status

        async def http_ohttp(i: int) -> object:
            async with session.post(gateway_url, data=payloads[i % POOL_SIZE], headers=ohttp_headers) as r:
                body = await r.read()
                return body if r.status == 200 and r.content_type == ohttp.MEDIA_TYPE_RESPONSE else None

        async def http_keys(_: int) -> object:
            async with session.get(gateway_url) as r:
                body = await r.read()
                return body if r.status == 200 else None

        async def relay_ohttp(i: int) -> object:
            reply = await forward(messages[i % POOL_SIZE], timeout=CALL_TIMEOUT)
            return bytes(reply.payload)

        async def grpc_ohttp_inline(_: int) -> object:
            payload, context = ohttp.encapsulate_request(config, request, suite=suite)
            reply = await handle(common_pb2.EncapsulatedRequest(payload=payload), timeout=CALL_TIMEOUT)
            return bhttp.decode_response(context.decapsulate_response(bytes(reply.payload))).status

        direct = Load("grpc ohttp", grpc_ohttp, opens)
        health = Load("grpc health", grpc_health, lambda _, a: a == serving)
        http = Load("http ohttp", http_ohttp, opens)
        keys = Load("http keys", http_keys, lambda _, a: a == keys_body)
        relayed = Load("relay ohttp", relay_ohttp, opens)
        inline = Load("grpc ohttp inline", grpc_ohttp_inline, lambda _, a: a == 200)
        await _measure([health, direct, keys, http, relayed, inline], settings)

    def result(name: str, load: Load, baseline: str, base: Load, note: str = "") -> Result:
        errors = Counter(load.errors)
        errors.update({f"baseline:{k}": v for k, v in base.errors.items()})
        return Result(GROUP, name, load.samples, baseline, base.samples, note, dict(errors))

    results = [
        result(
            "gateway grpc Handle (ohttp health)",
            direct,
            "grpc health Check",
            health,
            note="pre-encapsulated requests",
        ),
        result(
            "gateway http POST (ohttp health)",
            http,
            "http GET key config",
            keys,
            note="pre-encapsulated requests",
        ),
        result(
            "relay Forward -> gateway (ohttp health)",
            relayed,
            "gateway grpc Handle (ohttp health)",
            direct,
            note="pre-encapsulated requests",
        ),
        result(
            "gateway grpc Handle, client crypto in loop",
            inline,
            "gateway grpc Handle (ohttp health)",
            direct,
            note="encapsulate + decapsulate per request, same process",
        ),
    ]
    notes = [
        f"gateway: {CONCURRENCY} concurrent client tasks; ops/s = median of {settings.load_rounds} "
        f"round-robin runs of {settings.load_seconds:g} s each (after a {settings.load_warmup:g} s "
        "warm-up per load); ratio = median of the per-round ratios.",
        f"gateway: OHTTP loads replay a pool of {POOL_SIZE} requests encapsulated before the timed "
        "loop, so the figures measure the server; every answer is authenticated after the loop.",
        "gateway: client, relay and gateway run in ONE process and event loop, sharing the CPUs: "
        "absolute figures understate a dedicated server.",
    ]
    return Report(results, notes)


def run(settings: Settings) -> Report:
    return asyncio.run(_scenario(settings))
