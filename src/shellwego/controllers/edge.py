"""Edge sync: renders every app's hostnames → healthy instances and loads it into Caddy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from shellwego.edge.certificates import certificate_for
from shellwego.edge.render import storage_root
from shellwego.edge.routes import RouteTable
from shellwego.models import Domain, DomainStatus, TlsStatus
from shellwego.services.context import Context
from shellwego.services.edges import RECHECK_SECONDS, tables
from shellwego.store import repository as repo

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.05


def record_certificates(ctx: Context, storage: Path) -> None:
    """Copy certificate state (issuer, expiry) from the edge's storage onto active domains."""
    with ctx.db.session() as s:
        for domain in repo.find_all(s, Domain, status=DomainStatus.ACTIVE.value):
            cert = certificate_for(storage, domain.hostname)
            if cert is not None and cert != domain.certificate:
                domain.certificate = cert
                domain.tls_status = TlsStatus.ACTIVE
                domain.updated_at = ctx.clock.now()


async def run(ctx: Context, caddy: Any, stop: asyncio.Event) -> None:
    """Keep Caddy's table equal to the database's, reloading only on change."""
    last: RouteTable | None = None
    # subscribed for the whole run: a change notified during a pass runs the next one
    with ctx.bus.subscribe("edge") as wake:
        while not stop.is_set():
            try:
                # the read edge nodes' blocking queries share: one per change
                table = (await tables(ctx).get(max_age=RECHECK_SECONDS)).value.table
                if table != last:
                    await caddy.apply(table)
                    last = table
                    ctx.edge_table = table
                    ctx.bus.notify("edge-applied")
                await run_in_threadpool(record_certificates, ctx, storage_root(caddy.settings))
            except Exception:  # keep serving the last good table; retry on the next pass
                log.exception("edge sync failed")
            with contextlib.suppress(Exception):
                if await wake.wait(RECHECK_SECONDS):
                    # coalesce a burst of changes (a rollout step touches several
                    # instances) into one reload: every reload closes Caddy's idle
                    # keep-alive connections
                    await asyncio.sleep(COALESCE_SECONDS)


def serves(ctx: Context, app_name: str, addresses: set[str]) -> bool:
    """True when the edge's loaded table routes ``app_name`` to all of ``addresses``."""
    table = ctx.edge_table
    if table is None:
        return True  # no edge in this process: nothing to wait for
    for route in table.routes:
        if route.app_name == app_name:
            return addresses <= {u.address for u in route.upstreams}
    return False
