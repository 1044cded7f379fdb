"""The agent protocol (docs/agent-protocol.md): register, heartbeat, assignments, logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from shellwego.api.deps import Bearer, Ctx, token_of, token_scheme
from shellwego.bus import wait_until
from shellwego.errors import ArtifactMissing
from shellwego.models import Input, Node
from shellwego.models.agentprotocol import (
    Assignments,
    Heartbeat,
    HeartbeatAnswer,
    Registered,
    ShippedLogs,
)
from shellwego.models.nodes import NodeBase
from shellwego.services import agents, nodes
from shellwego.services.context import Context

router = APIRouter(tags=["agent"])


node_token = token_scheme("nodeToken", "a node's token, from POST /v1/agent/register")
join_token_scheme = token_scheme("joinToken", "a join token, printed by `shellwego server`")


async def node_of(ctx: Ctx, credentials: Annotated[Bearer, Depends(node_token)]) -> Node:
    return await run_in_threadpool(nodes.authenticate_node, ctx, token_of(credentials))


ThisNode = Annotated[Node, Depends(node_of)]


async def join_token(
    ctx: Ctx, credentials: Annotated[Bearer, Depends(join_token_scheme)]
) -> str | None:
    token = token_of(credentials)
    await run_in_threadpool(nodes.check_join_token, ctx, token)
    return token


class RegisterIn(NodeBase, Input):
    pass


@router.post(
    "/v1/agent/register",
    status_code=status.HTTP_201_CREATED,
    response_model=Registered,
    name="agent.register",
)
def register(
    token: Annotated[str | None, Depends(join_token)], body: RegisterIn, ctx: Ctx
) -> Registered:
    reg = nodes.register(
        ctx,
        token,
        body.hostname,
        body.capacity,
        body.runtimes,
        body.labels,
        body.agent_version,
        body.address,
        kernel_version=body.kernel_version,
        capabilities=body.capabilities,
        runtime_reasons=body.runtime_reasons,
    )
    return Registered(node_id=reg.node.id, node_token=reg.node_token)


@router.post("/v1/agent/heartbeat", response_model=HeartbeatAnswer, name="agent.heartbeat")
def heartbeat(body: Heartbeat, node: ThisNode, ctx: Ctx) -> HeartbeatAnswer:
    row = agents.heartbeat(ctx, node, body)
    return HeartbeatAnswer(
        node_status=str(row.status), heartbeat_interval=ctx.settings.heartbeat_interval
    )


async def wait_for_index(ctx: Context, node_id: str, index: int, wait: float) -> None:
    """Until the node's assignment index exceeds ``index`` or ``wait`` seconds pass."""

    async def changed() -> bool:
        return await run_in_threadpool(agents.current_index, ctx, node_id) > index

    await wait_until(
        ctx.bus, f"node:{node_id}", changed, wait, recheck=ctx.settings.blocking_recheck
    )


@router.get("/v1/agent/assignments", response_model=Assignments, name="agent.assignments")
async def assignments(
    node: ThisNode,
    ctx: Ctx,
    index: Annotated[int, Query(ge=0)] = 0,
    wait: Annotated[float, Query(ge=0, le=300)] = 0,
) -> Assignments:
    """Blocking query: returns once the node's assignment index exceeds ``index``."""
    await wait_for_index(ctx, node.id, index, wait)
    return await run_in_threadpool(agents.assignments, ctx, node.id)


@router.get("/v1/agent/artifacts/{digest}", name="agent.artifact")
def artifact(digest: str, node: ThisNode, ctx: Ctx) -> FileResponse:
    """The slug ``digest``, from this replica's artifact store (a shared one is fetched
    into its local cache, verified, first)."""
    store = ctx.artifacts
    if store is None or len(digest) != 64 or not store.exists(digest):
        raise ArtifactMissing(f"artifact {digest[:12]} not found")
    path: Path = store.path(digest)
    return FileResponse(path, media_type="application/gzip")


@router.post("/v1/agent/logs", status_code=status.HTTP_204_NO_CONTENT, name="agent.logs")
def logs(body: ShippedLogs, node: ThisNode, ctx: Ctx) -> None:
    agents.ingest_logs(ctx, node, body.lines)
