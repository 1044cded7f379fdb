"""Platform status and per-app metrics."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter

from shellwego import __version__
from shellwego.api.deps import Ctx, Who
from shellwego.models import App, DesiredState, Instance, Node
from shellwego.services import metrics
from shellwego.store import repository as repo

router = APIRouter(tags=["status"])


@router.get("/v1/status", name="status.get")
def status(who: Who, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.session() as s:
        nodes = Counter(str(n.status) for n in repo.find_all(s, Node))
        apps = repo.count(s, App, organization_id=who.organization_id, deleted_at=None)
        instances = Counter(
            i.state
            for i in repo.find_all(
                s,
                Instance,
                organization_id=who.organization_id,
                desired_state=DesiredState.RUNNING.value,
            )
        )
    port = ctx.settings.http_port
    return {
        "version": __version__,
        "backend": ctx.db.backend,
        "api_url": ctx.settings.api_url,
        "base_domain": ctx.settings.base_domain,
        "http_port": port,
        "https_port": ctx.settings.https_port,
        "apps_url_template": ctx.settings.apps_url_template,
        "nodes": dict(nodes),
        "apps": apps,
        "instances": dict(instances),
    }


@router.get("/v1/apps/{app}/metrics", name="apps.metrics")
async def app_metrics(app: str, who: Who, ctx: Ctx) -> dict[str, Any]:
    return await metrics.for_app(ctx, who, app)
