"""Log shipping: batches, and nothing lost while the control plane is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shellwego.agent.logship import LogShipper
from shellwego.errors import Unavailable
from shellwego.runtime.driver import InstanceSpec, InstanceState
from shellwego.runtime.fake import FakeDriver

from .conftest import wait_for


async def started(driver: FakeDriver, iid: str) -> None:
    spec = InstanceSpec(
        instance_id=iid,
        app_id="A",
        app_name="blog",
        process_type="web",
        release_id="R",
        command="serve",
        app_dir=Path("/nonexistent"),
        env={},
        port=20001,
    )
    await driver.prepare(spec)
    await driver.start(spec)


async def test_batches_and_retries_while_unavailable() -> None:
    driver = FakeDriver()
    await started(driver, "a")
    batches: list[list[dict[str, Any]]] = []
    down = 2

    async def ship(lines: list[dict[str, Any]]) -> None:
        nonlocal down
        if down:
            down -= 1
            raise Unavailable("control plane down")
        batches.append(lines)

    shipper = LogShipper(driver, ship, batch_lines=500, retry_delay=lambda n: 0.05)
    runner = asyncio.create_task(shipper.run())
    try:
        driver.emit_log("a", "before follow")  # emitted before anyone followed: still shipped
        shipper.sync({"a": InstanceState.RUNNING})
        await asyncio.sleep(0.01)
        for n in range(1200):
            driver.emit_log("a", f"line {n}", stream="stderr" if n % 2 else "stdout")
        await wait_for(lambda: sum(len(b) for b in batches) == 1201)
        shipped = [line for b in batches for line in b]
        assert [x["line"] for x in shipped] == ["before follow"] + [
            f"line {n}" for n in range(1200)
        ]
        assert max(len(b) for b in batches) == 500
        assert shipped[2]["stream"] == "stderr"
        assert shipped[0]["timestamp"].endswith("Z")
        assert shipped[0]["instance_id"] == "a"
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await shipper.close()


async def test_adopted_instances_do_not_ship_old_lines_again() -> None:
    driver = FakeDriver()
    await started(driver, "a")
    driver.emit_log("a", "shipped by the previous agent")
    batches: list[list[dict[str, Any]]] = []

    async def ship(lines: list[dict[str, Any]]) -> None:
        batches.append(lines)

    shipper = LogShipper(driver, ship)
    shipper.adopt(["a"], datetime.now(UTC) + timedelta(microseconds=1))
    runner = asyncio.create_task(shipper.run())
    try:
        shipper.sync({"a": InstanceState.RUNNING})
        await asyncio.sleep(0.05)
        driver.emit_log("a", "new")
        await wait_for(lambda: batches)
        assert [x["line"] for b in batches for x in b] == ["new"]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await shipper.close()
