"""NATS buses for tests against the real server (mandatory: a missing one fails the run)."""

from __future__ import annotations

import os

import pytest

from shellwego.bus import NatsBus

NATS_URL = os.environ.get("SHELLWEGO_TEST_NATS_URL", "nats://127.0.0.1:4222")


async def nats_buses(count: int) -> list[NatsBus]:
    """``count`` started buses, as many control-plane replicas would hold."""
    buses = [NatsBus(NATS_URL) for _ in range(count)]
    try:
        for bus in buses:
            await bus.start()
    except Exception as exc:  # CI starts a server
        pytest.fail(f"NATS is required for this test and is not reachable at {NATS_URL}: {exc}")
    return buses
