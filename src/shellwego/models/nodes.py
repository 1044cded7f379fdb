"""Worker nodes: capacity, runtimes, status and liveness."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from .base import Entity
from .columns import CIText, EnumText, PydanticJSON, UTCDateTime
from .enums import NodeStatus
from .scalars import Count
from .values import NodeCapabilities, NodeCapacity, NodeNetwork


class NodeBase(SQLModel):
    """What an agent says about its machine when it registers."""

    hostname: str = Field(sa_type=CIText(), min_length=1, max_length=253, unique=True)
    address: str = Field(default="127.0.0.1", max_length=255)
    labels: dict[str, str] = Field(default_factory=dict, sa_type=PydanticJSON(dict[str, str]))
    capacity: NodeCapacity = Field(sa_type=PydanticJSON(NodeCapacity))
    runtimes: list[str] = Field(
        default_factory=lambda: ["process"], max_length=10, sa_type=PydanticJSON(list[str])
    )
    # runtime → why this node does not offer it (e.g. "/dev/kvm is missing")
    runtime_reasons: dict[str, str] = Field(
        default_factory=dict, sa_type=PydanticJSON(dict[str, str])
    )
    agent_version: str = Field(default="", max_length=50)
    kernel_version: str = Field(default="", max_length=100)  # os.uname().release
    capabilities: NodeCapabilities = Field(
        default_factory=NodeCapabilities, sa_type=PydanticJSON(NodeCapabilities)
    )


class NodeFields(NodeBase, Entity):
    status: NodeStatus = Field(sa_type=EnumText(NodeStatus))
    region: str = Field(default="local", max_length=50)
    zone: str = Field(default="local", max_length=50)
    network: NodeNetwork = Field(default_factory=NodeNetwork, sa_type=PydanticJSON(NodeNetwork))
    assignment_index: Count = Field(default=0)
    last_heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Node(NodeFields, table=True):
    """A machine that runs instances. Nodes belong to the platform, not to one tenant."""

    __tablename__ = "nodes"
    token_hash: str = Field(max_length=64, unique=True, exclude=True)


class NodeView(NodeFields):
    """A node as the API shows it, with what the instances placed on it take (derived from
    placement when the node is read, never stored)."""

    free: NodeCapacity  # capacity less what the instances meant to run here reserve
    microvm_capacity: Count  # microVMs of the smallest size that fit
    microvm_used: Count  # instances meant to run here as microVMs


class JoinToken(Entity, table=True):
    """A token that lets agents register nodes; stored hashed."""

    __tablename__ = "join_tokens"
    name: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, unique=True, exclude=True)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
