"""Failed password checks, counted per source address and per account (login limits)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from .base import Entity
from .columns import EnumText, UTCDateTime
from .enums import ThrottleScope


class LoginThrottle(Entity, table=True):
    """The recent failures of one address or one account, and until when it must wait.

    Kept in the database so that every control-plane replica sees the same counts.
    """

    __tablename__ = "login_throttles"
    __table_args__ = (sa.UniqueConstraint("scope", "subject"),)
    scope: ThrottleScope = Field(sa_type=EnumText(ThrottleScope))
    # a lower-cased email, an IP address, or an IPv6 /64 network
    subject: str = Field(max_length=254)
    failures: int = Field(ge=0)
    last_failure_at: datetime = Field(sa_type=UTCDateTime, index=True)
    blocked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
