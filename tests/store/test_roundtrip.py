"""Every table round-trips on both backends, with every field set explicitly.

Read back equal; aware UTC timestamps (microseconds kept, other offsets converted);
JSON value objects come back typed and are stored as plain JSON; enums are stored as
their short strings; names declared case-insensitive are unique in any case.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import SQLModel

from shellwego.errors import Conflict
from shellwego.models import (
    ActorType,
    ApiToken,
    App,
    AppStatus,
    AuditLog,
    Database,
    Deployment,
    DeploymentStatus,
    DeploymentStrategy,
    DesiredState,
    Domain,
    DomainStatus,
    Event,
    HealthCheck,
    Instance,
    JoinToken,
    Lease,
    LoginThrottle,
    LogLine,
    Membership,
    Node,
    NodeCapacity,
    NodeStatus,
    Organization,
    PlatformFact,
    ProcessFormation,
    Release,
    Resources,
    Role,
    Secret,
    SecretKind,
    SecretScope,
    SecretVersion,
    Snapshot,
    ThrottleScope,
    TlsStatus,
    UidLease,
    User,
    Volume,
    Webhook,
    WebhookDelivery,
    new_id,
)
from shellwego.models.columns import CIText, EnumText, PydanticJSON
from shellwego.models.enums import DatabaseEngine, DatabaseStatus, VolumeStatus, VolumeType
from shellwego.models.values import (
    BackupPolicy,
    Certificate,
    DatabaseBackupConfig,
    DatabaseEndpoint,
    DatabaseUsage,
    DeployPolicy,
    EdgeFeatures,
    HighAvailability,
    NodeCapabilities,
    NodeNetwork,
    OrgSettings,
    PlacementPolicy,
    RoutingConfig,
)
from shellwego.services.context import Context
from shellwego.store import repository as repo

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
# aware but not UTC: stored as the same instant, read back in UTC
T1 = datetime(2026, 3, 1, 14, 30, 5, 654321, tzinfo=timezone(timedelta(hours=2)))
T2 = datetime(2026, 3, 2, 8, 0, 0, 1, tzinfo=UTC)
BIG = 10 * 1024**3  # more than a 32-bit column holds


def _u() -> str:
    return new_id()[-8:].lower()


@dataclass
class Graph:
    """Parent rows every table's row can point at."""

    org: Organization
    user: User
    node: Node
    app: App
    release: Release
    deployment: Deployment
    secret: Secret
    volume: Volume
    webhook: Webhook


def organization(g: Graph | None = None) -> Organization:
    u = _u()
    return Organization(
        id=new_id(), name=f"Org {u}", slug=f"org-{u}", plan="growth",
        settings=OrgSettings(allowed_regions=["eu", "us"], max_apps=12, max_team_members=5,
                             require_2fa=True, sso_enabled=True),
        created_at=T0, updated_at=T1,
    )


def user(g: Graph | None = None) -> User:
    u = _u()
    return User(
        id=new_id(), email=f"u-{u}@example.com", name=f"User {u}",
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", is_operator=True,
        last_login_at=T2, created_at=T0, updated_at=T1,
    )


def node(g: Graph | None = None) -> Node:
    u = _u()
    return Node(
        id=new_id(), hostname=f"node-{u}.example.net", address="10.0.0.7",
        labels={"zone": "b", "disk": "ssd"},
        capacity=NodeCapacity(cpu_millis=16000, memory_bytes=64 * 1024**3),
        runtimes=["process", "oci"], runtime_reasons={"microvm": "/dev/kvm is not present"},
        agent_version="0.1.0", kernel_version="6.8.0-31-generic",
        capabilities=NodeCapabilities(kvm=True, nested_virtualization=True,
                                      cpu_features=["avx2", "vmx"], gpu=True),
        status=NodeStatus.DRAINING, region="eu-west", zone="b",
        network=NodeNetwork(public_ip="203.0.113.7", wireguard_pubkey="wg-pub",
                            pod_cidr="10.42.0.0/24"),
        token_hash=f"node-{u}".ljust(64, "0"),
        assignment_index=42, last_heartbeat_at=T2, created_at=T0, updated_at=T1,
    )


def join_token(g: Graph | None = None) -> JoinToken:
    u = _u()
    return JoinToken(id=new_id(), name=f"join {u}", token_hash=f"join-{u}".ljust(64, "0"),
                     revoked_at=T2, created_at=T0, updated_at=T1)


def membership(g: Graph) -> Membership:
    return Membership(id=new_id(), role=Role.ADMIN, organization_id=g.org.id,
                      user_id=g.user.id, created_at=T0, updated_at=T1)


def api_token(g: Graph) -> ApiToken:
    u = _u()
    return ApiToken(
        id=new_id(), name=f"ci {u}", expires_at=T2, user_id=g.user.id, organization_id=g.org.id,
        prefix="swg_abcdef", scopes=["apps:read", "apps:write"], last_used_at=T1, revoked_at=T2,
        token_hash=f"tok-{u}".ljust(64, "0"), created_at=T0, updated_at=T1,
    )


def app(g: Graph) -> App:
    u = _u()
    return App(
        id=new_id(), name=f"app-{u}",
        health_check=HealthCheck(path="/healthz", timeout_seconds=30, interval_seconds=2),
        redirect_https=True, runtime="oci",
        deploy=DeployPolicy(surge=2, max_unavailable=1),
        placement=PlacementPolicy(strategy="spread", constraints={"zone": "b"}),
        organization_id=g.org.id, status=AppStatus.RUNNING,
        formation={"web": ProcessFormation(count=3, size="medium",
                                           resources=Resources(cpu_millis=500,
                                                               memory_bytes=512 * 1024**2))},
        current_release_id=new_id(), created_by=g.user.id,
        formation_error="no node offers the oci runtime", deleted_at=None,
        uid=1000000 + int(u[-6:], 36) % 900000, created_at=T0, updated_at=T1,
    )


def uid_lease(g: Graph) -> UidLease:
    return UidLease(
        id=new_id(), uid=1000000 + int(_u()[-6:], 36) % 900000, app_id=g.app.id,
        created_at=T0, updated_at=T1,
    )


def release(g: Graph) -> Release:
    return Release(
        id=new_id(), app_id=g.app.id, organization_id=g.org.id, version=int(_u()[-4:], 36) + 1,
        slug_digest="a" * 64, image="registry.example/app@sha256:" + "b" * 64, stack="python",
        process_types={"web": "python app.py", "worker": "python worker.py"},
        slug_env={"PYTHONPATH": "/app/.deps"}, config={"DATABASE_URL": new_id()},
        health_check=HealthCheck(path="/up"), description="Deploy abc123", created_by=g.user.id,
        created_at=T0, updated_at=T1,
    )


def deployment(g: Graph) -> Deployment:
    return Deployment(
        id=new_id(), app_id=g.app.id, organization_id=g.org.id, release_id=g.release.id,
        previous_release_id=new_id(), status=DeploymentStatus.ROLLING,
        strategy=DeploymentStrategy.IMMEDIATE, surge=2, max_unavailable=1, instances_total=4,
        instances_ready=2, error="health check failed", finished_at=T2, created_by=g.user.id,
        created_at=T0, updated_at=T1,
    )


def instance(g: Graph) -> Instance:
    return Instance(
        id=new_id(), app_id=g.app.id, organization_id=g.org.id, release_id=g.release.id,
        node_id=g.node.id, process_type="worker",
        resources=Resources(cpu_millis=2000, memory_bytes=BIG), port=20001,
        address="10.213.0.17", desired_state=DesiredState.STOPPED, state="running",
        healthy=True, restarts=2,
        exit_code=137, pid=4242, last_error="OOM", observed_at=T1, healthy_at=T2,
        drain_started_at=T2, deployment_id=g.deployment.id, ordinal=3, created_at=T0,
        updated_at=T1,
    )


def domain(g: Graph) -> Domain:
    u = _u()
    return Domain(
        id=new_id(), hostname=f"www-{u}.example.org", organization_id=g.org.id, app_id=g.app.id,
        status=DomainStatus.ACTIVE, tls_status=TlsStatus.ACME, verification_token="t" * 32,
        certificate=Certificate(issuer="Let's Encrypt", not_after="2026-06-01T00:00:00Z",
                                managed_by="acme"),
        last_error="earlier: NXDOMAIN", verified_at=T2,
        routing=RoutingConfig(path="/api", strip_prefix=True, preserve_host=False),
        features=EdgeFeatures(cdn_enabled=True, cache_ttl_seconds=300, waf_enabled=True,
                              ddos_protection=True),
        created_at=T0, updated_at=T1,
    )


def event(g: Graph) -> Event:
    return Event(id=new_id(), organization_id=g.org.id, app_id=g.app.id, type="app.crashed",
                 message="web.1 exited 137", data={"exit_code": 137, "tags": ["oom"]},
                 key=f"app.crashed:{_u()}", created_at=T0, updated_at=T1)


def log_line(g: Graph) -> LogLine:
    return LogLine(id=new_id(), app_id=g.app.id, instance_id=new_id(), source="web",
                   stream="stderr", timestamp=T1, line="Traceback (most recent call last): ☃")


def secret(g: Graph) -> Secret:
    u = _u()
    return Secret(
        id=new_id(), name=f"API_KEY_{u.upper()}", expires_at=T2, organization_id=g.org.id,
        app_id=g.app.id, scope_key=g.app.id, kind=SecretKind.CONFIG, scope=SecretScope.APP,
        current_version=3, deleted_at=T2, last_used_at=T1, created_by=g.user.id,
        created_at=T0, updated_at=T1,
    )


def secret_version(g: Graph) -> SecretVersion:
    return SecretVersion(
        id=new_id(), version=int(_u()[-4:], 36) + 1, created_by=g.user.id, secret_id=g.secret.id,
        ciphertext=bytes(range(256)), nonce=b"\x00" * 12, wrapped_key=b"\xff" * 60,
        key_id="0123456789abcdef", created_at=T1,
    )


def volume(g: Graph) -> Volume:
    u = _u()
    return Volume(
        id=new_id(), organization_id=g.org.id, name=f"data-{u}", status=VolumeStatus.ATTACHED,
        size_bytes=BIG, used_bytes=BIG // 2, volume_type=VolumeType.SHARED, filesystem="xfs",
        encrypted=True,
        backup_policy=BackupPolicy(enabled=True, frequency="0 3 * * *", retention_days=30,
                                   destination="s3://backups/vol"),
        app_id=g.app.id, node_id=g.node.id, mount_path="/data", created_at=T0, updated_at=T1,
    )


def snapshot(g: Graph) -> Snapshot:
    return Snapshot(id=new_id(), volume_id=g.volume.id, organization_id=g.org.id,
                    name=f"nightly-{_u()}", size_bytes=BIG, created_at=T0, updated_at=T1)


def database(g: Graph) -> Database:
    u = _u()
    return Database(
        id=new_id(), organization_id=g.org.id, name=f"db-{u}", engine=DatabaseEngine.REDIS,
        version="7.2", status=DatabaseStatus.AVAILABLE,
        resources=Resources(cpu_millis=1000, memory_bytes=BIG), storage_bytes=BIG * 2,
        credentials_secret_id=g.secret.id,
        endpoint=DatabaseEndpoint(host="db.internal", port=6379, username="app",
                                  database="0", ssl_mode="require"),
        ha=HighAvailability(enabled=True, mode="synchronous", replica_regions=["us"],
                            failover_enabled=True),
        backup_config=DatabaseBackupConfig(enabled=True, frequency="hourly", retention_days=14,
                                           window_start="23:30", window_duration_hours=2),
        usage=DatabaseUsage(storage_used_bytes=BIG, connections_active=7, connections_max=100,
                            transactions_per_sec=12.5),
        created_at=T0, updated_at=T1,
    )


def webhook(g: Graph) -> Webhook:
    return Webhook(
        id=new_id(), organization_id=g.org.id, name=f"hook {_u()}",
        url="https://hooks.example/in", events=["app.deployed", "app.crashed"], active=False,
        signing_secret_id=g.secret.id, failure_count=3, last_delivered_at=T2,
        created_at=T0, updated_at=T1,
    )


def webhook_delivery(g: Graph) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id(), webhook_id=g.webhook.id, event_type="app.deployed",
        payload={"app": "blog", "release": 3, "nested": {"ok": True}}, status_code=502,
        response_body="Bad Gateway", duration_ms=1234, attempts=4, success=False,
        delivered_at=T2, created_at=T0, updated_at=T1,
    )


def audit_log(g: Graph) -> AuditLog:
    return AuditLog(
        id=new_id(), organization_id=g.org.id, actor_id=g.user.id, actor_type=ActorType.TOKEN,
        action="apps.update", target_type="apps", target_id=g.app.id, result="failure",
        status_code=409, source_ip="2001:db8::1", user_agent="shellwego-cli/0.1.0",
        request_id="r" * 32, changes={"before": {"name": "a"}, "after": {"name": "b"}},
        created_at=T0, updated_at=T1,
    )


def login_throttle(g: Graph) -> LoginThrottle:
    return LoginThrottle(
        id=new_id(), scope=ThrottleScope.ACCOUNT, subject=f"{_u()}@example.com", failures=12,
        last_failure_at=T1, blocked_until=T2, created_at=T0, updated_at=T1,
    )


def lease(g: Graph) -> Lease:
    return Lease(
        id=new_id(), name=f"controllers-{_u()}", holder="host:4242:01J0000000000000000000000A",
        token=2**40, acquired_at=T0, expires_at=T2, created_at=T0, updated_at=T1,
    )


def platform_fact(g: Graph) -> PlatformFact:
    return PlatformFact(
        id=new_id(), name=f"fact-{_u()}", value="a" * 200, created_at=T0, updated_at=T1,
    )


BUILDERS: dict[str, tuple[type[SQLModel], Callable[[Graph], Any]]] = {
    "organizations": (Organization, organization),
    "users": (User, user),
    "memberships": (Membership, membership),
    "api_tokens": (ApiToken, api_token),
    "nodes": (Node, node),
    "join_tokens": (JoinToken, join_token),
    "apps": (App, app),
    "releases": (Release, release),
    "deployments": (Deployment, deployment),
    "instances": (Instance, instance),
    "domains": (Domain, domain),
    "events": (Event, event),
    "log_lines": (LogLine, log_line),
    "secrets": (Secret, secret),
    "secret_versions": (SecretVersion, secret_version),
    "volumes": (Volume, volume),
    "snapshots": (Snapshot, snapshot),
    "databases": (Database, database),
    "webhooks": (Webhook, webhook),
    "webhook_deliveries": (WebhookDelivery, webhook_delivery),
    "audit_logs": (AuditLog, audit_log),
    "uid_leases": (UidLease, uid_lease),
    "login_throttles": (LoginThrottle, login_throttle),
    "leases": (Lease, lease),
    "platform_facts": (PlatformFact, platform_fact),
}


def _graph(ctx: Context) -> Graph:
    with ctx.db.session() as s:
        org, usr, nd = organization(), user(), node()
        for row in (org, usr, nd):
            repo.add(s, row, conflict="dup")
        partial = Graph(org, usr, nd, *([None] * 6))  # type: ignore[arg-type]
        partial.app = repo.add(s, app(partial), conflict="dup")
        partial.release = repo.add(s, release(partial), conflict="dup")
        partial.deployment = repo.add(s, deployment(partial), conflict="dup")
        partial.secret = repo.add(s, secret(partial), conflict="dup")
        partial.volume = repo.add(s, volume(partial), conflict="dup")
        partial.webhook = repo.add(s, webhook(partial), conflict="dup")
        return partial


def _columns(model: type[SQLModel]) -> list[sa.Column[Any]]:
    return list(model.__table__.columns)  # type: ignore[attr-defined]


def _values(row: SQLModel) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in _columns(type(row))}


def test_every_table_has_a_builder() -> None:
    assert set(BUILDERS) == set(SQLModel.metadata.tables)


@pytest.mark.parametrize("table", sorted(BUILDERS))
def test_row_round_trips_with_every_field(ctx: Context, table: str) -> None:
    model, build = BUILDERS[table]
    g = _graph(ctx)
    row = build(g)
    columns = _columns(model)
    unset = {c.name for c in columns} - row.model_fields_set
    assert not unset, f"{table}: the builder leaves {sorted(unset)} to defaults"
    expected = _values(row)
    with ctx.db.session() as s:
        repo.add(s, row, conflict="dup")
    with ctx.db.session() as s:
        back = s.get(model, expected["id"])
        assert back is not None
        got = _values(back)
    assert got == expected
    for name, value in got.items():
        if isinstance(value, datetime):
            assert value.tzinfo is UTC, name
        if isinstance(expected[name], BaseModel):
            assert type(value) is type(expected[name]), name

    with ctx.db.engine.connect() as conn:
        for column in columns:
            raw = conn.execute(
                sa.select(sa.column(column.name, sa.Text if isinstance(column.type, EnumText)
                                    else None))
                .select_from(sa.table(table)).where(sa.column("id") == expected["id"])
            ).scalar_one()
            if isinstance(column.type, EnumText):  # a short string, e.g. 'running'
                assert raw == expected[column.name].value and len(raw) <= 20, column.name
            elif isinstance(column.type, PydanticJSON) and raw is not None:
                stored = json.loads(raw) if isinstance(raw, str) else raw
                dumped = column.type._adapter.dump_python(expected[column.name], mode="json")
                assert stored == dumped, column.name


def _ci_unique() -> list[tuple[str, tuple[str, ...], str]]:
    """(table, unique columns, the case-insensitive one) for every such constraint."""
    found = []
    for table in SQLModel.metadata.sorted_tables:
        for uc in table.constraints:
            if isinstance(uc, sa.UniqueConstraint):
                names = tuple(c.name for c in uc.columns)
                found += [(table.name, names, c.name) for c in uc.columns
                          if isinstance(c.type, CIText)]
    return found


def test_case_insensitive_names_are_the_declared_ones() -> None:
    assert {(t, c) for t, _, c in _ci_unique()} >= {
        ("organizations", "slug"), ("users", "email"), ("apps", "name"),
        ("domains", "hostname"), ("nodes", "hostname"), ("volumes", "name"),
        ("databases", "name")}


@pytest.mark.parametrize(("table", "unique", "column"), _ci_unique())
def test_case_insensitive_uniqueness(
    ctx: Context, table: str, unique: tuple[str, ...], column: str
) -> None:
    model, build = BUILDERS[table]
    g = _graph(ctx)
    first = build(g)
    with ctx.db.session() as s:
        repo.add(s, first, conflict="dup")
    twin = build(g)
    for name in unique:
        setattr(twin, name, getattr(first, name))
    setattr(twin, column, getattr(first, column).swapcase())
    with pytest.raises(Conflict), ctx.db.session() as s:
        repo.add(s, twin, conflict="dup")
    other = build(g)  # the same constraint with a different name is fine
    for name in unique:
        if name != column:
            setattr(other, name, getattr(first, name))
    with ctx.db.session() as s:
        repo.add(s, other, conflict="dup")
        found = repo.get(s, model, **{column: getattr(first, column).upper()})
        assert found is not None and getattr(found, column) == getattr(first, column)
