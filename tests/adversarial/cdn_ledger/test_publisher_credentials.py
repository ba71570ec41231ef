"""Issue 11, item 12 (CDN part): each publisher gets its own CDN credential, scoped.

One Bearer credential used to publish everything: whoever held the gateway's could
overwrite a release proof or the issuer directory. Now each publisher's credential writes
only its own documents (gateway: key configurations and ``ohttp-keys-`` proofs; ACS: the
issuer directory and ``token-key-`` proofs; release: ``release-`` proofs); anything else is
``PERMISSION_DENIED`` — and every real publisher still publishes.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio

from privproc.runtime.cdn_publisher import CdnPublisher, ohttp_keys_proof_name, token_key_proof_name
from privproc.v1 import cdn_pb2, cdn_pb2_grpc, common_pb2
from privproc.wire import ohttp
from privproc.wire.privacypass import token_key_id
from tests.livestack import Stack, start_stack, stop_stack

Call = Callable[[cdn_pb2_grpc.KeyCdnStub, tuple[tuple[str, str], ...]], Awaitable[Any]]


async def _get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read()


async def _served_proof(stack: Stack) -> bytes:
    """A genuine tlog-proof the gateway published (its current key configuration's)."""
    status, keys = await _get(stack.file.cdn.keys_url)
    assert status == 200
    status, proof = await _get(stack.file.cdn.proofs_url + ohttp_keys_proof_name(keys))
    assert status == 200
    return proof


def _calls(proof: bytes) -> dict[str, Call]:
    keys = ohttp.encode_key_config_list([ohttp.GatewayKey.generate(9).config])
    configs = common_pb2.KeyConfigs(ohttp_keys=keys)
    configs.not_after.FromSeconds(2**33)
    return {
        "release_proof": lambda stub, md: stub.PublishProof(
            cdn_pb2.PublishProofRequest(name="release-" + "ab" * 32, proof=proof), metadata=md, timeout=5
        ),
        "token_key_proof": lambda stub, md: stub.PublishProof(
            cdn_pb2.PublishProofRequest(name="token-key-" + "cd" * 32, proof=proof), metadata=md, timeout=5
        ),
        "ohttp_keys_proof": lambda stub, md: stub.PublishProof(
            cdn_pb2.PublishProofRequest(name="ohttp-keys-" + "ef" * 32, proof=proof), metadata=md, timeout=5
        ),
        "issuer_directory": lambda stub, md: stub.PublishIssuerDirectory(
            cdn_pb2.PublishIssuerDirectoryRequest(directory=cdn_pb2.IssuerDirectory(directory=b"{}")),
            metadata=md,
            timeout=5,
        ),
        "key_configs": lambda stub, md: stub.PublishKeyConfigs(
            cdn_pb2.PublishKeyConfigsRequest(key_configs=configs), metadata=md, timeout=5
        ),
        "checkpoint": lambda stub, md: stub.PublishCheckpoint(
            cdn_pb2.PublishCheckpointRequest(checkpoint=common_pb2.SignedCheckpoint(note=b"log\n1\nAA\n\n")),
            metadata=md,
            timeout=5,
        ),
    }


SCOPES = {
    "gateway": {"key_configs", "ohttp_keys_proof"},
    "acs": {"issuer_directory", "token_key_proof"},
    "release": {"release_proof"},
}


async def test_each_credential_writes_only_its_own_documents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await start_stack(tmp_path)
    try:
        proof = await _served_proof(stack)
        directory_before = (await _get(stack.file.cdn.issuer_directory_url))[1]
        with caplog.at_level(logging.DEBUG, logger="privproc.events"):
            async with aio.insecure_channel(stack.file.cdn.grpc) as channel:
                stub = cdn_pb2_grpc.KeyCdnStub(channel)
                for publisher, allowed in SCOPES.items():
                    metadata = (("authorization", f"Bearer {stack.credentials[publisher].read_text()}"),)
                    for name, call in _calls(proof).items():
                        if name in allowed:
                            await call(stub, metadata)
                            continue
                        with pytest.raises(aio.AioRpcError) as info:
                            await call(stub, metadata)
                        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, (publisher, name)
                    if publisher == "gateway":
                        # The attack of the issue: the gateway's credential overwrote a release
                        # proof and the issuer directory. Neither moved.
                        assert (await _get(stack.file.cdn.issuer_directory_url))[1] == directory_before
                        release = stack.file.cdn.proofs_url + "release-" + "ab" * 32
                        assert (await _get(release))[0] == 404
        refused = [
            json.loads(r.getMessage())
            for r in caplog.records
            if r.name == "privproc.events" and '"cdn.publish_out_of_scope"' in r.getMessage()
        ]
        assert {line["publisher"] for line in refused} == set(SCOPES)
        # No credential's text ends up in the events.
        for path in stack.credentials.values():
            assert path.read_text() not in caplog.text
    finally:
        await stop_stack(stack)


async def test_a_credential_is_refused_at_the_doors_it_does_not_open(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path, with_acs=False, with_ledger=False)
    try:
        async with aio.insecure_channel(stack.file.cdn.grpc) as channel:
            stub = cdn_pb2_grpc.KeyCdnStub(channel)
            call = _calls(b"")["key_configs"]
            for metadata in ((), (("authorization", "Bearer not-a-publisher-credential-0123"),)):
                with pytest.raises(aio.AioRpcError) as info:
                    await call(stub, metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await stop_stack(stack)


async def test_every_real_publisher_still_publishes_with_its_own_credential(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path)
    try:
        # The gateway: its key configuration and that configuration's proof.
        proof = await _served_proof(stack)
        # The ACS: the issuer directory and a proof for each of its keys.
        status, directory = await _get(stack.file.cdn.issuer_directory_url)
        assert status == 200
        keys = json.loads(directory)["token-keys"]
        assert keys
        for key in keys:
            text = key["token-key"].rstrip("=")  # padded or not (RFC 9578 asks for padding)
            public = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            status, _ = await _get(stack.file.cdn.proofs_url + token_key_proof_name(token_key_id(public)))
            assert status == 200
        # The release publisher (privproc up logs a release with it).
        release = CdnPublisher(stack.file.cdn.grpc, stack.credentials["release"], service="stack")
        await release.proof("release-" + "12" * 32, proof)
        status, body = await _get(stack.file.cdn.proofs_url + "release-" + "12" * 32)
        assert (status, body) == (200, proof)
        # The gateway's own publisher, given a release name, is refused as a configuration error.
        gateway = CdnPublisher(stack.file.cdn.grpc, stack.credentials["gateway"], service="gateway")
        with pytest.raises(Exception) as info:
            await gateway.proof("release-" + "34" * 32, proof)
        assert getattr(info.value, "reason", None) == "config"
    finally:
        await stop_stack(stack)
