"""A platform on a real database for the edge controller: an organization (through the API),
a node, apps with a release, instances in every state an agent can report, and domains
verified against a real DNS server."""

from __future__ import annotations

from shellwego.models import (
    App,
    DesiredState,
    Instance,
    NodeCapacity,
    Release,
    new_id,
)
from shellwego.models.values import Resources
from shellwego.services import auth, nodes
from shellwego.services.context import Context
from shellwego.store import repository as repo
from support.dns_server import DnsServer
from support.releases import slug_release

from .realparts import Api


class World:
    def __init__(self, ctx: Context, api: Api, dns: DnsServer, node_address: str) -> None:
        self.ctx, self.api, self.dns = ctx, api, dns
        self.who = auth.authenticate(ctx, api.token)
        join = nodes.create_join_token(ctx, "edge-test")
        self.node = nodes.register(
            ctx,
            join,
            "node-1",
            NodeCapacity(cpu_millis=4000, memory_bytes=8 << 30),
            ["process"],
            {},
            "test",
            node_address,
        ).node

    def app(self, name: str) -> tuple[str, str]:
        """A new app with one release: (app id, release id)."""
        app_id = self.api.ok("POST", "/v1/apps", json={"name": name})["id"]
        with self.ctx.db.session() as s:
            app = repo.require(s, App, "app", id=app_id)
            release = slug_release(
                self.ctx, s, self.who, app, {"web": "serve", "worker": "work"}
            )
            return app_id, release.id

    def instance(
        self,
        app_release: tuple[str, str],
        port: int,
        *,
        healthy: bool = True,
        draining: bool = False,
        process_type: str = "web",
        desired: DesiredState = DesiredState.RUNNING,
    ) -> None:
        """An instance as the agent reported it."""
        app_id, release_id = app_release
        now = self.ctx.clock.now()
        with self.ctx.db.session() as s:
            release = repo.require(s, Release, "release", id=release_id)
            repo.add(
                s,
                Instance(
                    id=new_id(),
                    app_id=app_id,
                    organization_id=release.organization_id,
                    release_id=release_id,
                    node_id=self.node.id,
                    process_type=process_type,
                    resources=Resources(),
                    port=port,
                    desired_state=desired,
                    state="running",
                    healthy=healthy,
                    restarts=0,
                    exit_code=None,
                    pid=None,
                    last_error=None,
                    observed_at=now,
                    healthy_at=now if healthy else None,
                    drain_started_at=now if draining else None,
                    deployment_id=None,
                    created_at=now,
                    updated_at=now,
                ),
                conflict="instance exists",
            )

    def domain(self, hostname: str, app: str, *, verified: bool) -> dict[str, str]:
        """A custom domain; with ``verified`` its TXT record is published and checked."""
        domain = self.api.ok("POST", "/v1/domains", json={"hostname": hostname, "app": app})
        if verified:
            txt = next(d for d in domain["dns"] if d["record_type"] == "TXT")
            self.dns.publish("TXT", txt["name"], txt["value"])
            domain = self.api.ok("POST", f"/v1/domains/{hostname}/actions/verify")
            assert domain["status"] == "active", domain
        return dict(domain)
