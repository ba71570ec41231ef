"""The predictors the gateway may route to: reached only over mutual TLS under the verifier's CA.

A predictor is admitted when a mutually authenticated health check
succeeds: it presented a workload certificate the verifier issued after
appraising its evidence (the channel refuses any other), and it accepted
the gateway's service certificate from the same CA. Admission is re-checked
periodically, so an expired or revoked workload certificate drops it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from privproc.errors import UnavailableError
from privproc.runtime import mtls
from privproc.v1 import predictor_pb2, predictor_pb2_grpc


class GrpcPredictorPool:
    def __init__(self, targets: Sequence[str], identity: mtls.Identity, ca_pem: bytes) -> None:
        credentials = mtls.channel_credentials(identity, ca_pem)
        self._channels = {
            t: aio.secure_channel(t, credentials, options=mtls.channel_options()) for t in targets
        }
        self._admitted: list[str] = []

    def admitted(self) -> Sequence[str]:
        return list(self._admitted)

    async def refresh(self) -> list[str]:
        admitted = []
        for target, channel in self._channels.items():
            # The typeshed stub declares no methods on HealthStub.
            stub: Any = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
            except aio.AioRpcError:
                continue  # TLS refused (no verifier-issued certificate) or down
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                admitted.append(target)
        self._admitted = admitted
        return admitted

    def _stub(self, target: str) -> predictor_pb2_grpc.PredictorAsyncStub:
        if target not in self._admitted:
            raise UnavailableError("predictor not admitted")
        return predictor_pb2_grpc.PredictorStub(self._channels[target])

    async def open(self, target: str, records: bytes) -> tuple[bytes, bytes, bool]:
        try:
            reply = await self._stub(target).OpenSession(
                predictor_pb2.OpenSessionRequest(tls_records=records), timeout=30
            )
        except aio.AioRpcError as err:
            raise UnavailableError("predictor unavailable") from err
        return bytes(reply.session_id), bytes(reply.tls_records), reply.closed

    async def resume(self, target: str, session_id: bytes, records: bytes) -> tuple[bytes, bool]:
        try:
            reply = await self._stub(target).ContinueSession(
                predictor_pb2.ContinueSessionRequest(session_id=session_id, tls_records=records), timeout=120
            )
        except aio.AioRpcError as err:
            raise UnavailableError("predictor unavailable") from err
        return bytes(reply.tls_records), reply.closed

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
