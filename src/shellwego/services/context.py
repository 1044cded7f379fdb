"""What every use case needs, built once at the entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from shellwego.bus import Bus
from shellwego.clock import Clock
from shellwego.crypto import Envelope
from shellwego.models import Role
from shellwego.settings import Settings
from shellwego.store import Database, after_commit


@dataclass
class Context:
    settings: Settings
    db: Database
    envelope: Envelope
    clock: Clock
    bus: Bus
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user acting in one organization with one role, through a token."""

    user_id: str
    organization_id: str
    role: Role
    token_id: str | None
    is_operator: bool = False

    def at_least(self, role: Role) -> bool:
        return self.role.rank >= role.rank


def wake_after_commit(ctx: Context, session: Session, *topics: str) -> None:
    """Notify ``topics`` on the bus once ``session`` has committed (never before)."""

    def notify() -> None:
        for topic in topics:
            ctx.bus.notify(topic)

    after_commit(session, notify)
