"""The agent protocol's messages, defined once for the control plane, the agent and the
OpenAPI document (docs/agent-protocol.md; schema in docs/agent-protocol.schema.json).

Every message derives from :class:`~shellwego.models.base.Message`: unknown fields are
ignored, so an agent may be newer than its server. ``python -m shellwego.models.agentprotocol``
prints the JSON schema of the protocol (``--write`` updates the committed file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import Message
from .scalars import Count, ExitCode, Port, Quantity, Timestamp
from .values import NodeCapabilities, NodeCapacity

Runtime = Literal["process", "oci", "microvm"]
RUNTIMES: tuple[Runtime, ...] = ("process", "oci", "microvm")

SLUG_DIGEST_PATTERN = r"^[0-9a-f]{64}$"
IMAGE_DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Frozen(Message):
    model_config = ConfigDict(frozen=True)


class _Tagged(BaseModel):
    """An arm of a tagged union: pydantic reads its ``kind`` itself, so it takes no
    field-wide JSON-kind check (its fields are strings, which lax mode never converts)."""

    model_config = ConfigDict(frozen=True)


# ---- assignments: control plane → agent --------------------------------------------------


class SlugArtifact(_Tagged):
    """A slug built by the platform: a gzip'd tar in the artifact store, by sha256."""

    kind: Literal["slug"] = "slug"
    digest: str = Field(pattern=SLUG_DIGEST_PATTERN)


class ImageArtifact(_Tagged):
    """An OCI image: its reference as the user gave it and, once resolved, its manifest
    digest (what a node pulls, so every node runs the same bytes)."""

    kind: Literal["image"] = "image"
    reference: str = Field(min_length=1, max_length=512)
    digest: str | None = Field(default=None, pattern=IMAGE_DIGEST_PATTERN)


Artifact = Annotated[SlugArtifact | ImageArtifact, Field(discriminator="kind")]


class AssignedResources(_Frozen):
    """What the instance may use: memory in bytes, CPU in milli-cores, a process count."""

    memory_bytes: Quantity
    cpu_millis: Quantity
    pids: Count | None = None  # None: the runtime's default


class Mount(_Frozen):
    """A volume attached to the instance (none are assigned yet)."""

    source: str = Field(min_length=1, max_length=255)  # the volume's id
    target: str = Field(min_length=1, max_length=255, pattern=r"^/")
    read_only: bool = False


class AssignedNetwork(_Frozen):
    """``port``: what the instance listens on (``PORT``); ``namespace``: whether it gets a
    network namespace of its own (an address on the node's bridge) rather than the host's;
    the process runtime gives one wherever the host allows it (as root)."""

    port: Port
    namespace: bool = True


class HealthCheckSpec(_Frozen):
    type: Literal["http", "tcp", "process"] = "process"
    path: str = Field(default="/", max_length=512, pattern=r"^/")
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)


class Assignment(_Frozen):
    """One instance the control plane wants on a node.

    An instance id belongs to one release for its whole life: a new release, size or
    command always comes as new instance ids, so an assignment never changes under an id.
    ``env`` is the release's configuration with its secrets resolved: never logged (it is
    left out of ``repr``).
    """

    instance_id: str = Field(min_length=1, max_length=26)
    app_id: str = Field(min_length=1, max_length=26)
    app_name: str = Field(min_length=1, max_length=63)
    process_type: str = Field(min_length=1, max_length=30)
    release_id: str = Field(min_length=1, max_length=26)
    release_version: int = Field(ge=1)
    runtime: Runtime = "process"
    artifact: Artifact | None = None
    # the Procfile's command line (run through /bin/sh -c); ``argv``, when given, runs as
    # is instead (an image's entrypoint and arguments)
    command: str = Field(default="", max_length=4096)
    argv: list[str] | None = Field(default=None, max_length=256)
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    resources: AssignedResources
    mounts: list[Mount] = Field(default_factory=list, max_length=64)
    network: AssignedNetwork
    health_check: HealthCheckSpec = Field(default_factory=HealthCheckSpec)
    desired_state: Literal["running", "stopped"] = "running"
    uid: int | None = Field(default=None, ge=1)  # the app's own uid (and gid)
    index: int | None = Field(default=None, ge=1)  # its number in its type (``web.1``)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, raw: Any) -> Any:
        """Read the flat shape servers sent before the protocol was typed (``slug_digest``,
        ``port``, ``memory_bytes``, ``cpu_millis`` at the top level)."""
        if not isinstance(raw, dict) or "network" in raw or "port" not in raw:
            return raw
        raw = dict(raw)
        digest = raw.pop("slug_digest", None)
        if digest and "artifact" not in raw:
            raw["artifact"] = {"kind": "slug", "digest": digest}
        raw["network"] = {"port": raw.pop("port")}
        if "resources" not in raw:
            raw["resources"] = {
                "memory_bytes": raw.pop("memory_bytes", None),
                "cpu_millis": raw.pop("cpu_millis", None),
            }
        return raw

    @property
    def port(self) -> int:
        return self.network.port

    @property
    def slug_digest(self) -> str | None:
        return self.artifact.digest if isinstance(self.artifact, SlugArtifact) else None


class Assignments(Message):
    """The answer to the blocking query: everything that should run on the node now."""

    index: int = Field(ge=0)
    instances: list[Assignment] = Field(default_factory=list)


# ---- agent → control plane -----------------------------------------------------------------


class ObservedInstance(Message):
    instance_id: str = Field(max_length=26)
    state: str = Field(max_length=20)
    healthy: bool = False
    pid: Count | None = None
    port: Port | None = None
    # its own network's address (IPv4), where the edge reaches it; None: its node's
    address: str | None = Field(default=None, max_length=64, pattern=r"^[0-9.]{7,15}$")
    restarts: Count = 0
    exit_code: ExitCode | None = None
    last_error: str | None = Field(default=None, max_length=2000)
    # the problem slug of ``last_error`` (``port-in-use``: another program holds its port)
    error_code: str | None = Field(default=None, max_length=40)
    cpu_millis_used: float | None = None
    memory_bytes: Quantity | None = None


class Heartbeat(Message):
    capacity: NodeCapacity | None = None
    # what the machine is: on the first heartbeat after an agent starts, so a reboot into a
    # new kernel shows; a heartbeat that leaves them out keeps what the node has
    kernel_version: str | None = Field(default=None, max_length=100)
    capabilities: NodeCapabilities | None = None
    # the runtimes this agent runs and why each other one is missing; left out: unchanged
    # (plain names: a newer agent's runtime must not make its heartbeat invalid)
    runtimes: list[Annotated[str, Field(max_length=20)]] | None = Field(
        default=None, max_length=10
    )
    runtime_reasons: dict[str, str] | None = Field(default=None, max_length=10)
    instances: list[ObservedInstance] = Field(default_factory=list, max_length=10000)


class HeartbeatAnswer(Message):
    node_status: str
    heartbeat_interval: float


class ShippedLine(Message):
    instance_id: str | None = Field(default=None, max_length=26)
    stream: str = Field(default="stdout", max_length=10)
    timestamp: Timestamp
    line: str = Field(max_length=16384)


class ShippedLogs(Message):
    lines: list[ShippedLine] = Field(max_length=5000)


class Registered(Message):
    node_id: str
    node_token: str = Field(repr=False)


MESSAGES: tuple[type[BaseModel], ...] = (
    Assignments,
    Heartbeat,
    HeartbeatAnswer,
    ShippedLogs,
    Registered,
)
SCHEMA_PATH = Path("docs/agent-protocol.schema.json")


def schema() -> dict[str, Any]:
    """One JSON Schema document defining every message of the protocol."""
    defs: dict[str, Any] = {}
    for message in MESSAGES:
        one = message.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(one.pop("$defs", {}))
        defs[message.__name__] = one
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ShellWeGo agent protocol",
        "$defs": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    """Print the schema, or with ``--write [PATH]`` write it (default: the committed file)."""
    if argv and argv[0] == "--write":
        path = Path(argv[1]) if len(argv) > 1 else SCHEMA_PATH
        path.write_text(schema_text())
        return 0
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
