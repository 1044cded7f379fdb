"""Two control-plane replicas (two data directories) on one PostgreSQL database, sharing
an S3 artifact store (moto's server): a slug built through one is served to agents
through the other, and either takes git pushes of the same app."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from shellwego.build.s3 import S3ArtifactStore
from shellwego.clock import SystemClock
from shellwego.models import NodeCapacity
from shellwego.services import nodes
from shellwego.services.bootstrap import build_context
from shellwego.services.context import Context
from shellwego.settings import Settings

from .test_git import SITE, Server, bootstrapped, create_app_with_no_web, git, make_repo, serving

GIB = 1024**3


@pytest.fixture
def replicas(
    tmp_path: Path, pg_database: str, s3_endpoint: str, s3_bucket: str
) -> Iterator[tuple[Context, Context]]:
    key = base64.b64encode(os.urandom(32)).decode()
    contexts = []
    for name in ("a", "b"):
        settings = Settings.from_env(
            {
                "SHELLWEGO_ARTIFACT_STORE": f"s3://{s3_bucket}/cluster",
                "SHELLWEGO_S3_ENDPOINT": s3_endpoint,
            },
            data_dir=tmp_path / name,
            database_url=pg_database,
            master_key=key,
        )
        contexts.append(build_context(settings, clock=SystemClock(), migrate=False))
    one, two = contexts
    one.db.reset()
    yield one, two
    one.db.reset()
    for ctx in contexts:
        ctx.db.dispose()


def remote(port: int, app: str, token: str) -> str:
    return f"http://x:{token}@127.0.0.1:{port}/git/{app}.git"


def test_any_replica_serves_any_push_and_artifact(
    replicas: tuple[Context, Context], tmp_path: Path
) -> None:
    ctx_a, ctx_b = replicas
    # the rollout loop runs on one replica (its leader); both serve the API and git
    with serving(ctx_a) as port_a, serving(ctx_b, rollout=False) as port_b:
        a: Server = bootstrapped(port_a)
        assert isinstance(ctx_b.artifacts, S3ArtifactStore)
        create_app_with_no_web(a, "site")

        # a push through A builds and deploys v1
        repo = make_repo(tmp_path / "site", SITE)
        pushed = git(repo, "push", remote(port_a, "site", a.owner), "main")
        assert "remote: -----> Released v1" in pushed.stderr, pushed.stderr
        assert "remote: -----> Deployed:" in pushed.stderr, pushed.stderr
        releases = a.api("GET", "/v1/apps/site/releases").json()["items"]
        digest = releases[0]["slug_digest"]
        assert digest and len(digest) == 64

        # an agent attached to B fetches the slug A built
        join = nodes.create_join_token(ctx_b, "t")
        reg = nodes.register(
            ctx_b,
            join,
            "node-b",
            NodeCapacity(cpu_millis=1000, memory_bytes=GIB),
            ["process"],
            {},
            "test",
            "127.0.0.1",
        )
        assert isinstance(ctx_b.artifacts, S3ArtifactStore)
        assert not ctx_b.artifacts.cache.exists(digest)
        got = httpx.get(
            f"http://127.0.0.1:{port_b}/v1/agent/artifacts/{digest}",
            headers={"Authorization": f"Bearer {reg.node_token}"},
            timeout=30,
        )
        assert got.status_code == 200, got.text
        assert hashlib.sha256(got.content).hexdigest() == digest
        missing = httpx.get(
            f"http://127.0.0.1:{port_b}/v1/agent/artifacts/{'0' * 64}",
            headers={"Authorization": f"Bearer {reg.node_token}"},
            timeout=30,
        )
        assert missing.status_code == 404
        assert missing.json()["type"].endswith("artifact-missing")

        # B has never seen the repository: it sees what was pushed through A
        head = git(repo, "rev-parse", "HEAD").stdout.strip()
        listed = git(repo, "ls-remote", remote(port_b, "site", a.owner)).stdout
        assert f"{head}\trefs/heads/main" in listed

        # a push through B, on top of A's: a fast-forward there, and v2
        (repo / "index.html").write_text("<h1>through b</h1>\n")
        git(repo, "commit", "--quiet", "-am", "second")
        pushed = git(repo, "push", remote(port_b, "site", a.owner), "main")
        assert "remote: -----> Released v2" in pushed.stderr, pushed.stderr

        # and back through A, whose own copy is now behind
        (repo / "index.html").write_text("<h1>through a again</h1>\n")
        git(repo, "commit", "--quiet", "-am", "third")
        pushed = git(repo, "push", remote(port_a, "site", a.owner), "main")
        assert "remote: -----> Released v3" in pushed.stderr, pushed.stderr
        head = git(repo, "rev-parse", "HEAD").stdout.strip()
        for port in (port_a, port_b):
            listed = git(repo, "ls-remote", remote(port, "site", a.owner)).stdout
            assert f"{head}\trefs/heads/main" in listed

        # a clone through B has all of it
        clone = git(tmp_path, "clone", "--quiet", remote(port_b, "site", a.viewer), "copy")
        assert clone.returncode == 0
        assert (tmp_path / "copy" / "index.html").read_text() == "<h1>through a again</h1>\n"
        versions = [r["version"] for r in a.api("GET", "/v1/apps/site/releases").json()["items"]]
        assert sorted(versions) == [1, 2, 3]


def test_racing_pushes_through_two_replicas_never_diverge(
    replicas: tuple[Context, Context], tmp_path: Path
) -> None:
    """Two developers push different commits on the same base at once, one through each
    replica: one push wins, the other is refused before it builds anything (its base
    moved), and both replicas then show the winner's commit."""
    ctx_a, ctx_b = replicas
    with serving(ctx_a) as port_a, serving(ctx_b, rollout=False) as port_b:
        a: Server = bootstrapped(port_a)
        create_app_with_no_web(a, "race")
        base = make_repo(tmp_path / "base", SITE)
        git(base, "push", remote(port_a, "race", a.owner), "main")
        clones = {}
        for name, port in (("a", port_a), ("b", port_b)):
            work = tmp_path / f"dev-{name}"
            git(tmp_path, "clone", "--quiet", remote(port, "race", a.owner), work.name)
            (work / "index.html").write_text(f"<h1>{name}</h1>\n")
            git(work, "commit", "--quiet", "-am", f"change {name}")
            clones[name] = (work, port)

        with ThreadPoolExecutor(2) as pool:
            futures = {
                name: pool.submit(
                    git, repo, "push", remote(port, "race", a.owner), "main", check=False
                )
                for name, (repo, port) in clones.items()
            }
            results = {name: f.result() for name, f in futures.items()}
        won = [name for name, r in results.items() if r.returncode == 0]
        assert len(won) == 1, {n: r.stderr[-600:] for n, r in results.items()}
        [winner] = won
        [loser] = set(results) - {winner}
        refused = results[loser].stderr
        assert any(
            why in refused
            for why in ("moved while this push was on its way", "fetch first", "non-fast-forward")
        ), refused
        head = git(clones[winner][0], "rev-parse", "HEAD").stdout.strip()
        for port in (port_a, port_b):
            listed = git(base, "ls-remote", remote(port, "race", a.owner)).stdout
            assert f"{head}\trefs/heads/main" in listed, listed
        versions = [r["version"] for r in a.api("GET", "/v1/apps/race/releases").json()["items"]]
        assert sorted(versions) == [1, 2]
