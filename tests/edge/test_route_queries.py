"""Edge nodes' blocking route-table queries on a real database (both backends): a change
is seen at once however the wake-up and the read interleave, and one read per change
serves every waiting edge node."""

from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool

from shellwego.bus.memo import TopicMemo
from shellwego.models import AppCreate, OrganizationCreate, UserCreate
from shellwego.services import apps, auth, edges
from shellwego.services.context import Context, Principal

FOREVER = 3600.0  # no re-read by the clock: only a wake-up can answer in time
PROMPTLY = 30.0  # an answer that needed the clock would take FOREVER


def owner(ctx: Context) -> Principal:
    boot = auth.bootstrap(
        ctx,
        UserCreate(email="o@example.com", name="O", password="a long enough password"),
        OrganizationCreate(name="O", slug="o"),
    )
    return auth.authenticate(ctx, boot.token.secret)


async def test_a_change_committed_while_the_query_reads_the_table_is_answered_at_once(
    ctx: Context,
) -> None:
    await ctx.bus.start()
    who = owner(ctx)
    apps.create(ctx, who, AppCreate(name="blog"))
    current = edges.versioned_table(ctx)
    reads: list[bool] = []

    async def read_then_change() -> edges.VersionedTable:
        """The table as read, with a change committed (and notified) before the read
        returns: the first read answers the old table."""
        table = await run_in_threadpool(edges.versioned_table, ctx)
        if not reads:
            await run_in_threadpool(apps.update, ctx, who, "blog", {"redirect_https": True})
        reads.append(True)
        return table

    shared = TopicMemo(ctx.bus, "edge", read_then_change)
    answer = await asyncio.wait_for(
        edges.table_after(ctx, current.version, FOREVER, recheck=FOREVER, shared=shared),
        PROMPTLY,
    )
    assert answer.version != current.version
    assert [r.redirect_https for r in answer.table.routes if r.app_name == "blog"] == [True]
    assert len(reads) == 2
    await ctx.bus.close()


async def test_one_read_per_change_serves_every_waiting_edge_node(ctx: Context) -> None:
    await ctx.bus.start()
    who = owner(ctx)
    apps.create(ctx, who, AppCreate(name="blog"))
    shared = edges.tables(ctx)
    first = await edges.table_after(ctx, "", 0)  # an edge node's first query
    assert shared.reads == 1
    polls = [
        asyncio.create_task(edges.table_after(ctx, first.version, FOREVER, recheck=FOREVER))
        for _ in range(8)
    ]
    await asyncio.sleep(0.2)  # every poll waits; none reads: the table is unchanged
    assert shared.reads == 1 and not any(p.done() for p in polls)

    apps.update(ctx, who, "blog", {"redirect_https": True})
    answers = await asyncio.wait_for(asyncio.gather(*polls), PROMPTLY)
    assert {a.version for a in answers} != {first.version}
    assert len({a.version for a in answers}) == 1
    assert shared.reads == 2

    # a query that arrives with an outdated version is answered with a fresh read
    again = await edges.table_after(ctx, first.version, FOREVER, recheck=FOREVER)
    assert again.version == answers[0].version
    assert shared.reads == 3
    await ctx.bus.close()
