"""Facts about the platform as a whole, one row each (made once, shared by every replica)."""

from __future__ import annotations

from sqlmodel import Field

from .base import Entity

# the first owner exists (value: their user id); its unique name makes bootstrap happen once
BOOTSTRAPPED = "bootstrapped"
# the fingerprint (key id) of the master key every replica must wrap data keys with
MASTER_KEY = "master-key"


class PlatformFact(Entity, table=True):
    """One named fact; ``name`` is unique, so the first writer of a fact wins."""

    __tablename__ = "platform_facts"
    name: str = Field(max_length=40, unique=True)
    value: str = Field(max_length=200)
