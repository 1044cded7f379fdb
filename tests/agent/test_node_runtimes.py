"""A node's runtimes and the reasons it lacks the others: given at registration, updated
by the first heartbeat after an agent starts, kept by the others."""

from __future__ import annotations

from shellwego.models import Node, NodeCapacity
from shellwego.models.agentprotocol import Heartbeat
from shellwego.services import agents, nodes
from shellwego.services.context import Context
from shellwego.store import repository as repo

GIB = 1024**3


def test_heartbeat_updates_the_runtimes_and_their_reasons(ctx: Context) -> None:
    node = nodes.register(
        ctx,
        nodes.create_join_token(ctx, "join"),
        "node-1",
        NodeCapacity(cpu_millis=2000, memory_bytes=2 * GIB),
        ["process"],
        {},
        "test",
        "10.0.0.2",
        runtime_reasons={"oci": "no crun or runc found on PATH"},
    ).node
    assert node.runtime_reasons == {"oci": "no crun or runc found on PATH"}

    agents.heartbeat(
        ctx,
        node,
        Heartbeat(runtimes=["process", "oci"], runtime_reasons={"microvm": "no /dev/kvm"}),
    )
    agents.heartbeat(ctx, node, Heartbeat())  # leaves them out: kept
    with ctx.db.session() as s:
        row = repo.require(s, Node, "node", id=node.id)
        assert row.runtimes == ["process", "oci"]
        assert row.runtime_reasons == {"microvm": "no /dev/kvm"}
