"""Value objects stored as JSON columns, in canonical units."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .jsonkinds import check_json_kinds
from .scalars import JSON_INT_MAX, Count, Quantity
from .units import parse_cpu, parse_memory

MemoryBytes = Annotated[int, BeforeValidator(parse_memory), Field(gt=0, le=JSON_INT_MAX)]
CpuMillis = Annotated[int, BeforeValidator(parse_cpu), Field(gt=0, le=JSON_INT_MAX)]

PROCESS_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,29}$")
# the Procfile entry run once per release before its rollout (Heroku's release phase)
RELEASE_PROCESS = "release"


class Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    json_types = field_validator("*", mode="before")(check_json_kinds)


class Resources(Value):
    """What one instance reserves: CPU in milli-cores, memory in bytes."""

    cpu_millis: CpuMillis = 250
    memory_bytes: MemoryBytes = 256 * 1024 * 1024


SizeName = Literal["nano", "small", "medium", "large", "xlarge"]
SIZES: dict[SizeName, Resources] = {
    "nano": Resources(cpu_millis=125, memory_bytes=128 * 1024**2),
    "small": Resources(cpu_millis=250, memory_bytes=256 * 1024**2),
    "medium": Resources(cpu_millis=500, memory_bytes=512 * 1024**2),
    "large": Resources(cpu_millis=1000, memory_bytes=1024**3),
    "xlarge": Resources(cpu_millis=2000, memory_bytes=2 * 1024**3),
}


MAX_INSTANCES = 100  # of one process type of an app
InstanceCount = Annotated[int, Field(ge=0, le=MAX_INSTANCES)]
ProcessType = Annotated[str, Field(pattern=PROCESS_TYPE.pattern)]


class FormationSpec(Value):
    """What users choose for a process type: how many instances, and how big each is."""

    count: InstanceCount = 1
    size: SizeName = "small"


class ProcessFormation(FormationSpec):
    """A process type's formation, with what each instance of its size reserves."""

    resources: Resources = Field(default_factory=lambda: SIZES["small"])


MAX_SURGE = 100
LABEL_KEY = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$"
LabelKey = Annotated[str, Field(pattern=LABEL_KEY)]
LabelValue = Annotated[str, Field(min_length=1, max_length=63)]


class DeployPolicy(Value):
    """How a rolling deploy replaces instances, per process type.

    ``surge``: new instances started beyond the formation while old ones still serve
    (``--max-surge``). ``max_unavailable``: how far below the formation the serving
    instances may drop while old ones are drained ahead of new ones.
    """

    surge: int = Field(default=1, ge=1, le=MAX_SURGE)
    max_unavailable: int = Field(default=0, ge=0, le=MAX_SURGE)


class PlacementPolicy(Value):
    """Where the scheduler may put an app's instances and how it picks among nodes.

    ``strategy``: ``binpack`` fills the fullest node that fits, ``spread`` the emptiest.
    ``constraints``: node labels that must match exactly, e.g. ``{"region": "eu"}``.
    """

    strategy: Literal["binpack", "spread"] = "binpack"
    constraints: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=16)


class HealthCheck(Value):
    """HTTP GET ``path`` answering < 500, or a TCP accept on ``PORT`` when path is None."""

    path: str | None = Field(default=None, max_length=512, pattern=r"^/")
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    interval_seconds: float = Field(default=5.0, gt=0, le=3600)


class NodeCapacity(Value):
    cpu_millis: Quantity
    memory_bytes: Quantity


class Certificate(Value):
    issuer: str | None = None
    not_after: str | None = None
    managed_by: Literal["internal", "acme", "on_demand"] = "internal"


class DnsInstructions(Value):
    record_type: Literal["TXT", "CNAME"]
    name: str
    value: str


# ---- nodes --------------------------------------------------------------------------


class NodeCapabilities(Value):
    """What the machine offers beyond CPU and memory, as its agent found it."""

    kvm: bool = False  # /dev/kvm answers the KVM API
    nested_virtualization: bool = False  # the kvm module allows nested guests
    cpu_features: list[str] = Field(default_factory=list, max_length=512)
    gpu: bool = False


class NodeNetwork(Value):
    """How the node is reached besides ``Node.address`` (its internal address)."""

    public_ip: str | None = Field(default=None, max_length=64)
    wireguard_pubkey: str | None = Field(default=None, max_length=64)
    pod_cidr: str | None = Field(default=None, max_length=64)
    # ports of the node's host found held by programs that are not instances: never given
    # to an instance there (instances sharing the host's network only)
    busy_ports: list[int] = Field(default_factory=list, max_length=1024)


# ---- volumes and databases ---------------------------------------------------------------


class BackupSchedule(Value):
    """Whether backups are taken, how often and for how long they are kept."""

    enabled: bool = False
    frequency: str = Field(default="daily", max_length=100)  # daily, hourly or a cron line
    retention_days: int = Field(default=7, ge=1, le=3650)


class BackupPolicy(BackupSchedule):
    destination: str = Field(default="", max_length=1024)  # e.g. s3://bucket/path


class DatabaseEndpoint(Value):
    """Where clients connect; the password is in the database's credentials secret."""

    host: str = Field(max_length=255)
    port: int = Field(ge=1, le=65535)
    username: str = Field(max_length=63)
    database: str = Field(max_length=63)
    ssl_mode: str = Field(default="prefer", max_length=20)


class DatabaseUsage(Value):
    storage_used_bytes: Quantity = 0
    connections_active: Count = 0
    connections_max: Count = 0
    transactions_per_sec: float = Field(default=0.0, ge=0)


class HighAvailability(Value):
    enabled: bool = False
    mode: Literal["synchronous", "asynchronous"] = "asynchronous"
    replica_regions: list[str] = Field(default_factory=list, max_length=16)
    failover_enabled: bool = False


class DatabaseBackupConfig(BackupSchedule):
    window_start: str = Field(default="02:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    window_duration_hours: int = Field(default=1, ge=1, le=24)


# ---- domains and organizations -----------------------------------------------------------


class RoutingConfig(Value):
    """How the edge routes a hostname to its app (``Domain.app_id``) on each instance's PORT:
    the whole path, unchanged, with the client's Host header."""

    path: str = Field(default="/", max_length=512, pattern=r"^/")
    strip_prefix: bool = False
    preserve_host: bool = True


class EdgeFeatures(Value):
    """Edge features beyond routing and TLS; none is offered yet, so all are off."""

    cdn_enabled: bool = False
    cache_ttl_seconds: Count = 0
    waf_enabled: bool = False
    ddos_protection: bool = False


class OrgSettings(Value):
    """Per-organization policy; None means no limit."""

    allowed_regions: list[str] = Field(default_factory=list, max_length=64)  # empty: any
    max_apps: Count | None = None
    max_team_members: Count | None = Field(default=None, ge=1)
    require_2fa: bool = False
    sso_enabled: bool = False
