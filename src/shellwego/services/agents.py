"""The control-plane side of the agent protocol (docs/agent-protocol.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shellwego.errors import ArtifactMissing, PortInUse
from shellwego.models import (
    App,
    DesiredState,
    Instance,
    LogLine,
    Node,
    NodeStatus,
    Release,
    new_id,
)
from shellwego.models.agentprotocol import (
    IMAGE_DIGEST_PATTERN,
    RUNTIMES,
    AssignedNetwork,
    AssignedResources,
    Assignment,
    Assignments,
    HealthCheckSpec,
    Heartbeat,
    ImageArtifact,
    ObservedInstance,
    Runtime,
    ShippedLine,
    SlugArtifact,
)
from shellwego.store import repository as repo

from . import deployments, metrics, placement, secrets
from .context import Context, wake_after_commit
from .placement import RELEASED_STATES

# ports of a node found held by other programs, never handed out there (the newest kept)
BUSY_PORTS_KEPT = 1024


def heartbeat(ctx: Context, node: Node, body: Heartbeat) -> Node:
    """Record what the agent observed; run again on a transient database conflict (see
    ``Database.retrying``), so one never reaches the agent as an error."""
    return ctx.db.retrying(lambda: _heartbeat(ctx, node, body))


def _heartbeat(ctx: Context, node: Node, body: Heartbeat) -> Node:
    changed = False
    with ctx.db.session() as s:
        row = repo.require(s, Node, "node", id=node.id)
        now = ctx.clock.now()
        row.last_heartbeat_at = now
        if body.capacity is not None and body.capacity != row.capacity:
            row.capacity = body.capacity
        if body.kernel_version is not None:
            row.kernel_version = body.kernel_version
        if body.capabilities is not None and body.capabilities != row.capabilities:
            row.capabilities = body.capabilities
        if body.runtimes is not None and list(body.runtimes) != row.runtimes:
            row.runtimes = list(body.runtimes)
            changed = True  # what the scheduler may place here changed
        if body.runtime_reasons is not None and body.runtime_reasons != row.runtime_reasons:
            row.runtime_reasons = dict(body.runtime_reasons)
        if row.status == NodeStatus.DOWN:
            row.status = NodeStatus.READY
            changed = True
        s.flush()  # the node row is written, so locked, before any instance (lock order)
        reported = {o.instance_id: o for o in body.instances}
        # one query: the instances reported, and those asked to stop not yet seen gone
        unreleased = sa.and_(
            Instance.desired_state == DesiredState.STOPPED.value,  # type: ignore[arg-type]
            Instance.state.not_in(RELEASED_STATES),  # type: ignore[attr-defined]
        )
        rows = repo.find_all(
            s,
            Instance,
            sa.or_(Instance.id.in_(list(reported)), unreleased)  # type: ignore[attr-defined]
            if reported
            else unreleased,
            node_id=node.id,
        )
        for inst in rows:
            seen = reported.get(inst.id)
            if seen is None:
                # asked to stop and no longer listed: gone, its port is free again
                inst.state = "removed"
                inst.observed_at = now
                changed = True
            else:
                if seen.error_code == ArtifactMissing.slug and seen.last_error != inst.last_error:
                    _artifact_missing(ctx, s, row, inst, seen)
                changed = _noticed(inst, seen) or changed
                _observe(ctx, inst, seen, now)
                if seen.error_code == PortInUse.slug:
                    _port_taken(ctx, s, row, inst)
                    changed = True
        if changed:
            wake_after_commit(ctx, s, "rollout", "edge")
        return row


def _port_taken(ctx: Context, s: Session, node: Node, inst: Instance) -> None:
    """Another program holds the port an instance was given on its node's host: the port
    is never handed out on that node again, the instance is stopped (so its formation or
    rollout places a replacement on another port) and the app's events say so."""
    if inst.desired_state != DesiredState.RUNNING:
        return
    busy = [p for p in node.network.busy_ports if p != inst.port][-(BUSY_PORTS_KEPT - 1) :]
    node.network = node.network.model_copy(update={"busy_ports": [*busy, inst.port]})
    placement.stop(ctx, s, [inst])
    app = repo.require(s, App, "app", id=inst.app_id)
    deployments.record_event(
        ctx,
        s,
        app,
        "instance.port_conflict",
        f"{inst.process_type} instance {inst.id} could not start on node {node.hostname}: "
        f"port {inst.port} is in use there by another program; it is replaced on another port",
        {"instance_id": inst.id, "node_id": node.id, "port": inst.port},
    )
    wake_after_commit(ctx, s, "rollout")


def _artifact_missing(
    ctx: Context, s: Session, node: Node, inst: Instance, seen: ObservedInstance
) -> None:
    """The node cannot fetch the instance's slug: the app's events say so (once per
    failure), while the agent keeps retrying (a store that comes back, or a replica that
    has it, lets it start)."""
    app = repo.require(s, App, "app", id=inst.app_id)
    deployments.record_event(
        ctx,
        s,
        app,
        "instance.artifact_missing",
        f"{inst.process_type} instance {inst.id} cannot start on node {node.hostname}: "
        f"{seen.last_error or 'its slug is not in the artifact store'}",
        {"instance_id": inst.id, "node_id": node.id, "release_id": inst.release_id},
    )


def _noticed(inst: Instance, seen: ObservedInstance) -> bool:
    """Whether the rollout and the edge must look again: its health or restarts changed,
    or it let go of its port (a deleted app's row may go)."""
    return (
        inst.healthy != seen.healthy
        or inst.restarts != seen.restarts
        or inst.address != seen.address
        or (seen.state in RELEASED_STATES and inst.state not in RELEASED_STATES)
    )


def _observe(ctx: Context, inst: Instance, seen: ObservedInstance, now: datetime) -> None:
    if seen.healthy and not inst.healthy:
        inst.healthy_at = now
    inst.state = seen.state
    inst.healthy = seen.healthy
    inst.pid = seen.pid
    inst.address = seen.address
    inst.restarts = seen.restarts
    inst.exit_code = seen.exit_code
    inst.last_error = seen.last_error
    inst.observed_at = now
    if seen.cpu_millis_used is not None and seen.memory_bytes is not None:
        metrics.record_stats(ctx, inst.id, seen.cpu_millis_used, seen.memory_bytes)


def current_index(ctx: Context, node_id: str) -> int:
    with ctx.db.session() as s:
        return repo.require(s, Node, "node", id=node_id).assignment_index


def platform_env(app: App, release: Release, inst: Instance, base_domain: str) -> dict[str, str]:
    return {
        "SHELLWEGO_APP": app.name,
        "SHELLWEGO_RELEASE": f"v{release.version}",
        "SHELLWEGO_PROCESS_TYPE": inst.process_type,
        "SHELLWEGO_INSTANCE_ID": inst.id,
        "SHELLWEGO_URL": f"http://{app.name}.{base_domain}",
    }


def runtime_of(app: App) -> Runtime:
    return app.runtime if app.runtime in RUNTIMES else "process"  # type: ignore[return-value]


def artifact_of(release: Release) -> SlugArtifact | ImageArtifact | None:
    """What the release runs: its slug, else its image (pinned when the reference names
    its digest)."""
    if release.slug_digest:
        return SlugArtifact(digest=release.slug_digest)
    if release.image:
        _, _, digest = release.image.partition("@")
        pinned = digest if re.fullmatch(IMAGE_DIGEST_PATTERN, digest) else None
        return ImageArtifact(reference=release.image, digest=pinned)
    return None


def health_check_of(release: Release, process_type: str) -> HealthCheckSpec:
    """A web process is checked over HTTP (its release's path) or TCP; others by being alive."""
    timeout = release.health_check.timeout_seconds
    if process_type != "web":
        return HealthCheckSpec(type="process", timeout_seconds=timeout)
    if release.health_check.path:
        return HealthCheckSpec(
            type="http", path=release.health_check.path, timeout_seconds=timeout
        )
    return HealthCheckSpec(type="tcp", timeout_seconds=timeout)


def assignments(ctx: Context, node_id: str) -> Assignments:
    """Everything that should run on the node now, with its environment (secrets included)."""
    with ctx.db.session() as s:
        node = repo.require(s, Node, "node", id=node_id)
        rows = repo.find_all(s, Instance, node_id=node_id, desired_state=DesiredState.RUNNING.value)
        releases: dict[str, Release] = {}
        apps: dict[str, App] = {}
        envs: dict[str, dict[str, str]] = {}
        out: list[Assignment] = []
        for inst in rows:
            release = releases.get(inst.release_id) or repo.require(
                s, Release, "release", id=inst.release_id
            )
            releases[release.id] = release
            app = apps.get(inst.app_id) or repo.require(s, App, "app", id=inst.app_id)
            apps[app.id] = app
            if release.id not in envs:
                envs[release.id] = {
                    **release.slug_env,
                    **secrets.resolve_refs(ctx, s, release.config),
                }
            env = {**envs[release.id], **platform_env(app, release, inst, ctx.settings.base_domain)}
            out.append(
                Assignment(
                    instance_id=inst.id,
                    app_id=app.id,
                    app_name=app.name,
                    process_type=inst.process_type,
                    release_id=release.id,
                    release_version=release.version,
                    runtime=runtime_of(app),
                    artifact=artifact_of(release),
                    command=release.process_types.get(inst.process_type, ""),
                    env=env,
                    resources=AssignedResources(
                        memory_bytes=inst.resources.memory_bytes,
                        cpu_millis=inst.resources.cpu_millis,
                    ),
                    network=AssignedNetwork(port=inst.port),
                    health_check=health_check_of(release, inst.process_type),
                    uid=app.uid,
                    index=inst.ordinal,
                )
            )
        return Assignments(index=node.assignment_index, instances=out)


def ingest_logs(ctx: Context, node: Node, lines: Sequence[ShippedLine]) -> None:
    """Store app log lines shipped by an agent; keep at most the retention bound per app."""
    if lines:
        ctx.db.retrying(lambda: _ingest_logs(ctx, node, lines))


def _ingest_logs(ctx: Context, node: Node, lines: Sequence[ShippedLine]) -> None:
    with ctx.db.session() as s:
        ids = sorted({ln.instance_id for ln in lines if ln.instance_id})
        owners: Mapping[str, Instance] = {
            i.id: i
            for i in repo.find_all(
                s,
                Instance,
                Instance.id.in_(ids),  # type: ignore[attr-defined]
                node_id=node.id,
            )
        }
        apps = set()
        for ln in lines:
            inst = owners.get(ln.instance_id or "")
            if inst is None:
                continue
            apps.add(inst.app_id)
            s.add(
                LogLine(
                    id=new_id(),
                    app_id=inst.app_id,
                    instance_id=inst.id,
                    source=inst.process_type,
                    stream=ln.stream,
                    timestamp=ln.timestamp,
                    line=ln.line,
                )
            )
        s.flush()
        for app_id in apps:
            prune_logs(s, app_id, ctx.settings.log_retention_lines)
        topics = [f"logs:{a}" for a in apps]
        wake_after_commit(ctx, s, *topics)


def prune_logs(s: Any, app_id: str, keep: int) -> None:
    repo.keep_newest(s, LogLine, keep, app_id=app_id)
