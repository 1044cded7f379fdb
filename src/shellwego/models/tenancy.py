"""Organizations, users, memberships and API tokens."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from .base import Entity, Input, id_ref, partial
from .columns import CIText, EnumText, PydanticJSON, UTCDateTime
from .enums import Role
from .scalars import Email, Timestamp
from .values import OrgSettings

SLUG_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,38}[a-zA-Z0-9]$|^[a-zA-Z0-9]$"


class OrganizationBase(SQLModel):
    name: str = Field(min_length=1, max_length=100)
    slug: str = Field(
        sa_type=CIText(), max_length=40, unique=True, schema_extra={"pattern": SLUG_PATTERN}
    )


class Organization(OrganizationBase, Entity, table=True):
    __tablename__ = "organizations"
    plan: str = Field(default="free", max_length=20)
    settings: OrgSettings = Field(default_factory=OrgSettings, sa_type=PydanticJSON(OrgSettings))


class OrganizationCreate(OrganizationBase, Input):
    pass


class UserBase(SQLModel):
    email: Email = Field(sa_type=CIText(), max_length=254, unique=True)
    name: str = Field(default="", max_length=100)


class Password(SQLModel):
    """A password as a user gives it; stored only as an argon2 hash."""

    password: str = Field(min_length=10, max_length=256, repr=False)


class User(UserBase, Entity, table=True):
    __tablename__ = "users"
    password_hash: str = Field(max_length=255, exclude=True)
    is_operator: bool = Field(default=False)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class UserCreate(UserBase, Password, Input):
    pass


class MembershipBase(SQLModel):
    role: Role = Field(default=Role.MEMBER, sa_type=EnumText(Role))


class MembershipFields(MembershipBase, Entity):
    organization_id: str = id_ref("organizations")
    user_id: str = id_ref("users")


class Membership(MembershipFields, table=True):
    __tablename__ = "memberships"
    __table_args__ = (sa.UniqueConstraint("organization_id", "user_id"),)


class Member(UserBase, MembershipFields):
    """A member as the API shows them: the membership, with the user's email and name."""

    @classmethod
    def of(cls, membership: Membership, user: User) -> Member:
        return cls.model_validate(
            {**membership.model_dump(), **user.model_dump(include=set(UserBase.model_fields))}
        )


class MemberAdd(UserBase, MembershipBase, partial(Password, "OptionalPassword")):  # type: ignore[misc]
    """Add a user by email; the password is needed only when the email has no account."""


MemberUpdate = partial(MembershipBase, "MemberUpdate")


class ApiTokenBase(SQLModel):
    name: str = Field(min_length=1, max_length=100)
    expires_at: Timestamp | None = Field(default=None, sa_type=UTCDateTime)


class ApiTokenFields(ApiTokenBase, Entity):
    """What may be shown of a token: everything but its hash."""

    user_id: str = id_ref("users")
    organization_id: str = id_ref("organizations")
    prefix: str = Field(max_length=16)
    # what the token may do: "*" is everything its user's role allows (the only scope yet)
    scopes: list[str] = Field(default_factory=lambda: ["*"], sa_type=PydanticJSON(list[str]))
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ApiToken(ApiTokenFields, table=True):
    """A bearer token: random, shown once, stored only as a SHA-256 hash."""

    __tablename__ = "api_tokens"
    token_hash: str = Field(max_length=64, unique=True, exclude=True)


class IssuedApiToken(ApiTokenFields):
    """A token just made: the one time its secret is shown."""

    token: str = Field(description="the secret token; shown only once")


class ApiTokenCreate(ApiTokenBase, Input):
    pass
