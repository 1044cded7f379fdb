"""The rollout controller: health-gated rolling deploys, formation upkeep, drains.

Level-triggered: each pass reads the state from the database and moves every app one
step closer to what its deployment or formation asks for. See README.md beside this file.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from shellwego.build import git
from shellwego.errors import CapacityError, ShellWeGoError
from shellwego.models import (
    App,
    AppStatus,
    Deployment,
    DeploymentStatus,
    DesiredState,
    Instance,
    Release,
)
from shellwego.services import apps, deployments, placement
from shellwego.services.context import Context
from shellwego.store import repository as repo

from .cluster import Cluster, shortfalls

log = logging.getLogger(__name__)

MAX_RESTARTS_WHILE_STARTING = 3
# a deleted app's row goes this long after the delete even if an agent never reports its
# instances gone (a node that heartbeats but lost them): their ports are then free again
DELETE_TIMEOUT_SECONDS = 60.0
def _running(s: Session, app_id: str) -> list[Instance]:
    return repo.find_all(s, Instance, app_id=app_id, desired_state=DesiredState.RUNNING.value)


def _wanted(app: App, release: Release) -> dict[str, int]:
    return {
        ptype: (pf.count if ptype in release.process_types else 0)
        for ptype, pf in app.formation.items()
    }


def _fail(ctx: Context, s: Session, dep: Deployment, app: App, error: str) -> None:
    live = _running(s, app.id)
    placement.stop(ctx, s, [i for i in live if i.deployment_id == dep.id])
    # anything we had started draining keeps serving the previous release
    for inst in live:
        if inst.deployment_id != dep.id and inst.drain_started_at is not None:
            inst.drain_started_at = None
    deployments.mark_failed(ctx, dep, app, error)
    deployments.record_event(
        ctx,
        s,
        app,
        "deploy.failed",
        error,
        {"deployment_id": dep.id},
        key=deployments.once("deploy.failed", dep.id),
    )


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


def _drop_lost(
    ctx: Context, s: Session, live: list[Instance], down: frozenset[str]
) -> list[Instance]:
    """Stop the instances of down nodes (they are replaced elsewhere); the others."""
    lost = [i for i in live if i.node_id in down]
    if lost:
        placement.stop(ctx, s, lost)
    return [i for i in live if i.node_id not in down]


def _place_up_to(
    ctx: Context,
    s: Session,
    app: App,
    release: Release,
    ptype: str,
    want: int,
    deployment_id: str | None,
) -> tuple[int, CapacityError | None]:
    """Place ``want`` new instances, or as many as fit: (how many, why not all)."""
    size = app.formation[ptype].resources
    made, error = placement.place_most(
        ctx, s, app, release, ptype, want, size, deployment_id=deployment_id
    )
    return len(made), error


def step_deployment(ctx: Context, deployment_id: str, cluster: Cluster) -> None:
    """One step of a rolling deploy, per process type (Kubernetes' rolling update rules):

    - at most ``count + surge`` instances serve or start at once (draining ones aside);
    - old instances drain while the healthy ones stay at ``count - max_unavailable`` or
      more, so with the default ``max_unavailable`` 0 only once new ones are healthy.
    """
    with ctx.db.session() as s:
        placement.nodes_first(s)  # the lock order: see services/placement.py
        dep = repo.get(s, Deployment, id=deployment_id)
        if dep is None or dep.status != DeploymentStatus.ROLLING:
            return  # finished, or its release phase has not ended yet
        app = repo.require(s, App, "app", id=dep.app_id)
        if app.deleted_at is not None:
            return  # ended by ``finish_deletion``
        release = repo.require(s, Release, "release", id=dep.release_id)
        now = ctx.clock.now()
        live = _drop_lost(ctx, s, _running(s, app.id), cluster.down)
        new = [i for i in live if i.deployment_id == dep.id]
        old = [i for i in live if i.deployment_id != dep.id and i.drain_started_at is None]
        draining = any(i.drain_started_at is not None for i in live)
        for inst in new:
            problem = _health_failure(inst, release, now)
            if problem:
                _fail(
                    ctx,
                    s,
                    dep,
                    app,
                    f"deployment of v{release.version} failed: "
                    f"{problem}; v{release.version} stopped, the previous release keeps serving",
                )
                return
        wanted = _wanted(app, release)
        ready_total = 0
        done = True
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
            surge = min(dep.surge, max(count, 1))
            floor = count - min(dep.max_unavailable, count)
            drain = max(0, min(len(ready) + len(theirs) - floor, len(theirs)))
            if drain:
                placement.begin_drain(ctx, s, theirs[:drain])
                theirs = theirs[drain:]
                draining = True  # their room frees once the drain period is over
            want = min(count - len(mine), count + surge - len(mine) - len(theirs))
            if want > 0:
                placed, error = _place_up_to(ctx, s, app, release, ptype, want, dep.id)
                if error is not None and not placed and not pending and not draining:
                    _fail(ctx, s, dep, app, str(error))  # nothing will make room
                    return
            ready_total += min(len(ready), count)
            if len(ready) < count or theirs:
                done = False
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
                key=deployments.once("deploy.succeeded", dep.id),
            )


def _formation_problem(ctx: Context, s: Session, app: App, problems: list[str]) -> None:
    """Record why the formation cannot be placed: one event per change of the problem."""
    problem = "; ".join(problems)[:2000] or None
    if problem == app.formation_error:
        return
    if problem is not None:
        deployments.record_event(ctx, s, app, "formation.unplaceable", problem, {})
    else:
        deployments.record_event(ctx, s, app, "formation.placed", "The formation is placed", {})
    app.formation_error = problem


def keep_formation(ctx: Context, app_id: str, cluster: Cluster) -> None:
    """Outside a rollout: the current release runs exactly the formation, on nodes that
    may run it (ready, matching the app's placement constraints).

    An instance on a node that is draining or no longer matches is re-planned: its
    replacement is placed elsewhere and it keeps serving until enough replacements are
    healthy. Instances of down nodes are stopped and replaced at once.
    """
    with ctx.db.session() as s:
        placement.nodes_first(s)  # the lock order: see services/placement.py
        app = repo.get(s, App, id=app_id)
        if app is None or app.deleted_at is not None or app.current_release_id is None:
            return
        if deployments.active_for(s, app.id, (DeploymentStatus.ROLLING.value,)):
            return  # the rollout does it (the release phase of one keeps the formation)
        live = _running(s, app.id)
        if app.status == AppStatus.STOPPED:
            if live:
                placement.stop(ctx, s, live)
            return
        release = repo.require(s, Release, "release", id=app.current_release_id)
        live = _drop_lost(ctx, s, live, cluster.down)
        nodes = cluster.nodes
        serving = [i for i in live if i.drain_started_at is None]
        strays = [i for i in serving if i.release_id != release.id]
        if strays:
            placement.begin_drain(ctx, s, strays)
        problems = []
        for ptype, count in _wanted(app, release).items():
            current = [i for i in serving if i.release_id == release.id and i.process_type == ptype]
            good = [i for i in current if placement.eligible(nodes.get(i.node_id), app)]
            moving = [i for i in current if i not in good]
            if len(good) < count:
                problem = _keep_placing(ctx, s, app, release, ptype, count - len(good), cluster)
                if problem is not None:
                    problems.append(problem)
            elif len(good) > count:
                surplus = sorted(good, key=lambda i: i.id, reverse=True)[: len(good) - count]
                placement.begin_drain(ctx, s, surplus)
                good = [i for i in good if i not in surplus]
            if moving:
                well = [i for i in moving if i.healthy]
                replaced = sum(1 for i in good if i.healthy) + len(well) - count
                gone = [i for i in moving if not i.healthy] + well[: max(replaced, 0)]
                if gone:
                    placement.begin_drain(ctx, s, gone)
        _formation_problem(ctx, s, app, problems)


def _keep_placing(
    ctx: Context, s: Session, app: App, release: Release, ptype: str, want: int, cluster: Cluster
) -> str | None:
    """Place ``want`` more instances of the formation, or as many as fit; why not all.
    Not asked again on an unchanged cluster once it did not fit (see :class:`Shortfalls`)."""
    memo = shortfalls(ctx)
    key = (app.id, ptype)
    size = app.formation[ptype].resources
    policy = app.placement
    asked = (
        release.id,
        want,
        size.cpu_millis,
        size.memory_bytes,
        app.runtime,
        policy.strategy,
        tuple(sorted(policy.constraints.items())),
    )
    fingerprint = cluster.fingerprint(s)
    now = ctx.clock.now()
    known = memo.known(key, asked, fingerprint, now)
    if known is not None:
        return known
    _, error = _place_up_to(ctx, s, app, release, ptype, want, None)
    memo.record(key, asked, fingerprint, now, error)
    return None if error is None else str(error)


def finish_drains(ctx: Context) -> None:
    """Stop instances whose drain period has passed."""
    drain = ctx.settings.drain_seconds
    with ctx.db.session() as s:
        placement.nodes_first(s)  # the lock order: see services/placement.py
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


def _all_gone(s: Session, app_id: str, down: frozenset[str]) -> bool:
    """Whether every instance of the app has been seen gone by its agent (a state that
    holds no port) or sits on a node that is down."""
    return all(
        i.state in placement.RELEASED_STATES or i.node_id in down
        for i in repo.find_all(s, Instance, app_id=app_id)
    )


def finish_deletion(ctx: Context, app_id: str, cluster: Cluster) -> None:
    """The finalizer of a deleted app: remove its row, and by cascade its releases,
    deployments, instances, config and secrets, once its instances are gone (see
    ``_all_gone``), or DELETE_TIMEOUT_SECONDS after the delete. Until then the instance
    rows keep their ports taken. Its git repository goes once the row has; its slugs are
    content-addressed, maybe shared, and stay."""
    removed = False
    with ctx.db.session() as s:
        placement.nodes_first(s)  # the lock order: see services/placement.py
        app = repo.get(s, App, id=app_id)
        if app is None or app.deleted_at is None:
            return
        if apps.retire(ctx, s, app):
            return  # placed or rolled out by a request begun before the delete
        waited = (ctx.clock.now() - app.deleted_at).total_seconds()
        if waited < DELETE_TIMEOUT_SECONDS and not _all_gone(s, app.id, cluster.down):
            return
        # the node lock placement takes: an instance of the app committed by a placement
        # begun before the delete is seen now, and stopped by the next pass
        placement.lock_nodes(s)
        if _running(s, app.id):
            return
        repo.delete(s, app)
        removed = True
        log.info("app %s removed, %.1f s after it was deleted", app.id, waited)
    if removed:
        git.remove_repo(git.repos_root(ctx.settings.data_dir), app_id)
        store = ctx.artifacts
        if store is not None and getattr(store, "shared", False):
            try:
                store.delete_named(git.stored_name(app_id))
            except ShellWeGoError as exc:  # an orphaned bundle; nothing reads it again
                log.warning("app %s: its stored repository was not deleted: %s", app_id, exc)


def pass_once(ctx: Context) -> None:
    """One full level-triggered pass over every app."""
    with ctx.db.session() as s:
        active = [d.id for d in deployments.active(s)]
        rows = [(a.id, a.deleted_at is None) for a in repo.find_all(s, App)]
        cluster = Cluster.read(s)  # once per pass, not once per app
    shortfalls(ctx).retain({app_id for app_id, live in rows if live})
    for dep_id in active:
        step_deployment(ctx, dep_id, cluster)
    for app_id, live in rows:
        if live:
            keep_formation(ctx, app_id, cluster)
        else:
            finish_deletion(ctx, app_id, cluster)
    finish_drains(ctx)
