"""Liveness without authentication."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from shellwego import __version__
from shellwego.api.deps import Ctx
from shellwego.store import repository as repo

router = APIRouter(tags=["health"])


@router.get("/health", name="health")
async def health(ctx: Ctx) -> dict[str, str]:
    def probe() -> str:
        from shellwego.models import Organization

        with ctx.db.session() as s:
            repo.count(s, Organization)
        return "ok"

    database = await run_in_threadpool(probe)
    return {
        "status": "healthy",
        "version": __version__,
        "database": database,
        "backend": ctx.db.backend,
    }
