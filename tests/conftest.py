"""Shared fixtures: loopback services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.livestack import Stack, start_stack, stop_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """CDN, gateway and relay running on loopback for one test."""
    running = await start_stack(tmp_path)
    try:
        yield running
    finally:
        await stop_stack(running)
