"""Enumerations, stored as their short string values."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "member": 1, "admin": 2, "owner": 3}[self.value]


class AppStatus(enum.StrEnum):
    CREATED = "created"
    DEPLOYING = "deploying"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    DELETING = "deleting"  # deleted; removed once its instances are gone


class DeploymentStatus(enum.StrEnum):
    PENDING = "pending"  # its release command has yet to run (the release phase)
    BUILDING = "building"
    RELEASING = "releasing"  # its release command runs
    ROLLING = "rolling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class DeploymentStrategy(enum.StrEnum):
    ROLLING = "rolling"
    IMMEDIATE = "immediate"


class DesiredState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class NodeStatus(enum.StrEnum):
    READY = "ready"
    DRAINING = "draining"
    DOWN = "down"


class DomainStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    ERROR = "error"


class TlsStatus(enum.StrEnum):
    PENDING = "pending"
    INTERNAL = "internal"
    ACME = "acme"
    ACTIVE = "active"
    FAILED = "failed"


class SecretKind(enum.StrEnum):
    SECRET = "secret"  # write-only; revealed only by the explicit reveal endpoint
    CONFIG = "config"  # a config var: readable by members, still encrypted at rest


class SecretScope(enum.StrEnum):
    ORGANIZATION = "organization"
    APP = "app"


class VolumeStatus(enum.StrEnum):
    CREATING = "creating"
    DETACHED = "detached"
    ATTACHED = "attached"
    ERROR = "error"


class VolumeType(enum.StrEnum):
    PERSISTENT = "persistent"  # survives its app
    EPHEMERAL = "ephemeral"  # deleted with its app
    SHARED = "shared"  # attachable to several apps


class DatabaseEngine(enum.StrEnum):
    POSTGRES = "postgres"
    MYSQL = "mysql"
    REDIS = "redis"


class DatabaseStatus(enum.StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    ERROR = "error"
    DELETING = "deleting"


class ActorType(enum.StrEnum):
    USER = "user"
    TOKEN = "token"
    NODE = "node"
    SYSTEM = "system"


class ThrottleScope(enum.StrEnum):
    """What failed password checks are counted against."""

    ADDRESS = "address"  # a client's source address (an IPv6 client's /64)
    ACCOUNT = "account"  # an email address, registered or not
