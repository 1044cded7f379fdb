"""Per-app figures for `shellwego top`: CPU and memory from agents, traffic from the edge."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from shellwego.models import DesiredState, Instance
from shellwego.store import repository as repo

from . import apps as app_service
from .context import Context, Principal


def record_stats(ctx: Context, instance_id: str, cpu_millis: float, memory_bytes: int) -> None:
    ctx.instance_stats[instance_id] = (cpu_millis, memory_bytes)


def _usage(ctx: Context, who: Principal, app_ref: str) -> tuple[str, str, int, float, int]:
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        rows = repo.find_all(s, Instance, app_id=app.id, desired_state=DesiredState.RUNNING.value)
    stats = ctx.instance_stats
    cpu = sum(stats.get(i.id, (0.0, 0))[0] for i in rows)
    memory = sum(stats.get(i.id, (0.0, 0))[1] for i in rows)
    return app.id, app.name, len(rows), cpu, memory


async def for_app(ctx: Context, who: Principal, app_ref: str) -> dict[str, Any]:
    app_id, name, count, cpu, memory = await run_in_threadpool(_usage, ctx, who, app_ref)
    figures: dict[str, Any] = {
        "app": name,
        "instances": count,
        "cpu_millis_used": round(cpu, 1),
        "memory_bytes": memory,
        "requests": 0,
        "status_2xx": 0,
        "status_3xx": 0,
        "status_4xx": 0,
        "status_5xx": 0,
        "latency_p50_ms": None,
        "latency_p99_ms": None,
    }
    traffic = ctx.traffic  # app id → the edge's figures
    if traffic is not None:
        figures.update(await traffic(app_id))
    return figures
