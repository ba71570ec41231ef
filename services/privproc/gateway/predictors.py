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

The targets are a static list (``privproc up``) or learnt from the
Kubernetes API (:meth:`GrpcPredictorPool.set_targets`, fed by
:mod:`privproc.gateway.endpoint_watch`): a new target gets a channel and is
admitted only once its health check passes; a gone one is dropped at once
(no new session) and its channel closed once its calls in flight finish.
Each discovered target's transitions are events (``gateway.predictor_discovered``,
``_admitted``, ``_refused``, ``_dropped``), never a repeat of its state. A static
list's are not: on loopback its addresses could not be told from a client's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from privproc import events
from privproc.errors import DeadlineExceededError, UnavailableError
from privproc.gateway.discovery import changes
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
        self._targets = tuple(dict.fromkeys(targets))
        self._ca_pem = ca_pem
        self._identity = identity
        self._identity_source = identity_source
        self._channels = self._connect(identity, self._targets)
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: list[aio.Channel] = []
        self._admitted: list[str] = []
        #: Each target's last health-check outcome (True admitted, False refused; absent: none yet).
        self._passed: dict[str, bool] = {}
        #: Set when the targets change, so the admission loop checks the new ones at once.
        self.changed = asyncio.Event()
        #: Whether the targets come from discovery (then their transitions are events).
        self._discovering = False

    def _connect(self, identity: mtls.Identity, targets: Sequence[str]) -> dict[str, aio.Channel]:
        credentials = mtls.channel_credentials(identity, self._ca_pem)
        return {t: aio.secure_channel(t, credentials, options=mtls.channel_options()) for t in targets}

    def _retire(self, channels: Sequence[aio.Channel]) -> None:
        """Close ``channels`` once their calls in flight finish (at most a grace period)."""
        self._retired = [c for c in self._retired if c.get_state() != grpc.ChannelConnectivity.SHUTDOWN]
        for channel in channels:
            self._retired.append(channel)
            task = asyncio.create_task(channel.close(RETIRED_CHANNEL_GRACE_SECONDS))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def targets(self) -> Sequence[str]:
        """The predictors known now (admitted or not)."""
        return list(self._targets)

    def set_targets(self, targets: Iterable[str]) -> None:
        """Route to these predictors from now on (what discovery found), once each is admitted.

        A new target gets a channel (admitted at the next check); a gone one
        takes no new session, and its channel closes once its calls finish.
        """
        self._discovering = True
        wanted = tuple(sorted(set(targets)))
        added, dropped = changes(self._targets, wanted)
        if not added and not dropped:
            return
        self._targets = wanted
        self._channels.update(self._connect(self._identity, added))
        self._retire([self._channels.pop(target) for target in dropped])
        self._admitted = [target for target in self._admitted if target in self._channels]
        for target in added:
            events.emit(events.GatewayPredictorDiscovered(target=target))
        for target in dropped:
            self._passed.pop(target, None)
            events.emit(events.GatewayPredictorDropped(target=target))
        self.changed.set()

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
        retired = self._channels
        self._channels, self._identity = self._connect(identity, self._targets), identity
        self._retire(list(retired.values()))
        events.emit(events.GatewayIdentityReloaded())

    async def refresh(self) -> list[str]:
        """Check every target's health over mutual TLS; those that pass are the admitted ones."""
        self.changed.clear()
        self._reload_identity()
        checks = list(self._channels.items())  # the targets may change while it awaits
        passed = await asyncio.gather(*(self._check(channel) for _, channel in checks))
        admitted = []
        for (target, _), ok in zip(checks, passed, strict=True):
            if target not in self._channels:
                continue  # dropped meanwhile
            if self._discovering and self._passed.get(target) != ok:
                self._passed[target] = ok
                if ok:
                    events.emit(events.GatewayPredictorAdmitted(target=target))
                else:
                    events.emit(events.GatewayPredictorRefused(target=target))
            if ok:
                admitted.append(target)
        self._admitted = admitted
        return admitted

    @staticmethod
    async def _check(channel: aio.Channel) -> bool:
        # The typeshed stub declares no methods on HealthStub.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
        except aio.AioRpcError:
            return False  # TLS refused (no verifier-issued certificate) or down
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def _stub(self, target: str) -> predictor_pb2_grpc.PredictorAsyncStub:
        if target not in self._admitted:
            raise UnavailableError("predictor not admitted")
        return predictor_pb2_grpc.PredictorStub(self._channels[target])

    async def open(self, target: str, records: bytes, *, timeout_seconds: float) -> tuple[bytes, bytes, bool]:
        try:
            reply = await self._stub(target).OpenSession(
                predictor_pb2.OpenSessionRequest(tls_records=records), timeout=timeout_seconds
            )
        except aio.AioRpcError as err:
            raise _call_error(err) from None
        return bytes(reply.session_id), bytes(reply.tls_records), reply.closed

    async def stream(
        self, target: str, session_id: bytes, records: bytes, *, timeout_seconds: float
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        # The deadline travels to the predictor with the call: its model stops when it passes.
        call = self._stub(target).StreamSession(
            predictor_pb2.ContinueSessionRequest(session_id=session_id, tls_records=records),
            timeout=timeout_seconds,
        )
        try:
            async for reply in call:
                yield bytes(reply.tls_records), reply.closed
        except aio.AioRpcError as err:
            raise _call_error(err) from None
        finally:
            call.cancel()  # a no-op once it ended; else the predictor learns the reader went away

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        for task in list(self._retiring):
            task.cancel()
        for channel in self._retired:
            await channel.close(None)


def _call_error(err: aio.AioRpcError) -> Exception:
    """A predictor call's failure: its deadline, or the predictor (busy, down, lost the session)."""
    if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError("deadline exceeded")
    return UnavailableError("predictor unavailable")
