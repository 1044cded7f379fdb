"""Nodes: list, inspect, drain, uncordon (platform operators only; others get 403)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shellwego.api.deps import Ctx, Paging, Who
from shellwego.api.pages import PageOut, out
from shellwego.models import NodeStatus, NodeView
from shellwego.services import nodes

router = APIRouter(tags=["nodes"])


@router.get("/v1/nodes", response_model=PageOut[NodeView], name="nodes.list")
def list_nodes(
    who: Who, ctx: Ctx, paging: Paging, status: Annotated[NodeStatus | None, Query()] = None
) -> PageOut[NodeView]:
    return out(
        nodes.list_page(ctx, who, paging.cursor, paging.limit, status.value if status else None)
    )


@router.get("/v1/nodes/{node}", response_model=NodeView, name="nodes.get")
def get_node(node: str, who: Who, ctx: Ctx) -> NodeView:
    return nodes.get(ctx, who, node)


@router.post("/v1/nodes/{node}/actions/drain", response_model=NodeView, name="nodes.drain")
def drain_node(node: str, who: Who, ctx: Ctx) -> NodeView:
    """Stop placing instances on the node and move its instances elsewhere."""
    return nodes.drain(ctx, who, node)


@router.post("/v1/nodes/{node}/actions/uncordon", response_model=NodeView, name="nodes.uncordon")
def uncordon_node(node: str, who: Who, ctx: Ctx) -> NodeView:
    """Return a drained node to service."""
    return nodes.uncordon(ctx, who, node)
