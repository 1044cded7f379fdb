"""An edge node (real Caddy) that knows two control-plane replicas on one real database
(both backends): it leaves a replica that hangs for the other, serves only the instances
the database lists as live, keeps its last table while every replica is out of reach,
and drops stale routes as soon as one answers again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shellwego.models import DesiredState, Instance
from shellwego.roles.edge import EdgeNode
from shellwego.services import nodes
from shellwego.services.context import Context
from shellwego.services.tokens import JOIN_PREFIX, new_token
from shellwego.store import repository as repo
from support.cutproxy import api_replica, proxy_to
from support.dns_server import DnsServer

from .realparts import Api, Backend, settings_for
from .world import World


@pytest.fixture
def world(ctx: Context, api: Api, dns_server: DnsServer) -> World:
    return World(ctx, api, dns_server, node_address="127.0.0.1")


@pytest.fixture
def servers() -> Iterator[dict[str, Backend]]:
    made = {name: Backend(name) for name in ("old", "new")}
    yield made
    for b in made.values():
        b.close()


async def until(check: Callable[[], object], what: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    last: object = None
    while time.monotonic() < end:
        try:
            last = await asyncio.to_thread(check)
            if last:
                return
        except httpx.HTTPError as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}; last: {last!r}")


def stop_instances(ctx: Context, port: int) -> None:
    """The control plane stops the instance on ``port`` (and tells the edge)."""
    with ctx.db.session() as s:
        for inst in repo.find_all(s, Instance, port=port):
            inst.desired_state = DesiredState.STOPPED
    ctx.bus.notify("edge")


async def test_an_edge_node_fails_over_keeps_its_last_table_and_drops_stale_routes(
    ctx: Context, world: World, servers: dict[str, Backend], tmp_path: Path
) -> None:
    join = await asyncio.to_thread(nodes.create_join_token, ctx, "edge", new_token(JOIN_PREFIX))
    blog = world.app("blog")
    world.instance(blog, servers["old"].server.server_port)
    await ctx.bus.start()
    async with (
        api_replica(ctx) as url_a,
        api_replica(ctx) as url_b,
        proxy_to(url_a) as link_a,
        proxy_to(url_b) as link_b,
    ):
        edge = EdgeNode(
            f"{link_a.url},{link_b.url}", join, settings_for(tmp_path / "edge"), probe_interval=0.3
        )
        await edge.start()
        port = edge.settings.http_port

        def text() -> str:
            r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": "blog.localhost"})
            return f"{r.status_code} {r.text}"

        try:
            await until(lambda: text() == "200 old", "the edge node never served blog")
            assert edge.server_url == link_a.url

            # replica A hangs (nothing answers, nothing closes) while a new instance
            # replaces the old one: the edge node moves to B and serves the new one only
            link_a.set("hang")
            world.instance(blog, servers["new"].server.server_port)
            await asyncio.to_thread(stop_instances, ctx, servers["old"].server.server_port)
            await until(lambda: edge.server_url == link_b.url, "the edge node never left A")
            await until(lambda: text() == "200 new", "the edge node kept a stale route")
            for _ in range(10):
                assert await asyncio.to_thread(text) == "200 new"

            # cut off from every replica: the last table keeps serving, even though the
            # control plane stops the instance meanwhile (the edge node cannot know)
            link_b.set("refuse")
            link_a.set("refuse")
            await asyncio.to_thread(stop_instances, ctx, servers["new"].server.server_port)
            await asyncio.sleep(1.5)
            for _ in range(10):
                assert await asyncio.to_thread(text) == "200 new"

            # a replica answers again: the current table at once, the stale route gone
            link_b.set("pass")
            await until(lambda: text().startswith("503 "), "the stale route stayed")
        finally:
            await edge.stop()
