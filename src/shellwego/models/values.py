"""Value objects stored as JSON columns, in canonical units."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .units import parse_cpu, parse_memory

MemoryBytes = Annotated[int, BeforeValidator(parse_memory), Field(gt=0)]
CpuMillis = Annotated[int, BeforeValidator(parse_cpu), Field(gt=0)]

PROCESS_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,29}$")


class Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(Value):
    """What one instance reserves: CPU in milli-cores, memory in bytes."""

    cpu_millis: CpuMillis = 250
    memory_bytes: MemoryBytes = 256 * 1024 * 1024


SIZES: dict[str, Resources] = {
    "nano": Resources(cpu_millis=125, memory_bytes=128 * 1024**2),
    "small": Resources(cpu_millis=250, memory_bytes=256 * 1024**2),
    "medium": Resources(cpu_millis=500, memory_bytes=512 * 1024**2),
    "large": Resources(cpu_millis=1000, memory_bytes=1024**3),
    "xlarge": Resources(cpu_millis=2000, memory_bytes=2 * 1024**3),
}


class ProcessFormation(Value):
    """How many instances of a process type run, and how big each is."""

    count: int = Field(default=1, ge=0, le=1000)
    size: str = "small"
    resources: Resources = Field(default_factory=lambda: SIZES["small"])


class HealthCheck(Value):
    """HTTP GET ``path`` answering < 500, or a TCP accept on ``PORT`` when path is None."""

    path: str | None = Field(default=None, max_length=512, pattern=r"^/")
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    interval_seconds: float = Field(default=5.0, gt=0, le=3600)


class NodeCapacity(Value):
    cpu_millis: int = Field(ge=0)
    memory_bytes: int = Field(ge=0)


class Certificate(Value):
    issuer: str | None = None
    not_after: str | None = None
    managed_by: Literal["internal", "acme", "on_demand"] = "internal"


class DnsInstructions(Value):
    record_type: Literal["TXT", "CNAME"]
    name: str
    value: str
