"""Webhooks and their deliveries, the audit log, platform events and app log lines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from .base import Entity, id_ref
from .columns import EnumText, PydanticJSON, UTCDateTime
from .enums import ActorType
from .scalars import Count, HttpStatus


class Webhook(Entity, table=True):
    __tablename__ = "webhooks"
    __table_args__ = (sa.UniqueConstraint("organization_id", "name"),)
    organization_id: str = id_ref("organizations")
    name: str = Field(max_length=100)
    url: str = Field(max_length=2048)
    events: list[str] = Field(sa_type=PydanticJSON(list[str]))
    active: bool = Field(default=True)
    # the HMAC signing key is a secret, referenced by id
    signing_secret_id: str | None = id_ref("secrets", nullable=True, ondelete="SET NULL")
    failure_count: Count = Field(default=0)
    last_delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookDelivery(Entity, table=True):
    __tablename__ = "webhook_deliveries"
    webhook_id: str = id_ref("webhooks")
    event_type: str = Field(max_length=50)
    payload: dict[str, Any] = Field(sa_type=PydanticJSON(dict[str, Any]))
    status_code: HttpStatus | None = Field(default=None)
    response_body: str | None = Field(default=None, max_length=2000)  # the start of it
    duration_ms: Count = Field(default=0)
    attempts: Count = Field(default=0)
    success: bool = Field(default=False)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuditLog(Entity, table=True):
    """One entry per mutating request. Never holds a secret value."""

    __tablename__ = "audit_logs"
    organization_id: str | None = id_ref("organizations", nullable=True)
    actor_id: str | None = Field(default=None, max_length=26, index=True)
    actor_type: ActorType = Field(sa_type=EnumText(ActorType))
    action: str = Field(max_length=100)
    target_type: str = Field(max_length=50)
    target_id: str | None = Field(default=None, max_length=255)
    result: str = Field(max_length=20)
    status_code: HttpStatus = Field()
    source_ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=255)
    request_id: str | None = Field(default=None, max_length=64)
    # before/after of what changed, where the action records it (never a secret value)
    changes: dict[str, Any] | None = Field(default=None, sa_type=PydanticJSON(dict[str, Any]))


class Event(Entity, table=True):
    """Something that happened to an app: deploys, crashes, scaling."""

    __tablename__ = "events"
    __table_args__ = (sa.UniqueConstraint("key"),)
    organization_id: str = id_ref("organizations")
    app_id: str | None = id_ref("apps", nullable=True)
    type: str = Field(max_length=50)
    message: str = Field(max_length=2000)
    data: dict[str, Any] = Field(sa_type=PydanticJSON(dict[str, Any]))
    # what makes a step's event happen once (``deploy.succeeded:<deployment id>``): a step
    # retried or run twice records it once; events without one may repeat
    key: str | None = Field(default=None, max_length=120, exclude=True)


class LogLine(SQLModel, table=True):
    """One line an app (or a build) wrote; retained per app up to a bound."""

    __tablename__ = "log_lines"
    __table_args__ = (sa.Index("ix_log_lines_app_id_id", "app_id", "id"),)
    id: str = Field(primary_key=True, max_length=26)
    app_id: str = Field(foreign_key="apps.id", max_length=26, ondelete="CASCADE")
    instance_id: str | None = Field(default=None, max_length=26)
    source: str = Field(max_length=30)  # process type, "build" or "platform"
    stream: str = Field(max_length=10)
    timestamp: datetime = Field(sa_type=UTCDateTime, nullable=False)
    line: str = Field(sa_type=sa.Text)
