"""Committed placements: 10,000 instances onto 1,000 nodes, through the control plane's
placement service into a real database (PostgreSQL by default).

Each batch runs the whole path a deploy takes: lock the nodes, snapshot nodes and live
instances, plan, verify against the snapshot, pick ports, insert the instance rows, bump
the nodes' assignment indexes, commit. Prints placements per second overall and for the
first and last 10% of the batches (empty cluster, nearly full cluster).

Run: .venv/bin/python bench/placement_commit_bench.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
     [--batch 500] [--sqlite]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from shellwego.models import AppCreate, NodeCapacity, OrganizationCreate, Resources, UserCreate
from shellwego.services import apps, auth, nodes, placement, releases
from shellwego.services.bootstrap import build_context
from shellwego.services.context import Context, Principal
from shellwego.settings import Settings

GIB = 1024**3
MIB = 1024**2
NODES = 1_000
INSTANCES = 10_000
APPS = 20


def setup(ctx: Context) -> tuple[Principal, list[tuple[str, str]]]:
    boot = auth.bootstrap(
        ctx,
        UserCreate(email="bench@example.com", name="Bench", password="benchmark password"),
        OrganizationCreate(name="Bench", slug="bench"),
    )
    who = auth.authenticate(ctx, boot.token.secret)
    join = nodes.create_join_token(ctx, "bench")
    for n in range(NODES):
        nodes.register(
            ctx,
            join,
            f"node-{n:04d}",
            NodeCapacity(cpu_millis=16_000, memory_bytes=32 * GIB),
            ["process"],
            {},
            "bench",
            f"10.0.{n // 250}.{n % 250 + 1}",
        )
    targets = []
    for a in range(APPS):
        app = apps.create(ctx, who, AppCreate(name=f"app-{a:02d}"))
        with ctx.db.session() as s:
            row = apps.find(s, who.organization_id, app.id)
            rel = releases.create(
                ctx,
                s,
                who,
                row,
                artifact=releases.Artifact(
                    slug_digest="0" * 64, stack="python", process_types={"web": "app"}, slug_env={}
                ),
                description="bench",
            )
            targets.append((row.id, rel.id))
    return who, targets


def run(ctx: Context, targets: list[tuple[str, str]], batch: int) -> list[float]:
    from shellwego.models import App, Release
    from shellwego.store import repository as repo

    durations = []
    placed = 0
    i = 0
    while placed < INSTANCES:
        app_id, release_id = targets[i % len(targets)]
        i += 1
        count = min(batch, INSTANCES - placed)
        started = time.perf_counter()
        with ctx.db.session() as s:
            app = repo.require(s, App, "app", id=app_id)
            release = repo.require(s, Release, "release", id=release_id)
            made = placement.place(
                ctx,
                s,
                app,
                release,
                "web",
                count,
                Resources(cpu_millis=500, memory_bytes=512 * MIB),
                deployment_id=None,
            )
            assert len(made) == count
        durations.append(time.perf_counter() - started)
        placed += count
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--sqlite", action="store_true", help="use an SQLite file instead")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="swg-bench-"))
    name = f"shellwego_bench_{uuid.uuid4().hex[:8]}"
    if args.sqlite:
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = args.url.rsplit("/", 1)[0] + f"/{name}"
    ctx = build_context(Settings.from_env({}, data_dir=tmp, database_url=url))
    try:
        _, targets = setup(ctx)
        durations = run(ctx, targets, args.batch)
    finally:
        ctx.db.dispose()
        if not args.sqlite:
            with psycopg.connect(args.url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    total = sum(durations)
    tenth = max(len(durations) // 10, 1)
    first = args.batch * tenth / sum(durations[:tenth])
    last = args.batch * tenth / sum(durations[-tenth:])
    backend = "sqlite" if args.sqlite else "postgresql"
    print(
        f"committed placements ({backend}): {INSTANCES:,} instances on {NODES:,} nodes, "
        f"batches of {args.batch}"
    )
    print(f"  overall                {INSTANCES / total:>10,.0f} placements/s ({total:.2f} s)")
    print(f"  first 10% of batches   {first:>10,.0f} placements/s")
    print(f"  last 10% of batches    {last:>10,.0f} placements/s")


if __name__ == "__main__":
    main()
