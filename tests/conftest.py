"""Shared fixtures: the simulator's AMD root, loopback services."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from privproc.attestation.simulator import DevelopmentRoot
from tests.livestack import Stack, start_stack, stop_stack
from tests.otlp_receiver import OtlpReceiver

#: The cluster tests need a cluster (and helm): `make k8s-e2e` / `make kind-e2e` run them.
collect_ignore = [] if os.environ.get("PRIVPROC_K8S_TESTS") else ["k8s"]


@pytest.fixture(scope="session")
def root_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where :func:`root` keeps its keys and certificates (tests copy them to make a sibling root)."""
    return tmp_path_factory.mktemp("devroot")


@pytest.fixture(scope="session")
def root(root_dir: Path) -> DevelopmentRoot:
    """The simulator's ARK, ASK and VCEK: made once (two RSA-4096 keys) and shared by every test."""
    return DevelopmentRoot.load_or_create(root_dir)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """CDN, gateway and relay running on loopback for one test."""
    running = await start_stack(tmp_path)
    try:
        yield running
    finally:
        await stop_stack(running)


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A tiny OTLP/gRPC collector (``.endpoint`` for ``--otlp-endpoint``), stopped after the test."""
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _reset_meter_provider() -> None:
    # OpenTelemetry lets a process set its global meter provider once; the guard is reset so that
    # a test that needs its own provider gets it, whatever ran before it in this process (the
    # proxies of instruments made at import rebind to each provider set).
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None


@pytest.fixture
def fresh_meter_provider() -> Iterator[None]:
    """Lets the test set OpenTelemetry's global meter provider; unset afterwards.

    (Tracer providers cannot be swapped this way: a proxy tracer keeps the first one it saw.)
    """
    _reset_meter_provider()
    try:
        yield
    finally:
        _reset_meter_provider()
