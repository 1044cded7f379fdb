"""How long an agent takes to move to another control-plane replica.

Two API replicas on one database (SQLite in a temporary directory, or DATABASE_URL), each
behind a TCP proxy whose link is cut; an agent (fake runtime) that knows both, with the
default heartbeat interval and timeouts. For each way a replica can fail:

- refuse: the replica died (its connections closed, new ones refused);
- hang: its host vanished or the process froze (connections open, nothing answers);

it measures, from the cut, the agent's switch to the other replica, and the arrival at
the agent of an assignment change committed at the moment of the cut (its blocking query
must leave the dead replica for that).

Run: .venv/bin/python bench/failover_bench.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shellwego.agent.daemon import Agent
from shellwego.agent.settings import AgentSettings
from shellwego.models import OrganizationCreate, UserCreate
from shellwego.runtime.fake import FakeDriver
from shellwego.services import auth, nodes, placement
from shellwego.services.bootstrap import build_context
from shellwego.services.context import Context
from shellwego.services.tokens import JOIN_PREFIX, new_token
from shellwego.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cutproxy import api_replica, proxy_to


async def until(check: object, limit: float = 60.0) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - start > limit:
            raise SystemExit("timed out")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def bump(ctx: Context, node_id: str) -> None:
    with ctx.db.session() as s:
        placement.touch_nodes(ctx, s, {node_id})


async def one_round(ctx: Context, join: str, mode: str, state: Path) -> tuple[float, float]:
    async with (
        api_replica(ctx) as url_a,
        api_replica(ctx) as url_b,
        proxy_to(url_a) as link_a,
        proxy_to(url_b) as link_b,
    ):
        settings = AgentSettings(
            server_url=f"{link_a.url},{link_b.url}",
            join_token=join,
            state_dir=state,
            hostname=f"bench-{mode}-{state.name}",
            capacity_cpu_millis=1000,
            capacity_memory_bytes=1 << 30,
        )
        agent = Agent(settings, FakeDriver())
        runner = asyncio.create_task(agent.run())
        try:
            await until(lambda: agent.heartbeats >= 2 and agent.desired is not None)
            # the blocking query waits on A; cut at any point of its probe cycle
            await asyncio.sleep(random.uniform(0.5, 3.5))
            index = agent._index
            link_a.set(mode)  # type: ignore[arg-type]
            cut = time.monotonic()
            await asyncio.to_thread(bump, ctx, agent.node_id or "")
            switch = await until(lambda: agent.client.server_url == link_b.url)
            await until(lambda: agent._index > index)
            return switch, time.monotonic() - cut
        finally:
            await agent.stop()
            await runner


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        settings = Settings.from_env({}, data_dir=Path(tmp) / "data", database_url=url)
        ctx = build_context(settings)
        await ctx.bus.start()
        await asyncio.to_thread(
            auth.bootstrap,
            ctx,
            UserCreate(email="b@example.com", name="B", password="a long enough password"),
            OrganizationCreate(name="B", slug="b"),
        )
        join = await asyncio.to_thread(
            nodes.create_join_token, ctx, "bench", new_token(JOIN_PREFIX)
        )
        print(f"database: {ctx.db.backend}; heartbeat every 5 s, default timeouts")
        for mode in ("refuse", "hang"):
            switches, changes = [], []
            for n in range(rounds):
                switch, change = await one_round(ctx, join, mode, Path(tmp) / f"{mode}-{n}")
                switches.append(switch)
                changes.append(change)
            print(
                f"{mode:6}  switch to the other replica: median "
                f"{statistics.median(switches):.2f} s (max {max(switches):.2f});  "
                f"change delivered: median {statistics.median(changes):.2f} s "
                f"(max {max(changes):.2f})"
            )
        await asyncio.sleep(0.5)  # the replicas' last requests end
        await ctx.bus.close()
        ctx.db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
