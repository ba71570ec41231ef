"""Client → relay → gateway over OHTTP, through real servers on loopback, and attacks on it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from privproc.client import OhttpClient
from privproc.errors import RateLimitedError
from privproc.v1 import cdn_pb2, cdn_pb2_grpc, common_pb2, relay_pb2_grpc
from privproc.wire import bhttp, ohttp
from tests.livestack import Stack, start_stack, stop_stack

HEALTH = bhttp.Request("GET", "https", "privproc.local", "/v1/health")


async def _keys(stack: Stack) -> ohttp.KeyConfig:
    async with aiohttp.ClientSession() as session, session.get(stack.file.cdn.keys_url) as resp:
        return ohttp.select_key_config(ohttp.decode_key_config_list(await resp.read()))[0]


async def _post(
    url: str, body: bytes, *, content_type: str = ohttp.MEDIA_TYPE_REQUEST, **kw: object
) -> tuple[int, str, bytes]:
    headers = {"Content-Type": content_type}
    async with (
        aiohttp.ClientSession(**kw) as session,  # type: ignore[arg-type]
        session.post(url, data=body, headers=headers) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


async def _forward_grpc(stack: Stack, payload: bytes) -> bytes:
    async with aio.insecure_channel(stack.file.relay.grpc) as channel:
        reply = await relay_pb2_grpc.RelayStub(channel).Forward(
            common_pb2.EncapsulatedRequest(payload=payload), timeout=5
        )
        return bytes(reply.payload)


@pytest.mark.parametrize("transport", ["http", "grpc"])
async def test_health_through_relay(stack: Stack, transport: str) -> None:
    async with OhttpClient.from_stack(stack.file, transport=transport) as client:  # type: ignore[arg-type]
        response, receipt = await client.health()
    assert response.status == 200
    assert json.loads(response.content)["status"] == "serving"
    assert receipt.response_authenticated and receipt.relay_transport == transport
    assert receipt.ohttp_key_id == stack.gateway.core.schedule.current.key.config.key_id
    # The gateway got exactly one request, over gRPC from the relay.
    assert [r.transport for r in stack.recorder.seen] == ["grpc"]


@pytest.mark.parametrize("relay_via_http", [False, True])
async def test_gateway_never_sees_client_address_or_headers(tmp_path: Path, relay_via_http: bool) -> None:
    stack = await start_stack(tmp_path, relay_via_http=relay_via_http)
    try:
        config = await _keys(stack)
        payload, context = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
        identifying = {
            "X-Forwarded-For": "198.51.100.7",
            "Forwarded": "for=198.51.100.8",
            "Cookie": "session=client-cookie-value",
            "User-Agent": "client-agent/9.9",
            "Authorization": "Bearer client-bearer-value",
            "X-Client-Id": "client-id-value",
            "Content-Type": ohttp.MEDIA_TYPE_REQUEST,
        }
        # The client speaks from 127.0.0.2; relay and gateway listen on 127.0.0.1.
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(stack.file.relay.ohttp_url, data=payload, headers=identifying) as resp,
        ):
            assert resp.status == 200
            answer = await resp.read()
        assert bhttp.decode_response(context.decapsulate_response(answer)).status == 200

        [seen] = stack.recorder.seen
        assert seen.transport == ("http" if relay_via_http else "grpc")
        assert seen.body == payload  # the bytes, and only the bytes
        assert "127.0.0.2" not in seen.peer
        everything = json.dumps(seen.metadata).lower()
        for value in [*identifying.values(), "127.0.0.2"]:
            if value != ohttp.MEDIA_TYPE_REQUEST:
                assert value.lower() not in everything
        names = {name.lower() for name, _ in seen.metadata}
        assert not names & {
            "x-forwarded-for",
            "forwarded",
            "cookie",
            "authorization",
            "x-client-id",
            "x-real-ip",
        }
        if relay_via_http:
            assert "user-agent" not in names
    finally:
        await stop_stack(stack)


async def test_attacks_on_the_wire_get_typed_refusals_over_http(stack: Stack) -> None:
    config = await _keys(stack)
    payload, _ = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
    relay = stack.file.relay.ohttp_url

    tampered = payload[:-1] + bytes([payload[-1] ^ 1])
    wrong_key = bytes([(config.key_id + 1) % 256]) + payload[1:]
    for bad in (tampered, wrong_key):
        status, ctype, body = await _post(relay, bad)
        assert (status, ctype) == (400, "application/problem+json")
        assert json.loads(body)["type"] == ohttp.KEY_PROBLEM_TYPE

    status, _, body = await _post(relay, payload[:30])
    assert status == 400 and json.loads(body)["title"] == "truncated"

    status, _, _ = await _post(relay, b"\x00" * (stack.relay.config.max_request_bytes + 1))
    assert status == 413
    status, _, _ = await _post(
        stack.file.gateway.ohttp_url, b"\x00" * (stack.gateway.config.max_request_bytes + 1)
    )
    assert status == 413

    status, _, _ = await _post(relay, payload, content_type="application/octet-stream")
    assert status == 415
    async with aiohttp.ClientSession() as session, session.get(relay) as resp:
        assert resp.status == 405


async def test_attacks_on_the_wire_get_typed_refusals_over_grpc(stack: Stack) -> None:
    config = await _keys(stack)
    payload, _ = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
    cases = [
        (payload[:-1] + bytes([payload[-1] ^ 1]), grpc.StatusCode.FAILED_PRECONDITION, "ohttp_key"),
        (bytes([(config.key_id + 1) % 256]) + payload[1:], grpc.StatusCode.FAILED_PRECONDITION, "ohttp_key"),
        (payload[:30], grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
        (b"\x01" * (stack.gateway.config.max_request_bytes + 1), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ]
    for bad, code, reason in cases:
        with pytest.raises(aio.AioRpcError) as info:
            await _forward_grpc(stack, bad)
        assert info.value.code() == code
        assert (info.value.details() or "").startswith(reason)


async def test_replayed_request_gets_a_fresh_answer_only_its_sender_can_open(stack: Stack) -> None:
    config = await _keys(stack)
    payload, context = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
    _, other_context = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
    first = await _forward_grpc(stack, payload)
    status, _, second = await _post(stack.file.relay.ohttp_url, payload)
    assert status == 200 and first != second
    for answer in (first, second):
        assert bhttp.decode_response(context.decapsulate_response(answer)).status == 200
        with pytest.raises(ohttp.ResponseDecryptError):
            other_context.decapsulate_response(answer)


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (bhttp.Request("GET", "https", "example.com", "/v1/health"), 421),
        (bhttp.Request("GET", "http", "privproc.local", "/v1/health"), 421),
        (bhttp.Request("GET", "https", "privproc.local", "/nope"), 404),
        (bhttp.Request("POST", "https", "privproc.local", "/v1/health"), 405),
    ],
)
async def test_inner_routing_answers_are_encapsulated(
    stack: Stack, request_: bhttp.Request, status: int
) -> None:
    async with OhttpClient.from_stack(stack.file) as client:
        response, _ = await client.request(request_)
    assert response.status == status


async def test_malformed_inner_request_gets_encapsulated_400(stack: Stack) -> None:
    config = await _keys(stack)
    payload, context = ohttp.encapsulate_request(config, b"\x00\x03GE")
    answer = await _forward_grpc(stack, payload)
    assert bhttp.decode_response(context.decapsulate_response(answer)).status == 400


async def test_relay_rate_limits_per_client(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path, relay_config={"rate_per_second": 0.001, "burst": 3})
    try:
        config = await _keys(stack)
        payload, _ = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
        statuses = [(await _post(stack.file.relay.ohttp_url, payload))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        with pytest.raises(RateLimitedError):  # the SDK surfaces it typed
            async with OhttpClient.from_stack(stack.file) as client:
                await client.health()
        # A different client address has its own bucket.
        status, _, _ = await _post(
            stack.file.relay.ohttp_url, payload, connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
        )
        assert status == 200
        with pytest.raises(aio.AioRpcError) as info:
            for _ in range(4):
                await _forward_grpc(stack, payload)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await stop_stack(stack)


async def test_key_rotation_end_to_end(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path, gateway_config={"rotation_seconds": 1.0, "grace_seconds": 1.0})
    try:
        async with OhttpClient.from_stack(stack.file) as client:
            _, first = await client.health()
            old_config = (await client.keys()).config
            # Wait for a rotation: the CDN then serves the new key.
            for _ in range(40):
                await asyncio.sleep(0.1)
                if (await _keys(stack)).key_id != old_config.key_id:
                    break
            assert (await _keys(stack)).key_id != old_config.key_id
            # Still inside the grace period: the old key is accepted.
            payload, ctx = ohttp.encapsulate_request(old_config, bhttp.encode_request(HEALTH))
            assert (
                bhttp.decode_response(ctx.decapsulate_response(await _forward_grpc(stack, payload))).status
                == 200
            )
            # After the grace period the old key is refused; the client (still caching it)
            # re-fetches from the CDN by itself and succeeds under the new key.
            await asyncio.sleep(2.2)
            with pytest.raises(aio.AioRpcError):
                await _forward_grpc(stack, ohttp.encapsulate_request(old_config, b"x")[0])
            response, receipt = await client.health()
            assert response.status == 200 and receipt.ohttp_key_id != first.ohttp_key_id
    finally:
        await stop_stack(stack)


async def test_cdn_serves_keys_cacheably_and_guards_publishing(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.file.cdn.keys_url) as resp:
            assert resp.status == 200 and resp.content_type == ohttp.MEDIA_TYPE_KEYS
            etag = resp.headers["ETag"]
            assert "max-age=" in resp.headers["Cache-Control"] and "public" in resp.headers["Cache-Control"]
            body = await resp.read()
        async with session.get(stack.file.cdn.keys_url, headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        # Same key configuration as the gateway advertises itself.
        async with session.get(stack.file.gateway.keys_url) as resp:
            assert await resp.read() == body
    async with aio.insecure_channel(stack.file.cdn.grpc) as channel:
        stub = cdn_pb2_grpc.KeyCdnStub(channel)
        forged = cdn_pb2.PublishKeyConfigsRequest(key_configs=common_pb2.KeyConfigs(ohttp_keys=b"evil"))
        for metadata in ((), (("authorization", "Bearer wrong-credential-0123456789"),)):
            with pytest.raises(aio.AioRpcError) as info:
                await stub.PublishKeyConfigs(forged, metadata=metadata, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(aio.AioRpcError) as info:
            await stub.PublishKeyConfigs(
                forged, metadata=(("authorization", f"Bearer {stack.credential}"),), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await stub.GetKeyConfigs(common_pb2.GetKeyConfigsRequest(), timeout=5)).ohttp_keys == body


async def test_every_service_serves_health_and_reflection(stack: Stack) -> None:
    expected = {
        stack.file.cdn.grpc: "privproc.v1.KeyCdn",
        stack.file.gateway.grpc: "privproc.v1.Gateway",
        stack.file.relay.grpc: "privproc.v1.Relay",
    }
    for target, service in expected.items():
        async with aio.insecure_channel(target) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = {s.name async for reply in stream for s in reply.list_services_response.service}
            assert service in names and "grpc.health.v1.Health" in names


async def test_random_bodies_get_4xx_never_5xx(tmp_path: Path) -> None:
    """Garbage at both HTTP ingresses: always a typed client error, and the services stay up."""
    stack = await start_stack(tmp_path, relay_config={"burst": 10_000})
    try:
        await _random_bodies(stack)
    finally:
        await stop_stack(stack)


async def _random_bodies(stack: Stack) -> None:
    import random

    rng = random.Random(9458)
    config = await _keys(stack)
    valid, _ = ohttp.encapsulate_request(config, bhttp.encode_request(HEALTH))
    bodies = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 400))) for _ in range(40)]
    bodies += [valid[:i] for i in range(0, len(valid), 7)]
    bodies += [bytes([config.key_id]) + bytes(rng.randrange(256) for _ in range(120)) for _ in range(10)]
    for url in (stack.file.relay.ohttp_url, stack.file.gateway.ohttp_url):
        for body in bodies:
            status, _, _ = await _post(url, body)
            assert 400 <= status < 500, (url, len(body), status)
    async with OhttpClient.from_stack(stack.file) as client:
        assert (await client.health())[0].status == 200
