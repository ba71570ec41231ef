"""Shared fixtures: vector files, the shared conformance folder, loopback services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.livestack import Stack, start_stack, stop_stack
from tests.support import SHARED_VECTORS


@pytest.fixture
def shared_vectors() -> Path:
    if not SHARED_VECTORS.is_dir():
        pytest.skip("../shared/vectors is absent: real-hardware evidence tests need it beside the checkout")
    return SHARED_VECTORS


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """CDN, gateway and relay running on loopback for one test."""
    running = await start_stack(tmp_path)
    try:
        yield running
    finally:
        await stop_stack(running)
