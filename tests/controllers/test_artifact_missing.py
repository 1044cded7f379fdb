"""An agent that cannot fetch an instance's slug says so, and the app's events show it."""

from __future__ import annotations

from shellwego.errors import ArtifactMissing
from shellwego.models import Node
from shellwego.services import agents
from shellwego.store import repository as repo

from .world import World


def _report_missing(world: World, error: str) -> None:
    with world.ctx.db.session() as s:
        by_node = {n.id: n for n in repo.find_all(s, Node)}
    mine: dict[str, list[agents.ObservedInstance]] = {}
    for inst in world.instances():
        mine.setdefault(inst.node_id, []).append(
            agents.ObservedInstance(
                instance_id=inst.id,
                state="backoff",
                restarts=1,
                last_error=error,
                error_code=ArtifactMissing.slug,
            )
        )
    for node_id, seen in mine.items():
        agents.heartbeat(world.ctx, by_node[node_id], agents.Heartbeat(instances=seen))


def test_a_slug_no_replica_has_is_an_event_once_per_failure(world: World) -> None:
    world.release()
    world.step()
    [inst] = world.instances()
    error = f"slug {'ab' * 6} is not in the control plane's artifact store"
    _report_missing(world, error)
    _report_missing(world, error)  # the agent retrying: the same failure, no new event
    [event] = world.events("instance.artifact_missing")
    assert inst.id in event
    assert error in event
    with world.ctx.db.session() as s:
        row = repo.require(s, type(inst), "instance", id=inst.id)
        assert row.state == "backoff"
        assert row.last_error == error
