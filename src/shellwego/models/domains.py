"""Custom domains with DNS verification and certificate state."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from .base import Entity, Input, id_ref
from .columns import CIText, EnumText, PydanticJSON, UTCDateTime
from .enums import DomainStatus, TlsStatus
from .values import Certificate, DnsInstructions, EdgeFeatures, RoutingConfig

HOSTNAME_PATTERN = (
    r"^([a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+"
    r"[a-zA-Z][a-zA-Z0-9-]{0,61}[a-zA-Z0-9]$"
)


class DomainBase(SQLModel):
    hostname: str = Field(
        sa_type=CIText(), max_length=253, unique=True, schema_extra={"pattern": HOSTNAME_PATTERN}
    )


class DomainFields(DomainBase, Entity):
    organization_id: str = id_ref("organizations")
    app_id: str = id_ref("apps")
    status: DomainStatus = Field(sa_type=EnumText(DomainStatus))
    tls_status: TlsStatus = Field(sa_type=EnumText(TlsStatus))
    verification_token: str = Field(max_length=64)
    certificate: Certificate | None = Field(default=None, sa_type=PydanticJSON(Certificate))
    last_error: str | None = Field(default=None, max_length=500)
    verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig, sa_type=PydanticJSON(RoutingConfig)
    )
    features: EdgeFeatures = Field(
        default_factory=EdgeFeatures, sa_type=PydanticJSON(EdgeFeatures)
    )


class Domain(DomainFields, table=True):
    __tablename__ = "domains"


class DomainView(DomainFields):
    """A domain as the API shows it, with the DNS records that verify it."""

    dns: list[DnsInstructions] = Field(default_factory=list)


class DomainCreate(DomainBase, Input):
    app: str = Field(min_length=1, max_length=63)
