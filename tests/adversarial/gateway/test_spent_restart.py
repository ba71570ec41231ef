"""Attack: spend a token again after the gateway restarts.

``privproc serve gateway`` without Redis kept its spent set in memory: a
restart (a crash, a deploy) forgot every spent token still redeemable. Now
the default store is a SQLite file in the gateway's state directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from privproc.errors import TokenRefusedError
from privproc.gateway.server import GatewayConfig, GatewayService, build
from privproc.runtime import settings
from tests.adversarial.gateway.test_spent_ttl import issue_token

DAY = 86400.0


def _gateway(state_dir: Path) -> GatewayService:
    # What `privproc serve gateway --state-dir DIR` builds.
    return build(settings.from_args(GatewayConfig, ["--state-dir", str(state_dir)]))


async def test_the_spent_set_survives_a_gateway_restart(tmp_path: Path) -> None:
    start = time.time() // DAY * DAY  # the issuer key of the current day
    first = _gateway(tmp_path / "gateway")
    header, directory = issue_token(tmp_path, first, epoch=DAY, start=start)
    await first.redeemer.redeem(header)
    await first.redeemer.spent.close()  # the process ends
    second = _gateway(tmp_path / "gateway")
    second.redeemer.update_keys(directory)  # the same issuer's keys, as it would fetch them
    try:
        with pytest.raises(TokenRefusedError):
            await second.redeemer.redeem(header)
    finally:
        await second.redeemer.spent.close()
