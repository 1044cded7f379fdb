"""A control plane on a real database with two nodes and scripted agents.

The agents' side is played by the heartbeat service the real agent calls: a test decides
which releases report healthy and which nodes stay silent. The real agent and runtime are
covered by the agent and end-to-end tests; this is the control-plane logic above them.
"""

from __future__ import annotations

from shellwego.clock import FrozenClock
from shellwego.controllers import rollout
from shellwego.models import (
    App,
    AppCreate,
    Deployment,
    DeployPolicy,
    DesiredState,
    Instance,
    Node,
    NodeCapacity,
    OrganizationCreate,
    Release,
    UserCreate,
)
from shellwego.services import agents, apps, auth, deployments, nodes
from shellwego.services.context import Context, Principal
from shellwego.services.edges import route_table
from shellwego.store import repository as repo
from support.releases import slug_release

GIB = 1024**3
REGIONS = ("us", "eu")  # node-0 is in us, node-1 in eu


class World:
    def __init__(self, ctx: Context, clock: FrozenClock) -> None:
        self.ctx, self.clock = ctx, clock
        boot = auth.bootstrap(
            ctx,
            UserCreate(email="o@example.com", name="O", password="a long enough password"),
            OrganizationCreate(name="O", slug="o"),
        )
        self.who: Principal = auth.authenticate(ctx, boot.token.secret)
        join = nodes.create_join_token(ctx, "t")
        self.node_ids: dict[str, str] = {}
        for n, region in enumerate(REGIONS):
            reg = nodes.register(
                ctx,
                join,
                f"node-{n}",
                NodeCapacity(cpu_millis=8000, memory_bytes=16 * GIB),
                ["process"],
                {"region": region},
                "test",
                f"10.0.0.{n + 1}",
            )
            self.node_ids[f"node-{n}"] = reg.node.id
        self.app_id = apps.create(ctx, self.who, AppCreate(name="web")).id
        self.healthy_releases: set[int] = set()  # versions whose instances report healthy
        self.silent: set[str] = set()  # node ids whose agents stopped heartbeating
        # instance ids whose processes still run after being asked to stop (their agents
        # keep listing them as running until they are removed from this set)
        self.lingering: set[str] = set()
        # ports of a node's host held by programs that are not instances: an instance
        # given one reports that it cannot start (node id → ports)
        self.taken_ports: dict[str, set[int]] = {}

    def release(
        self, web: str = "serve", policy: DeployPolicy | None = None, app_id: str | None = None
    ) -> tuple[int, str]:
        with self.ctx.db.session() as s:
            app = repo.require(s, App, "app", id=app_id or self.app_id)
            rel = slug_release(self.ctx, s, self.who, app, {"web": web, "worker": "work"})
            dep = deployments.start(
                self.ctx,
                s,
                self.who,
                app,
                rel,
                reason="test",
                surge=policy.surge if policy else None,
                max_unavailable=policy.max_unavailable if policy else None,
            )
            return rel.version, dep.id

    def instances(self, app_id: str | None = None) -> list[Instance]:
        with self.ctx.db.session() as s:
            return repo.find_all(
                s, Instance, app_id=app_id or self.app_id, desired_state=DesiredState.RUNNING.value
            )

    def live(self) -> list[tuple[int, bool, bool]]:
        """(release version, healthy, draining) of every instance meant to run."""
        with self.ctx.db.session() as s:
            versions = {r.id: r.version for r in repo.find_all(s, Release)}
        return sorted(
            (versions[i.release_id], i.healthy, i.drain_started_at is not None)
            for i in self.instances()
        )

    def serving(self) -> list[int]:
        """Versions the edge would route to: healthy web instances not draining."""
        return [v for v, healthy, draining in self.live() if healthy and not draining]

    def placed_on(self, app_id: str | None = None) -> list[str]:
        """Node names of the app's serving instances (draining ones left out), sorted."""
        names = {nid: name for name, nid in self.node_ids.items()}
        return sorted(
            names[i.node_id] for i in self.instances(app_id) if i.drain_started_at is None
        )

    def upstreams(self, app: str = "web") -> list[str]:
        """Addresses the edge routes ``app`` to, from the route table it would load."""
        table = route_table(self.ctx)
        return sorted(u.address for r in table.routes if r.app_name == app for u in r.upstreams)

    def agents_report(self) -> None:
        """Every node not silent heartbeats: instances of healthy releases are up."""
        with self.ctx.db.session() as s:
            versions = {r.id: r.version for r in repo.find_all(s, Release)}
            all_nodes = repo.find_all(s, Node)
            rows = [
                i
                for i in repo.find_all(s, Instance)
                if i.desired_state == DesiredState.RUNNING or i.id in self.lingering
            ]
        for node in all_nodes:
            if node.id in self.silent:
                continue
            mine = [i for i in rows if i.node_id == node.id]
            taken = self.taken_ports.get(node.id, set())
            body = agents.Heartbeat(
                instances=[
                    agents.ObservedInstance(
                        instance_id=i.id,
                        state="running",
                        healthy=versions[i.release_id] in self.healthy_releases,
                        port=i.port,
                    )
                    if i.port not in taken
                    else agents.ObservedInstance(
                        instance_id=i.id,
                        state="exited",
                        port=i.port,
                        last_error=f"port {i.port} is already in use on this host",
                        error_code="port-in-use",
                    )
                    for i in mine
                ]
            )
            agents.heartbeat(self.ctx, node, body)

    def step(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        self.agents_report()
        rollout.pass_once(self.ctx)

    def deployment(self, dep_id: str) -> Deployment:
        return deployments.status_of(self.ctx, dep_id)

    def events(self, kind: str) -> list[str]:
        page = deployments.events_page(self.ctx, self.who, "web", None, 500)
        return [e.message for e in page.items if e.type == kind]
