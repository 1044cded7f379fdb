"""The FastAPI application: routers, error mapping, limits, audit."""

from __future__ import annotations

from fastapi import FastAPI

from shellwego import __version__
from shellwego.services.context import Context

from . import contract, problems
from .middleware import Audit, BodyLimit, RequestLog
from .routes import (
    agent,
    apps,
    audit,
    auth,
    deploys,
    domains,
    edge,
    git,
    health,
    home,
    logs,
    nodes,
    organizations,
    processes,
    secrets,
    status,
)

ROUTERS = (
    home,
    health,
    auth,
    organizations,
    apps,
    deploys,
    processes,
    logs,
    status,
    secrets,
    domains,
    nodes,
    audit,
    agent,
    edge,
    git,
)


def is_upload(path: str) -> bool:
    return path.startswith("/git/") or path.endswith("/builds")


def create_app(ctx: Context, *, extra_routers: tuple[object, ...] = ()) -> FastAPI:
    app = FastAPI(
        title="ShellWeGo API",
        version=__version__,
        description="Self-hosted platform as a service: apps, releases, domains, secrets.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
    )
    app.state.ctx = ctx
    problems.install(app)
    for module in (*ROUTERS, *extra_routers):
        app.include_router(module.router)  # type: ignore[attr-defined]
    contract.install(app)
    # the last added is the outermost: the audit sees the body limit's 413s too
    app.add_middleware(
        BodyLimit,
        limit=ctx.settings.max_body_bytes,
        upload_limit=ctx.settings.max_upload_bytes,
        is_upload=is_upload,
    )
    app.add_middleware(Audit, ctx_of=lambda: ctx, routes_of=lambda: app.routes)
    app.add_middleware(RequestLog)
    return app
