"""Secrets and config vars. Values exist only as ciphertext in :class:`SecretVersion`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from pydantic import Field as Constraint
from sqlmodel import Field, SQLModel

from .base import Entity, Input, id_ref
from .columns import CIText, EnumText, UTCDateTime
from .enums import SecretKind, SecretScope
from .scalars import Timestamp, Version

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
VALUE_MAX_LENGTH = 65536

EnvName = Annotated[str, Constraint(pattern=ENV_NAME_PATTERN)]
# ``{"KEY": "value"}`` sets a config var, ``{"KEY": null}`` unsets it
ConfigChanges = Annotated[
    dict[EnvName, Annotated[str, Constraint(max_length=VALUE_MAX_LENGTH)] | None],
    Constraint(min_length=1),
]


class SecretBase(SQLModel):
    # unique per scope case-insensitively: FOO and foo would be confusable twins
    name: str = Field(sa_type=CIText(), max_length=255, schema_extra={"pattern": ENV_NAME_PATTERN})
    expires_at: Timestamp | None = Field(default=None, sa_type=UTCDateTime)


class Secret(SecretBase, Entity, table=True):
    """Metadata of a secret or config var; never its value."""

    __tablename__ = "secrets"
    __table_args__ = (sa.UniqueConstraint("organization_id", "scope_key", "name"),)
    organization_id: str = id_ref("organizations")
    app_id: str | None = id_ref("apps", nullable=True)
    # the app id, or "" for organization-wide secrets: makes the unique key total
    scope_key: str = Field(max_length=26, exclude=True)
    kind: SecretKind = Field(sa_type=EnumText(SecretKind))
    scope: SecretScope = Field(sa_type=EnumText(SecretScope))
    current_version: Version = Field(default=1)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime, exclude=True)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: str | None = Field(default=None, max_length=26)


class SecretCreate(SecretBase, Input):
    value: str = Field(max_length=VALUE_MAX_LENGTH, repr=False)
    app: str | None = Field(default=None, max_length=63)


class SecretRotate(Input):
    value: str = Field(max_length=VALUE_MAX_LENGTH, repr=False)


class SecretVersionInfo(SQLModel):
    """What the API says about a version: never the value."""

    id: str = Field(primary_key=True, max_length=26)
    version: Version = Field()
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    created_by: str | None = Field(default=None, max_length=26)


class SecretVersion(SecretVersionInfo, table=True):
    """One immutable value of a secret: AES-256-GCM ciphertext with its wrapped data key."""

    __tablename__ = "secret_versions"
    __table_args__ = (sa.UniqueConstraint("secret_id", "version"),)
    secret_id: str = id_ref("secrets")
    ciphertext: bytes = Field(sa_type=sa.LargeBinary)
    nonce: bytes = Field(sa_type=sa.LargeBinary)
    wrapped_key: bytes = Field(sa_type=sa.LargeBinary)
    key_id: str = Field(max_length=64)
