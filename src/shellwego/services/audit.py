"""The audit log: one entry per mutating request, never with a secret value."""

from __future__ import annotations

from typing import Any

from shellwego.models import ActorType, AuditLog, Role, new_id
from shellwego.store import repository as repo

from .context import Context, Principal
from .organizations import require_role


def record(
    ctx: Context,
    *,
    who: Principal | None,
    action: str,
    target_type: str,
    target_id: str | None,
    status_code: int,
    source_ip: str | None,
    request_id: str | None,
    user_agent: str | None = None,
) -> None:
    now = ctx.clock.now()
    actor = ActorType.SYSTEM if who is None else ActorType.TOKEN if who.token_id else ActorType.USER
    fields: dict[str, Any] = {
        "organization_id": who.organization_id if who else None,
        "actor_id": who.user_id if who else None,
        "actor_type": actor,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "result": "success" if status_code < 400 else "failure",
        "status_code": status_code,
        "source_ip": source_ip,
        "user_agent": (user_agent or "")[:255] or None,
        "request_id": request_id,
        "changes": None,
        "created_at": now,
        "updated_at": now,
    }

    def write() -> None:
        with ctx.db.session() as s:
            repo.add(s, AuditLog(id=new_id(), **fields), conflict="audit entry exists")

    ctx.db.retrying(write)


def list_page(
    ctx: Context,
    who: Principal,
    cursor: str | None,
    limit: int,
    action: str | None,
    actor: str | None,
    target: str | None,
) -> repo.Page[AuditLog]:
    require_role(who, Role.ADMIN)
    filters = {
        k: v for k, v in {"action": action, "actor_id": actor, "target_id": target}.items() if v
    }
    with ctx.db.session(write=False) as s:
        return repo.page(
            s, AuditLog, cursor=cursor, limit=limit, organization_id=who.organization_id, **filters
        )
