"""What agents report about their machine, and what the platform derives from placement."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from shellwego.models import (
    App,
    AppStatus,
    DesiredState,
    HealthCheck,
    Instance,
    Node,
    NodeCapacity,
    Release,
    Resources,
    new_id,
)
from shellwego.services import nodes
from shellwego.services.context import Context
from shellwego.store import repository as repo

from .conftest import Org

GIB = 1024**3
CAPABILITIES = {"kvm": True, "nested_virtualization": False, "cpu_features": ["avx2", "vmx"],
                "gpu": False}


def _place(ctx: Context, org_id: str, node_id: str, runtime: str, cpu: int, memory: int) -> None:
    now = datetime.now(UTC)
    with ctx.db.session() as s:
        app = repo.add(s, App(
            id=new_id(), name=f"{runtime}-app", health_check=HealthCheck(), redirect_https=False,
            runtime=runtime, organization_id=org_id, status=AppStatus.RUNNING, formation={},
            current_release_id=None, created_by=None, formation_error=None,
            created_at=now, updated_at=now), conflict="dup")
        release = repo.add(s, Release(
            id=new_id(), app_id=app.id, organization_id=org_id, version=1, slug_digest=None,
            image=None, stack=None, process_types={"web": "serve"}, slug_env={}, config={},
            health_check=HealthCheck(), description="", created_by=None,
            created_at=now, updated_at=now), conflict="dup")
        for desired in (DesiredState.RUNNING, DesiredState.STOPPED):
            repo.add(s, Instance(
                id=new_id(), app_id=app.id, organization_id=org_id, release_id=release.id,
                node_id=node_id, process_type="web",
                resources=Resources(cpu_millis=cpu, memory_bytes=memory), port=20000,
                desired_state=desired, state="running", created_at=now, updated_at=now),
                conflict="dup")


def test_registration_and_heartbeats_set_the_node_status(
    client: TestClient, org_a: Org, ctx: Context
) -> None:
    join = nodes.create_join_token(ctx, "test")
    r = client.post("/v1/agent/register", headers={"Authorization": f"Bearer {join}"}, json={
        "hostname": "worker-1", "capacity": {"cpu_millis": 4000, "memory_bytes": 8 * GIB},
        "runtimes": ["process", "microvm"], "kernel_version": "6.1.0-18-amd64",
        "capabilities": CAPABILITIES})
    assert r.status_code == 201, r.text
    node_h = {"Authorization": f"Bearer {r.json()['node_token']}"}
    shown = client.get("/v1/nodes/worker-1", headers=org_a.h()).json()
    assert shown["kernel_version"] == "6.1.0-18-amd64"
    assert shown["capabilities"] == CAPABILITIES
    assert shown["free"] == {"cpu_millis": 4000, "memory_bytes": 8 * GIB}
    assert "allocatable" not in shown
    # the smallest size is 125 milli-CPU and 128 MiB: CPU allows 32, memory 64
    assert (shown["microvm_capacity"], shown["microvm_used"]) == (32, 0)
    assert shown["network"] == {
        "public_ip": None, "wireguard_pubkey": None, "pod_cidr": None, "busy_ports": []}

    _place(ctx, org_a.id, shown["id"], "microvm", 500, 1 * GIB)
    _place(ctx, org_a.id, shown["id"], "process", 250, 2 * GIB)
    r = client.post("/v1/agent/heartbeat", headers=node_h, json={
        "capacity": {"cpu_millis": 4000, "memory_bytes": 8 * GIB}, "instances": [],
        "kernel_version": "6.1.0-19-amd64", "capabilities": {**CAPABILITIES, "gpu": True}})
    assert r.status_code == 200, r.text
    with ctx.db.session() as s:
        node = repo.require(s, Node, "node", hostname="worker-1")
    assert node.kernel_version == "6.1.0-19-amd64"  # rebooted into a new kernel
    assert node.capabilities.gpu is True
    # only instances meant to run reserve room; the list shows the same
    shown = client.get("/v1/nodes/worker-1", headers=org_a.h()).json()
    assert shown["free"] == {"cpu_millis": 3250, "memory_bytes": 5 * GIB}
    assert (shown["microvm_capacity"], shown["microvm_used"]) == (32, 1)
    listed = client.get("/v1/nodes", headers=org_a.h()).json()["items"]
    assert [(n["free"], n["microvm_used"]) for n in listed] == [(shown["free"], 1)]

    # a heartbeat that leaves the facts out keeps them
    r = client.post("/v1/agent/heartbeat", headers=node_h, json={"instances": []})
    assert r.status_code == 200, r.text
    shown = client.get("/v1/nodes/worker-1", headers=org_a.h()).json()
    assert shown["kernel_version"] == "6.1.0-19-amd64" and shown["capabilities"]["gpu"] is True


def test_a_node_without_the_microvm_runtime_has_no_microvm_room(
    client: TestClient, org_a: Org, ctx: Context
) -> None:
    reg = nodes.register(
        ctx, nodes.create_join_token(ctx, "t"), "worker-2",
        NodeCapacity(cpu_millis=4000, memory_bytes=8 * GIB), ["process"], {}, "0.1.0",
        "127.0.0.1")
    shown = client.get(f"/v1/nodes/{reg.node.id}", headers=org_a.h()).json()
    assert (shown["microvm_capacity"], shown["kernel_version"]) == (0, "")
    assert shown["free"] == shown["capacity"]
