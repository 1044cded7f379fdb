"""Volumes, their snapshots, and managed databases."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field

from .base import Entity, id_ref
from .columns import CIText, EnumText, PydanticJSON
from .enums import DatabaseEngine, DatabaseStatus, VolumeStatus, VolumeType
from .scalars import Quantity
from .values import (
    BackupPolicy,
    DatabaseBackupConfig,
    DatabaseEndpoint,
    DatabaseUsage,
    HighAvailability,
    Resources,
)


class Volume(Entity, table=True):
    __tablename__ = "volumes"
    __table_args__ = (sa.UniqueConstraint("organization_id", "name"),)
    organization_id: str = id_ref("organizations")
    name: str = Field(sa_type=CIText(), max_length=63)
    status: VolumeStatus = Field(sa_type=EnumText(VolumeStatus))
    size_bytes: Quantity = Field(gt=0, sa_type=sa.BigInteger)
    used_bytes: Quantity = Field(default=0, sa_type=sa.BigInteger)
    volume_type: VolumeType = Field(default=VolumeType.PERSISTENT, sa_type=EnumText(VolumeType))
    filesystem: str = Field(default="ext4", max_length=20)
    encrypted: bool = Field(default=False)
    backup_policy: BackupPolicy | None = Field(default=None, sa_type=PydanticJSON(BackupPolicy))
    app_id: str | None = id_ref("apps", nullable=True, ondelete="SET NULL")
    node_id: str | None = id_ref("nodes", nullable=True, ondelete="SET NULL")
    mount_path: str | None = Field(default=None, max_length=255)


class Snapshot(Entity, table=True):
    __tablename__ = "snapshots"
    __table_args__ = (sa.UniqueConstraint("volume_id", "name"),)
    volume_id: str = id_ref("volumes")
    organization_id: str = id_ref("organizations")
    name: str = Field(max_length=100)
    size_bytes: Quantity = Field(default=0, sa_type=sa.BigInteger)


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
    storage_bytes: Quantity = Field(gt=0, sa_type=sa.BigInteger)
    credentials_secret_id: str | None = id_ref("secrets", nullable=True, ondelete="SET NULL")
    # None until provisioned
    endpoint: DatabaseEndpoint | None = Field(
        default=None, sa_type=PydanticJSON(DatabaseEndpoint)
    )
    ha: HighAvailability = Field(
        default_factory=HighAvailability, sa_type=PydanticJSON(HighAvailability)
    )
    backup_config: DatabaseBackupConfig = Field(
        default_factory=DatabaseBackupConfig, sa_type=PydanticJSON(DatabaseBackupConfig)
    )
    usage: DatabaseUsage = Field(default_factory=DatabaseUsage, sa_type=PydanticJSON(DatabaseUsage))
