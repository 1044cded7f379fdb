"""Formation, scale, restart / stop / start, one-off runs, and the instance list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status
from pydantic import BaseModel, Field

from shellwego.api.deps import Ctx, Who
from shellwego.models import FormationUpdate, Input, ProcessFormation
from shellwego.models.values import InstanceCount
from shellwego.services import processes
from shellwego.services.processes import InstanceView

router = APIRouter(tags=["processes"])


class ScaleIn(Input):
    replicas: InstanceCount


class ActionOut(BaseModel):
    status: str
    # restart: the release being rolled again (follow at /releases/{release}/rollout)
    release: int | None = None


class RunIn(Input):
    command: list[str] = Field(min_length=1, max_length=200)
    timeout: float = Field(default=60.0, gt=0, le=3600)


class RunOut(BaseModel):
    exit_code: int
    output: str


@router.patch(
    "/v1/apps/{app}/formation", response_model=dict[str, ProcessFormation], name="formation.update"
)
def update_formation(
    app: str, who: Who, ctx: Ctx, body: Annotated[FormationUpdate, Body()]
) -> dict[str, ProcessFormation]:
    """``{"web": 3}`` or ``{"web": {"count": 3, "size": "medium"}}``."""
    changes = {
        ptype: spec if isinstance(spec, int) else spec.model_dump(exclude_unset=True)
        for ptype, spec in body.items()
    }
    return processes.update_formation(ctx, who, app, changes)


@router.post(
    "/v1/apps/{app}/scale", response_model=dict[str, ProcessFormation], name="formation.scale"
)
def scale(app: str, body: ScaleIn, who: Who, ctx: Ctx) -> dict[str, ProcessFormation]:
    """Set the number of ``web`` instances."""
    return processes.update_formation(ctx, who, app, {"web": body.replicas})


@router.post(
    "/v1/apps/{app}/actions/restart",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ActionOut,
    name="apps.restart",
)
def restart(app: str, who: Who, ctx: Ctx) -> ActionOut:
    """Roll every instance of the current release again; ``release`` names it."""
    state, version = processes.restart(ctx, who, app)
    return ActionOut(status=state, release=version)


@router.post(
    "/v1/apps/{app}/actions/stop",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ActionOut,
    name="apps.stop",
)
def stop(app: str, who: Who, ctx: Ctx) -> ActionOut:
    return ActionOut(status=processes.stop(ctx, who, app))


@router.post(
    "/v1/apps/{app}/actions/start",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ActionOut,
    name="apps.start",
)
def start(app: str, who: Who, ctx: Ctx) -> ActionOut:
    return ActionOut(status=processes.start(ctx, who, app))


@router.get("/v1/apps/{app}/instances", response_model=list[InstanceView], name="instances.list")
def list_instances(app: str, who: Who, ctx: Ctx) -> list[InstanceView]:
    return processes.instances(ctx, who, app)


@router.post("/v1/apps/{app}/run", response_model=RunOut, name="apps.run")
async def run(app: str, body: RunIn, who: Who, ctx: Ctx) -> RunOut:
    """Run a one-off command in the current release's environment."""
    from shellwego.services import oneoff

    code, output = await oneoff.run(ctx, who, app, body.command, body.timeout)
    return RunOut(exit_code=code, output=output)
