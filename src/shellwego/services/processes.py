"""Formation (scale and size per process type), restart / stop / start, instances."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from shellwego.errors import InvalidInput
from shellwego.models import (
    SIZES,
    AppStatus,
    DesiredState,
    Instance,
    Node,
    ProcessFormation,
    Release,
    Role,
)
from shellwego.models.values import MAX_INSTANCES, PROCESS_TYPE, RELEASE_PROCESS, SizeName
from shellwego.store import repository as repo

from . import apps as app_service
from . import deployments, placement, releases
from .context import Context, Principal, wake_after_commit
from .organizations import require_role


def parse_formation(
    body: Mapping[str, object], current: Mapping[str, ProcessFormation]
) -> dict[str, ProcessFormation]:
    """``{"web": 3}`` or ``{"web": {"count": 3, "size": "medium"}}`` merged over ``current``."""
    if not body:
        raise InvalidInput('give at least one process type, e.g. {"web": 2}')
    result = dict(current)
    for ptype, spec in body.items():
        if not PROCESS_TYPE.match(ptype):
            raise InvalidInput(f"invalid process type {ptype!r}")
        if ptype == RELEASE_PROCESS:
            raise InvalidInput(
                "release is the release command: it runs once per release, before the "
                "rollout, and is not scaled"
            )
        base = result.get(ptype, ProcessFormation(count=0))
        if isinstance(spec, bool) or not isinstance(spec, int | dict):
            raise InvalidInput(f'{ptype}: give a count or {{"count": n, "size": "small"}}')
        fields = {"count": spec} if isinstance(spec, int) else dict(spec)
        unknown = set(fields) - {"count", "size"}
        if unknown:
            raise InvalidInput(f"{ptype}: unknown field(s) {', '.join(sorted(unknown))}")
        count = fields.get("count", base.count)
        size = fields.get("size", base.size)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_INSTANCES:
            raise InvalidInput(f"{ptype}: count must be an integer from 0 to {MAX_INSTANCES}")
        if size not in SIZES:
            raise InvalidInput(f"{ptype}: unknown size {size!r}; sizes: {', '.join(SIZES)}")
        name = cast(SizeName, size)
        result[ptype] = ProcessFormation(count=count, size=name, resources=SIZES[name])
    return result


def update_formation(
    ctx: Context, who: Principal, app_ref: str, body: Mapping[str, object]
) -> dict[str, ProcessFormation]:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        formation = parse_formation(body, app.formation)
        resized = [
            t
            for t, p in formation.items()
            if t in app.formation and app.formation[t].size != p.size
        ]
        release = (
            repo.require(s, Release, "release", id=app.current_release_id)
            if app.current_release_id
            else None
        )
        if release is not None:
            # what can never fit on the nodes as they are is refused, changing nothing
            placement.check_formation(s, app, release, app.formation, formation)
        app.formation = formation
        app.updated_at = ctx.clock.now()
        if resized and release is not None:
            # new sizes need new instances: roll them like a restart
            deployments.start(ctx, s, who, app, release, reason=f"resize {', '.join(resized)}")
        wake_after_commit(ctx, s, "rollout")
        return formation


def restart(ctx: Context, who: Principal, app_ref: str) -> tuple[str, int]:
    """Replace every instance of the current release, rolling; (status, its version)."""
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        release = releases.current(s, app)
        app.status = AppStatus.RUNNING
        deployments.start(ctx, s, who, app, release, reason="restart")
        return "restarting", release.version


def stop(ctx: Context, who: Principal, app_ref: str) -> str:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        for dep in deployments.active_for(s, app.id):
            dep.status = deployments.DeploymentStatus.SUPERSEDED
            dep.finished_at = ctx.clock.now()
        app.status = AppStatus.STOPPED
        app.updated_at = ctx.clock.now()
        wake_after_commit(ctx, s, "rollout")
        return "stopping"


def start(ctx: Context, who: Principal, app_ref: str) -> str:
    require_role(who, Role.MEMBER)
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        releases.current(s, app)
        app.status = AppStatus.RUNNING
        app.updated_at = ctx.clock.now()
        wake_after_commit(ctx, s, "rollout")
        return "starting"


@dataclass(frozen=True, slots=True)
class InstanceView:
    id: str
    process_type: str
    release_id: str
    release_version: int
    node_id: str
    node_hostname: str
    state: str
    healthy: bool
    restarts: int
    pid: int | None  # on the node (the sandbox's outermost process)
    port: int
    address: str  # where the edge reaches it: its own network's address, else its node's
    desired_state: str
    draining: bool
    created_at: datetime
    last_error: str | None = None


def instances(ctx: Context, who: Principal, app_ref: str) -> list[InstanceView]:
    with ctx.db.session() as s:
        app = app_service.find(s, who.organization_id, app_ref)
        rows = repo.find_all(s, Instance, app_id=app.id, desired_state=DesiredState.RUNNING.value)
        nodes = {n.id: n for n in repo.find_all(s, Node)}
        versions = {r.id: r.version for r in repo.find_all(s, Release, app_id=app.id)}
        return [
            InstanceView(
                id=i.id,
                process_type=i.process_type,
                release_id=i.release_id,
                release_version=versions.get(i.release_id, 0),
                node_id=i.node_id,
                node_hostname=nodes[i.node_id].hostname if i.node_id in nodes else "?",
                state=i.state,
                healthy=i.healthy,
                restarts=i.restarts,
                pid=i.pid,
                port=i.port,
                address=f"{i.address or (nodes[i.node_id].address if i.node_id in nodes else '?')}"
                f":{i.port}",
                desired_state=str(i.desired_state),
                draining=i.drain_started_at is not None,
                created_at=i.created_at,
                last_error=None if i.healthy else i.last_error,
            )
            for i in sorted(rows, key=lambda r: (r.process_type, r.id))
        ]
