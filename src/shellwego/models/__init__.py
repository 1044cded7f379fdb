"""Entities, value objects and enums: one definition each."""

from .activity import AuditLog, Event, LogLine, Webhook, WebhookDelivery
from .apps import (
    App,
    AppCreate,
    AppUpdate,
    Deployment,
    FormationUpdate,
    Instance,
    Release,
)
from .base import Entity, Input, partial
from .columns import new_id
from .domains import Domain, DomainCreate
from .enums import (
    ActorType,
    AppStatus,
    DeploymentStatus,
    DeploymentStrategy,
    DesiredState,
    DomainStatus,
    NodeStatus,
    Role,
    SecretKind,
    SecretScope,
    TlsStatus,
)
from .nodes import JoinToken, Node
from .secrets import Secret, SecretCreate, SecretRotate, SecretVersion, SecretVersionInfo
from .storage import Database, Snapshot, Volume
from .tenancy import (
    ApiToken,
    ApiTokenCreate,
    Membership,
    Organization,
    OrganizationCreate,
    User,
    UserCreate,
)
from .values import SIZES, HealthCheck, NodeCapacity, ProcessFormation, Resources

__all__ = [
    "SIZES",
    "ActorType",
    "ApiToken",
    "ApiTokenCreate",
    "App",
    "AppCreate",
    "AppStatus",
    "AppUpdate",
    "AuditLog",
    "Database",
    "Deployment",
    "DeploymentStatus",
    "DeploymentStrategy",
    "DesiredState",
    "Domain",
    "DomainCreate",
    "DomainStatus",
    "Entity",
    "Event",
    "FormationUpdate",
    "HealthCheck",
    "Input",
    "Instance",
    "JoinToken",
    "LogLine",
    "Membership",
    "Node",
    "NodeCapacity",
    "NodeStatus",
    "Organization",
    "OrganizationCreate",
    "ProcessFormation",
    "Release",
    "Resources",
    "Role",
    "Secret",
    "SecretCreate",
    "SecretKind",
    "SecretRotate",
    "SecretScope",
    "SecretVersion",
    "SecretVersionInfo",
    "Snapshot",
    "TlsStatus",
    "User",
    "UserCreate",
    "Volume",
    "Webhook",
    "WebhookDelivery",
    "new_id",
    "partial",
]
