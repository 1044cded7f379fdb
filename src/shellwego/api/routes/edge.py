"""The edge's endpoints: the on-demand TLS "ask" of the local edge, and the route table and
ask for edge nodes (``shellwego edge``), which authenticate with a join or node token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from shellwego.api.contract import raises
from shellwego.api.deps import Bearer, Ctx, token_of
from shellwego.errors import Forbidden, NotFound
from shellwego.services import domains, edges

from .agent import join_token_scheme, node_token

router = APIRouter(tags=["edge"])

LOOPBACK = {"127.0.0.1", "::1", "localhost"}

Domain = Annotated[str, Query(min_length=1, max_length=253)]


async def edge_node(
    ctx: Ctx,
    # either token: two schemes, so the OpenAPI document offers them as alternatives
    joining: Annotated[Bearer, Depends(join_token_scheme)],
    node: Annotated[Bearer, Depends(node_token)],
) -> None:
    await run_in_threadpool(edges.authenticate, ctx, token_of(joining or node))


EdgeNode = Depends(edge_node)


class RoutesOut(BaseModel):
    version: str
    table: dict[str, Any]


def _answer(ctx: Ctx, domain: str) -> PlainTextResponse:
    if not domains.allowed_for_tls(ctx, domain):
        raise NotFound(f"{domain} is not served here")
    return PlainTextResponse("ok")


@router.get("/v1/edge/ask", name="edge.ask", response_class=PlainTextResponse)
@raises(403, 404)
def ask(request: Request, ctx: Ctx, domain: Domain) -> PlainTextResponse:
    """200 when the platform serves ``domain`` (an active custom domain or an app host)."""
    client = request.client.host if request.client else ""
    if client not in LOOPBACK and not client.startswith("127."):
        raise Forbidden("the ask endpoint answers the local edge only")
    return _answer(ctx, domain)


@router.get(
    "/v1/agent/edge/ask",
    name="agent.edge_ask",
    response_class=PlainTextResponse,
    dependencies=[EdgeNode],
)
@raises(404)
def edge_node_ask(ctx: Ctx, domain: Domain) -> PlainTextResponse:
    """The same answer for an edge node's Caddy, asked through its ``shellwego edge``."""
    return _answer(ctx, domain)


@router.get(
    "/v1/agent/edge/routes",
    response_model=RoutesOut,
    name="agent.edge_routes",
    dependencies=[EdgeNode],
)
async def edge_routes(
    ctx: Ctx,
    version: Annotated[str, Query(max_length=64)] = "",
    wait: Annotated[float, Query(ge=0, le=300)] = 0,
) -> RoutesOut:
    """Blocking query: the route table once its version differs from ``version``, or the
    current table after ``wait`` seconds."""
    current = await edges.table_after(ctx, version, wait, recheck=ctx.settings.blocking_recheck)
    return RoutesOut(version=current.version, table=current.payload)
