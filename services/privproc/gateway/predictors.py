"""The predictors the gateway may route to: reached only over mutual TLS under the verifier's CA.

A predictor is admitted when a mutually authenticated health check
succeeds: it presented a workload certificate the verifier issued after
appraising its evidence (the channel refuses any other), and it accepted
the gateway's service certificate from the same CA. Admission is re-checked
periodically, so an expired or revoked workload certificate drops it
(predictors close connections after a maximum age, so each check soon meets
a fresh handshake).

The gateway's own certificate is short-lived too. Given an ``identity_source``
(its PEM files, read again on each admission check), a renewed pair is
taken as soon as it appears: new channels are made with it and the old ones
closed once their calls in flight finish. A pair whose key is not the
certificate's is refused and the current one kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from privproc import events
from privproc.errors import UnavailableError
from privproc.runtime import mtls
from privproc.v1 import predictor_pb2, predictor_pb2_grpc

#: How long replaced channels may finish their calls in flight (a generation) before they close.
RETIRED_CHANNEL_GRACE_SECONDS = 150.0


class GrpcPredictorPool:
    def __init__(
        self,
        targets: Sequence[str],
        identity: mtls.Identity,
        ca_pem: bytes,
        *,
        identity_source: Callable[[], mtls.Identity] | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._ca_pem = ca_pem
        self._identity = identity
        self._identity_source = identity_source
        self._channels = self._connect(identity)
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: list[aio.Channel] = []
        self._admitted: list[str] = []

    def _connect(self, identity: mtls.Identity) -> dict[str, aio.Channel]:
        credentials = mtls.channel_credentials(identity, self._ca_pem)
        return {t: aio.secure_channel(t, credentials, options=mtls.channel_options()) for t in self._targets}

    def admitted(self) -> Sequence[str]:
        return list(self._admitted)

    def _reload_identity(self) -> None:
        """Take a renewed certificate from the identity source, if there is one and it changed."""
        if self._identity_source is None:
            return
        try:
            identity = self._identity_source()
        except OSError:
            events.emit(events.GatewayIdentityRefused(reason="unreadable"))
            return
        if identity == self._identity:
            return
        try:
            mtls.certificate_of(identity)
        except mtls.IdentityError:
            # Mid-renewal (one file written, not the other) or broken: keep the current pair.
            events.emit(events.GatewayIdentityRefused(reason="key_mismatch"))
            return
        retired, self._channels, self._identity = self._channels, self._connect(identity), identity
        self._retired = [c for c in self._retired if c.get_state() != grpc.ChannelConnectivity.SHUTDOWN]
        for channel in retired.values():
            self._retired.append(channel)
            task = asyncio.create_task(channel.close(RETIRED_CHANNEL_GRACE_SECONDS))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        events.emit(events.GatewayIdentityReloaded())

    async def refresh(self) -> list[str]:
        self._reload_identity()
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
        for task in list(self._retiring):
            task.cancel()
        for channel in self._retired:
            await channel.close(None)
