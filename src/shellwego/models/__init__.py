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
    UidLease,
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
    ThrottleScope,
    TlsStatus,
)
from .leases import Lease
from .nodes import JoinToken, Node, NodeView
from .platform import PlatformFact
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
from .throttle import LoginThrottle
from .values import (
    SIZES,
    DeployPolicy,
    HealthCheck,
    NodeCapacity,
    PlacementPolicy,
    ProcessFormation,
    Resources,
)

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
    "DeployPolicy",
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
    "Lease",
    "LogLine",
    "LoginThrottle",
    "Membership",
    "Node",
    "NodeCapacity",
    "NodeStatus",
    "NodeView",
    "Organization",
    "OrganizationCreate",
    "PlacementPolicy",
    "PlatformFact",
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
    "ThrottleScope",
    "TlsStatus",
    "UidLease",
    "User",
    "UserCreate",
    "Volume",
    "Webhook",
    "WebhookDelivery",
    "new_id",
    "partial",
]
