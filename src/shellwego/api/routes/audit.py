"""The audit log (admin and above)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shellwego.api.deps import Ctx, Paging, Who
from shellwego.api.pages import PageOut, out
from shellwego.models import AuditLog
from shellwego.services import audit

router = APIRouter(tags=["audit"])


@router.get("/v1/audit", response_model=PageOut[AuditLog], name="audit.list")
def list_audit(
    who: Who,
    ctx: Ctx,
    paging: Paging,
    action: Annotated[str | None, Query(max_length=100)] = None,
    actor: Annotated[str | None, Query(max_length=26)] = None,
    target: Annotated[str | None, Query(max_length=255)] = None,
) -> PageOut[AuditLog]:
    return out(audit.list_page(ctx, who, paging.cursor, paging.limit, action, actor, target))
