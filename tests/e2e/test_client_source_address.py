"""The client's ``local_address``: every HTTP connection of the device comes from that address.

(The canary test uses it to give the device a distinctive address, then looks for it.)
"""

from __future__ import annotations

import pytest
from aiohttp import web

from privproc.client import OhttpClient
from privproc.errors import ConfigError
from privproc.runtime.ohttp_transport import HttpTransport
from privproc.wire.ohttp import MEDIA_TYPE_RESPONSE
from tests.livestack import Stack

ADDRESS = "127.21.33.45"


async def test_http_connections_come_from_the_local_address() -> None:
    seen: list[str | None] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.remote)
        return web.Response(body=b"answer", content_type=MEDIA_TYPE_RESPONSE)

    app = web.Application()
    app.router.add_route("*", "/", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    transport = HttpTransport(url, local_address=ADDRESS)
    client = OhttpClient(
        keys_url=url, transport=transport, transport_name="http", origin="x", local_address=ADDRESS
    )
    try:
        assert await transport.send(b"request") == b"answer"  # to the relay
        async with client.session.get(url) as response:  # to the key CDN and the log
            assert response.status == 200
        assert await HttpTransport(url).send(b"request") == b"answer"  # the system's choice
    finally:
        await client.close()
        await runner.cleanup()
    assert seen == [ADDRESS, ADDRESS, "127.0.0.1"]


async def test_a_stack_client_with_a_local_address(stack: Stack) -> None:
    async with OhttpClient.from_stack(stack.file, local_address=ADDRESS) as client:
        response, _ = await client.health()
        assert response.status == 200
    with pytest.raises(ConfigError, match="HTTP only"):  # a gRPC channel cannot choose it
        OhttpClient.from_stack(stack.file, transport="grpc", local_address=ADDRESS)
