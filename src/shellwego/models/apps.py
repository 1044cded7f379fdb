"""Apps, their immutable releases, deployments and running instances."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from pydantic import Field as Constraint
from sqlmodel import Field, SQLModel

from .base import Entity, Input, id_ref, partial
from .columns import CIText, EnumText, PydanticJSON, UTCDateTime
from .enums import AppStatus, DeploymentStatus, DeploymentStrategy, DesiredState
from .jsonkinds import json_kinds
from .scalars import Count, ExitCode, Port, Version
from .values import (
    MAX_SURGE,
    DeployPolicy,
    FormationSpec,
    HealthCheck,
    InstanceCount,
    PlacementPolicy,
    ProcessFormation,
    ProcessType,
    Resources,
)

APP_NAME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9-]{0,61}[a-zA-Z0-9]$"


class AppBase(SQLModel):
    name: str = Field(sa_type=CIText(), max_length=63, schema_extra={"pattern": APP_NAME_PATTERN})
    health_check: HealthCheck = Field(
        default_factory=HealthCheck, sa_type=PydanticJSON(HealthCheck)
    )
    redirect_https: bool = Field(default=False)
    runtime: str = Field(
        default="process", max_length=20, schema_extra={"pattern": r"^(process|oci|microvm)$"}
    )
    deploy: DeployPolicy = Field(default_factory=DeployPolicy, sa_type=PydanticJSON(DeployPolicy))
    placement: PlacementPolicy = Field(
        default_factory=PlacementPolicy, sa_type=PydanticJSON(PlacementPolicy)
    )


class App(AppBase, Entity, table=True):
    __tablename__ = "apps"
    # unique platform-wide: the edge serves every app at <name>.<base domain>
    __table_args__ = (sa.UniqueConstraint("name"),)
    organization_id: str = id_ref("organizations")
    status: AppStatus = Field(sa_type=EnumText(AppStatus))
    formation: dict[str, ProcessFormation] = Field(
        sa_type=PydanticJSON(dict[str, ProcessFormation])
    )
    current_release_id: str | None = Field(default=None, max_length=26)
    created_by: str | None = Field(default=None, max_length=26)
    # status: why the formation cannot be placed right now (None when it is)
    formation_error: str | None = Field(default=None, max_length=2000)
    # when the app was deleted: from then on it is invisible and its name is free; the
    # row is removed once its instances are gone (see services/apps.py ``delete``)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime, exclude=True)
    # the uid (and gid) its instances, one-off commands and builds run as: its own, from
    # the platform's range, never another app's (see ``UidLease``)
    uid: int | None = Field(default=None, unique=True, index=True)


class UidLease(Entity, table=True):
    """A uid handed to an app. Kept when the app is gone (no foreign key), so a uid is
    never given to a second app: files a deleted app left anywhere never become another
    tenant's."""

    __tablename__ = "uid_leases"
    uid: int = Field(unique=True)
    app_id: str = Field(max_length=26)


class AppCreate(AppBase, Input):
    pass


AppUpdate = partial(AppBase, "AppUpdate")


class Release(Entity, table=True):
    """Immutable: slug + process commands + config refs + health check, numbered per app."""

    __tablename__ = "releases"
    __table_args__ = (sa.UniqueConstraint("app_id", "version"),)
    app_id: str = id_ref("apps")
    organization_id: str = id_ref("organizations")
    version: Version = Field()
    slug_digest: str | None = Field(default=None, max_length=64)
    image: str | None = Field(default=None, max_length=512)
    stack: str | None = Field(default=None, max_length=20)
    process_types: dict[str, str] = Field(sa_type=PydanticJSON(dict[str, str]))
    # env the slug itself needs (PYTHONPATH…), not user data
    slug_env: dict[str, str] = Field(sa_type=PydanticJSON(dict[str, str]))
    # config var name → secret version id; values live encrypted in secret_versions
    config: dict[str, str] = Field(sa_type=PydanticJSON(dict[str, str]))
    health_check: HealthCheck = Field(sa_type=PydanticJSON(HealthCheck))
    description: str = Field(default="", max_length=200)
    created_by: str | None = Field(default=None, max_length=26)


class Deployment(Entity, table=True):
    """The rollout of a release: status, strategy, progress, error."""

    __tablename__ = "deployments"
    app_id: str = id_ref("apps")
    organization_id: str = id_ref("organizations")
    release_id: str = id_ref("releases")
    previous_release_id: str | None = Field(default=None, max_length=26)
    status: DeploymentStatus = Field(sa_type=EnumText(DeploymentStatus))
    strategy: DeploymentStrategy = Field(sa_type=EnumText(DeploymentStrategy))
    surge: int = Field(default=1, ge=1, le=MAX_SURGE)
    max_unavailable: int = Field(default=0, ge=0, le=MAX_SURGE)
    instances_total: Count = Field(default=0)
    instances_ready: Count = Field(default=0)
    error: str | None = Field(default=None, max_length=2000)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: str | None = Field(default=None, max_length=26)


class Instance(Entity, table=True):
    """One copy of a process type of a release on a node: desired and observed state."""

    __tablename__ = "instances"
    app_id: str = id_ref("apps")
    organization_id: str = id_ref("organizations")
    release_id: str = id_ref("releases")
    node_id: str = id_ref("nodes")
    process_type: str = Field(max_length=30)
    resources: Resources = Field(sa_type=PydanticJSON(Resources))
    port: Port = Field(default=0)
    # where the edge reaches it (observed): its own network's address, or None when it
    # listens on its node's address (``Node.address``:``port``)
    address: str | None = Field(default=None, max_length=64)
    desired_state: DesiredState = Field(sa_type=EnumText(DesiredState))
    state: str = Field(default="pending", max_length=20)
    healthy: bool = Field(default=False)
    restarts: Count = Field(default=0)
    exit_code: ExitCode | None = Field(default=None)
    pid: Count | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=2000)
    observed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    healthy_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # set when the instance leaves the load balancer; it is stopped after the drain period
    drain_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deployment_id: str | None = Field(default=None, max_length=26)
    # its number within its process type (``DYNO=web.1``), given when it is placed: the
    # lowest its peers (its deployment's instances, else its process type's serving ones)
    # leave free
    ordinal: Count | None = Field(default=None)


FormationPatch = partial(FormationSpec, "FormationPatch")

# ``{"web": {"count": 3, "size": "medium"}}`` or the shorthand ``{"web": 3}``; a process
# type left out keeps its formation, a field left out keeps its value
_Formation = dict[ProcessType, InstanceCount | FormationPatch]  # type: ignore[valid-type]
FormationUpdate = Annotated[_Formation, json_kinds(_Formation), Constraint(min_length=1)]
