"""Leases: which control-plane replica runs a cluster-wide singleton, and its fencing token."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from .base import Entity
from .columns import UTCDateTime


class Lease(Entity, table=True):
    """The holder of one named singleton (``controllers``) until ``expires_at``.

    ``token`` grows by one at every takeover (never at a renewal): a write made under an
    older token comes from a deposed holder and is refused (see ``services/leases.py``).
    """

    __tablename__ = "leases"
    __table_args__ = (sa.UniqueConstraint("name"),)
    name: str = Field(max_length=100)
    holder: str = Field(max_length=200)
    token: int = Field(sa_type=sa.BigInteger, ge=1)
    acquired_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
