"""Volumes, their snapshots, and managed databases."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field

from .base import Entity, id_ref
from .columns import CIText, EnumText, PydanticJSON
from .enums import DatabaseEngine, DatabaseStatus, VolumeStatus
from .values import Resources


class Volume(Entity, table=True):
    __tablename__ = "volumes"
    __table_args__ = (sa.UniqueConstraint("organization_id", "name"),)
    organization_id: str = id_ref("organizations")
    name: str = Field(sa_type=CIText(), max_length=63)
    status: VolumeStatus = Field(sa_type=EnumText(VolumeStatus))
    size_bytes: int = Field(gt=0)
    used_bytes: int = Field(default=0)
    filesystem: str = Field(default="ext4", max_length=20)
    app_id: str | None = id_ref("apps", nullable=True, ondelete="SET NULL")
    node_id: str | None = id_ref("nodes", nullable=True, ondelete="SET NULL")
    mount_path: str | None = Field(default=None, max_length=255)


class Snapshot(Entity, table=True):
    __tablename__ = "snapshots"
    __table_args__ = (sa.UniqueConstraint("volume_id", "name"),)
    volume_id: str = id_ref("volumes")
    organization_id: str = id_ref("organizations")
    name: str = Field(max_length=100)
    size_bytes: int = Field(default=0)


class Database(Entity, table=True):
    """A managed database; its credentials are a secret, referenced by id."""

    __tablename__ = "databases"
    __table_args__ = (sa.UniqueConstraint("organization_id", "name"),)
    organization_id: str = id_ref("organizations")
    name: str = Field(sa_type=CIText(), max_length=63)
    engine: DatabaseEngine = Field(sa_type=EnumText(DatabaseEngine))
    version: str = Field(max_length=20)
    status: DatabaseStatus = Field(sa_type=EnumText(DatabaseStatus))
    resources: Resources = Field(sa_type=PydanticJSON(Resources))
    storage_bytes: int = Field(gt=0)
    credentials_secret_id: str | None = id_ref("secrets", nullable=True, ondelete="SET NULL")
