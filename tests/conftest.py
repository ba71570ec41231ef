"""Shared fixtures: the simulator's AMD root, loopback services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from privproc.attestation.simulator import DevelopmentRoot
from tests.livestack import Stack, start_stack, stop_stack
from tests.otlp_receiver import OtlpReceiver


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
