"""The rollout controller: health-gated rolling deploys, formation upkeep, drains.

Level-triggered: each pass reads the state from the database and moves every app one
step closer to what its deployment or formation asks for. See README.md here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from shellwego.errors import CapacityError
from shellwego.models import (
    App,
    AppStatus,
    Deployment,
    DeploymentStatus,
    DesiredState,
    Instance,
    Node,
    NodeStatus,
    Release,
)
from shellwego.services import deployments, placement
from shellwego.services.context import Context
from shellwego.store import repository as repo

MAX_RESTARTS_WHILE_STARTING = 3


def _running(s: Session, app_id: str) -> list[Instance]:
    return repo.find_all(s, Instance, app_id=app_id, desired_state=DesiredState.RUNNING.value)


def _wanted(app: App, release: Release) -> dict[str, int]:
    return {
        ptype: (pf.count if ptype in release.process_types else 0)
        for ptype, pf in app.formation.items()
    }


def _fail(
    ctx: Context, s: Session, dep: Deployment, app: App, new: list[Instance], error: str
) -> None:
    now = ctx.clock.now()
    placement.stop(ctx, s, new)
    # anything we had started draining keeps serving the previous release
    for inst in _running(s, app.id):
        if inst.deployment_id != dep.id and inst.drain_started_at is not None:
            inst.drain_started_at = None
    dep.status = DeploymentStatus.FAILED
    dep.error = error
    dep.finished_at = now
    dep.updated_at = now
    app.status = AppStatus.RUNNING if app.current_release_id else AppStatus.ERROR
    app.updated_at = now
    deployments.record_event(ctx, s, app, "deploy.failed", error, {"deployment_id": dep.id})


def _health_failure(inst: Instance, release: Release, now: datetime) -> str | None:
    if inst.healthy:
        return None
    age = (now - inst.created_at).total_seconds()
    if age > release.health_check.timeout_seconds:
        return (
            f"{inst.process_type} instance {inst.id} did not become healthy within "
            f"{release.health_check.timeout_seconds:g} s"
        )
    if inst.restarts >= MAX_RESTARTS_WHILE_STARTING:
        detail = f": {inst.last_error}" if inst.last_error else ""
        return f"{inst.process_type} instance {inst.id} crashed {inst.restarts} times{detail}"
    return None


def step_deployment(ctx: Context, deployment_id: str) -> None:
    with ctx.db.session() as s:
        dep = repo.get(s, Deployment, id=deployment_id)
        if dep is None or dep.status not in (DeploymentStatus.ROLLING, DeploymentStatus.PENDING):
            return
        app = repo.require(s, App, "app", id=dep.app_id)
        release = repo.require(s, Release, "release", id=dep.release_id)
        now = ctx.clock.now()
        live = _running(s, app.id)
        new = [i for i in live if i.deployment_id == dep.id]
        old = [i for i in live if i.deployment_id != dep.id and i.drain_started_at is None]
        for inst in new:
            problem = _health_failure(inst, release, now)
            if problem:
                _fail(
                    ctx,
                    s,
                    dep,
                    app,
                    new,
                    f"deployment of v{release.version} failed: "
                    f"{problem}; v{release.version} stopped, the previous release keeps serving",
                )
                return
        wanted = _wanted(app, release)
        ready_total = 0
        done = True
        try:
            for ptype, count in wanted.items():
                mine = [i for i in new if i.process_type == ptype]
                ready = [i for i in mine if i.healthy]
                pending = [i for i in mine if not i.healthy]
                theirs = sorted((i for i in old if i.process_type == ptype), key=lambda i: i.id)
                # old instances that serve nothing (a superseded rollout's, or crashed ones)
                # are stopped, and never counted as capacity that lets a healthy one drain
                stale = [i for i in theirs if not i.healthy]
                if stale:
                    placement.stop(ctx, s, stale)
                    theirs = [i for i in theirs if i.healthy]
                if len(mine) > count:
                    extra = (pending + ready)[: len(mine) - count]
                    placement.stop(ctx, s, extra)
                    ready = [i for i in ready if i not in extra]
                    pending = [i for i in pending if i not in extra]
                    mine = ready + pending
                want = min(count - len(mine), dep.surge - len(pending))
                if want > 0:
                    size = app.formation[ptype].resources
                    placement.place(ctx, s, app, release, ptype, want, size, deployment_id=dep.id)
                excess = len(ready) + len(theirs) - count
                if excess > 0:
                    placement.begin_drain(ctx, s, theirs[:excess])
                ready_total += min(len(ready), count)
                if len(ready) < count or len(theirs) - max(excess, 0) > 0:
                    done = False
        except CapacityError as exc:
            _fail(ctx, s, dep, app, new, str(exc))
            return
        strays = [i for i in old if wanted.get(i.process_type, 0) == 0]
        if strays:
            placement.begin_drain(ctx, s, strays)
        dep.instances_ready = ready_total
        dep.updated_at = now
        if done:
            dep.status = DeploymentStatus.SUCCEEDED
            dep.finished_at = now
            app.current_release_id = release.id
            app.status = AppStatus.RUNNING
            app.updated_at = now
            deployments.record_event(
                ctx,
                s,
                app,
                "deploy.succeeded",
                f"Deployed v{release.version}",
                {"deployment_id": dep.id, "release": release.version},
            )


def keep_formation(ctx: Context, app_id: str) -> None:
    """Outside a rollout: the current release runs exactly the formation, on healthy nodes."""
    with ctx.db.session() as s:
        app = repo.get(s, App, id=app_id)
        if app is None or app.current_release_id is None or deployments.active_for(s, app.id):
            return
        live = _running(s, app.id)
        if app.status == AppStatus.STOPPED:
            if live:
                placement.stop(ctx, s, live)
            return
        release = repo.require(s, Release, "release", id=app.current_release_id)
        ready_nodes = {n.id for n in repo.find_all(s, Node, status=NodeStatus.READY.value)}
        serving = [i for i in live if i.drain_started_at is None]
        strays = [i for i in serving if i.release_id != release.id]
        if strays:
            placement.begin_drain(ctx, s, strays)
        for ptype, count in _wanted(app, release).items():
            current = [i for i in serving if i.release_id == release.id and i.process_type == ptype]
            good = [i for i in current if i.node_id in ready_nodes]
            evacuate = [i for i in current if i.node_id not in ready_nodes]
            if len(good) < count:
                try:
                    placement.place(
                        ctx,
                        s,
                        app,
                        release,
                        ptype,
                        count - len(good),
                        app.formation[ptype].resources,
                        deployment_id=None,
                    )
                except CapacityError as exc:
                    deployments.record_event(ctx, s, app, "formation.unplaceable", str(exc), {})
                    continue
            elif len(good) > count:
                surplus = sorted(good, key=lambda i: i.id, reverse=True)[: len(good) - count]
                placement.begin_drain(ctx, s, surplus)
            if evacuate:
                placement.begin_drain(ctx, s, evacuate)


def finish_drains(ctx: Context) -> None:
    """Stop instances whose drain period has passed."""
    drain = ctx.settings.drain_seconds
    with ctx.db.session() as s:
        now = ctx.clock.now()
        due = [
            i
            for i in repo.find_all(
                s,
                Instance,
                Instance.drain_started_at.is_not(None),  # type: ignore[union-attr]
                desired_state=DesiredState.RUNNING.value,
            )
            if i.drain_started_at is not None
            and (now - i.drain_started_at).total_seconds() >= drain
        ]
        if due:
            placement.stop(ctx, s, due)


def pass_once(ctx: Context) -> None:
    """One full level-triggered pass over every app."""
    with ctx.db.session() as s:
        active = [d.id for d in deployments.active(s)]
        app_ids = [a.id for a in repo.find_all(s, App)]
    for dep_id in active:
        step_deployment(ctx, dep_id)
    for app_id in app_ids:
        keep_formation(ctx, app_id)
    finish_drains(ctx)
