"""The scheduler's inputs and outputs: plain, immutable values in canonical units.

CPU is in milli-cores and memory in bytes. A snapshot describes the cluster as the database
saw it; a plan describes what should change. Nothing here talks to the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shellwego.errors import InvalidInput

STRATEGIES = frozenset({"binpack", "spread"})
NODE_STATUSES = frozenset({"ready", "draining", "down"})


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of CPU (milli-cores) and memory (bytes)."""

    cpu_millis: int
    memory_bytes: int

    def add(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.memory_bytes + other.memory_bytes)

    def sub(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis - other.cpu_millis, self.memory_bytes - other.memory_bytes)

    def fits(self, capacity: Resources) -> bool:
        """True when this amount fits within ``capacity`` in both CPU and memory."""
        return self.cpu_millis <= capacity.cpu_millis and self.memory_bytes <= capacity.memory_bytes

    def __add__(self, other: Resources) -> Resources:
        return self.add(other)

    def __sub__(self, other: Resources) -> Resources:
        return self.sub(other)


ZERO = Resources(0, 0)


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """A node as last seen: only ``ready`` nodes receive instances.

    ``allocatable`` is the total the node offers to instances (capacity minus what the
    operator reserves for the system); existing instances are subtracted from it.
    """

    id: str
    status: str
    runtimes: frozenset[str]
    labels: Mapping[str, str]
    allocatable: Resources

    def __post_init__(self) -> None:
        if self.status not in NODE_STATUSES:
            raise InvalidInput(f"node {self.id}: unknown status {self.status!r}")


@dataclass(frozen=True, slots=True)
class InstanceSnapshot:
    """An instance the database already assigned to a node; it consumes that node's capacity.

    ``peers``: how many of the replicas this entry stands for stay beside new instances of
    its app and process type (1 for one instance; 0 for one that a rollout is replacing).
    The ``spread`` strategy evens the peers out across nodes.
    """

    id: str
    app_id: str
    process_type: str
    release_id: str
    node_id: str
    resources: Resources
    peers: int = 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster as one consistent read of the database saw it."""

    nodes: Sequence[NodeSnapshot]
    instances: Sequence[InstanceSnapshot] = ()


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """Place ``count`` new instances of one process type of one release.

    ``constraints`` are node labels that must match exactly (``{"region": "eu"}``).
    ``strategy`` is ``binpack`` (fill the fullest node that fits, keeping whole nodes free)
    or ``spread`` (use the emptiest node, spreading load).
    """

    app_id: str
    process_type: str
    release_id: str
    count: int
    resources: Resources
    runtime: str = "process"
    constraints: Mapping[str, str] = field(default_factory=dict)
    strategy: str = "binpack"

    def __post_init__(self) -> None:
        if self.count < 0:
            raise InvalidInput(f"cannot place a negative number of instances ({self.count})")
        if self.resources.cpu_millis < 0 or self.resources.memory_bytes < 0:
            raise InvalidInput("instance resources cannot be negative")
        if self.strategy not in STRATEGIES:
            raise InvalidInput(
                f"unknown placement strategy {self.strategy!r}: use binpack or spread"
            )


@dataclass(frozen=True, slots=True)
class Placement:
    """One new instance of ``release_id`` to run on ``node_id``."""

    node_id: str
    app_id: str
    process_type: str
    release_id: str
    resources: Resources


@dataclass(frozen=True, slots=True)
class Plan:
    """The instances to create. Stopping (drains, surplus, lost nodes) is the rollout
    controller's, which re-plans an instance by placing its replacement here."""

    placements: list[Placement] = field(default_factory=list)
