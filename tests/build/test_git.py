"""git push deploys against a real API server (uvicorn in a thread) and real git."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from shellwego.api import create_app
from shellwego.api.routes import git as git_routes
from shellwego.controllers import loops
from shellwego.services.context import Context

from .helpers import write

PASSWORD = "correct horse battery staple"


def equip(ctx: Context) -> None:
    try:
        from shellwego.roles.server import equip as server_equip
    except ImportError:
        from shellwego.build.artifacts import LocalArtifactStore as ArtifactStore
        from shellwego.build.builder import Builder

        (ctx.settings.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
        ctx.artifacts = ArtifactStore(ctx.settings.data_dir / "artifacts")
        ctx.builder = Builder(ctx.settings.data_dir / "cache" / "build")
    else:
        server_equip(ctx)


@dataclass
class Server:
    url: str
    port: int
    owner: str
    viewer: str
    outsider: str

    def api(self, method: str, path: str, token: str | None = None, **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.owner}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(ctx: Context, *, rollout: bool = True) -> Iterator[int]:
    """The API with git routes (and, with ``rollout``, the rollout loop) of ``ctx`` on a
    port of its own, in a thread; yields the port."""
    equip(ctx)
    app = create_app(ctx, extra_routers=(git_routes,))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    uv.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    stop = threading.Event()
    errors: list[BaseException] = []

    async def main() -> None:
        await ctx.bus.start()
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(uv.serve())]
        if rollout:
            tasks.append(asyncio.create_task(loops.rollout_loop(ctx, stopping, interval=0.2)))
        while not stop.is_set() and not tasks[0].done():
            await asyncio.sleep(0.05)
        stopping.set()
        uv.should_exit = True
        await ctx.bus.close()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=thread_main, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert not errors, errors
        assert time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.02)
    try:
        yield uv.servers[0].sockets[0].getsockname()[1]
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors


@pytest.fixture
def server(ctx: Context) -> Iterator[Server]:
    with serving(ctx) as port:
        yield bootstrapped(port)


def bootstrapped(port: int) -> Server:
    """The first owner and organization (org-a), a viewer, and the owner's token for a
    second organization (an outsider to org-a's apps)."""
    url = f"http://127.0.0.1:{port}"
    r = httpx.post(
        f"{url}/v1/bootstrap",
        json={
            "user": {"email": "owner@a.example", "password": PASSWORD, "name": "Owner"},
            "organization": {"name": "Org A", "slug": "org-a"},
        },
    )
    assert r.status_code == 201, r.text
    owner = r.json()["token"]["token"]
    r = httpx.post(
        f"{url}/v1/organizations/org-a/members",
        headers={"Authorization": f"Bearer {owner}"},
        json={"email": "viewer@a.example", "role": "viewer", "password": PASSWORD},
    )
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{url}/v1/auth/token",
        json={"email": "viewer@a.example", "password": PASSWORD, "organization": "org-a"},
    )
    assert r.status_code == 201, r.text
    viewer = r.json()["token"]
    r = httpx.post(
        f"{url}/v1/organizations",
        headers={"Authorization": f"Bearer {owner}"},
        json={"name": "Org B", "slug": "org-b"},
    )
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{url}/v1/auth/token",
        json={"email": "owner@a.example", "password": PASSWORD, "organization": "org-b"},
    )
    assert r.status_code == 201, r.text
    outsider = r.json()["token"]  # a valid token, but for another organization
    return Server(url=url, port=port, owner=owner, viewer=viewer, outsider=outsider)


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Dev",
        "GIT_AUTHOR_EMAIL": "dev@example.com",
        "GIT_COMMITTER_NAME": "Dev",
        "GIT_COMMITTER_EMAIL": "dev@example.com",
    }
    proc = subprocess.run(
        ["git", "-c", "credential.helper=", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def make_repo(path: Path, files: dict[str, str]) -> Path:
    write(path, files)
    git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", "first")
    return path


def create_app_with_no_web(server: Server, name: str) -> None:
    r = server.api("POST", "/v1/apps", json={"name": name})
    assert r.status_code == 201, r.text
    # no instances to start: the deployment succeeds without an agent
    r = server.api("PATCH", f"/v1/apps/{name}/formation", json={"web": 0})
    assert r.status_code == 200, r.text


def remote(server: Server, app: str, token: str) -> str:
    return f"http://x:{token}@127.0.0.1:{server.port}/git/{app}.git"


SITE = {"index.html": "<h1>pushed</h1>\n", "Procfile": "web: python3 -m http.server $PORT\n"}


def test_push_builds_releases_and_deploys(server: Server, tmp_path: Path) -> None:
    create_app_with_no_web(server, "site")
    # a pack above git's post buffer goes up chunked, without a Content-Length
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "blob.bin").write_bytes(os.urandom(1536 * 1024))
    repo = make_repo(tmp_path / "site", SITE)
    pushed = git(repo, "push", remote(server, "site", server.owner), "main")
    out = pushed.stderr
    assert "remote: -----> Deploying main" in out
    assert "remote: -----> Static site detected" in out
    assert "remote: -----> Released v1" in out
    assert "remote: -----> Deployed: http://site.localhost" in out
    releases = server.api("GET", "/v1/apps/site/releases").json()["items"]
    assert [r["version"] for r in releases] == [1]
    assert releases[0]["stack"] == "static"
    assert releases[0]["process_types"] == {"web": "python3 -m http.server $PORT"}
    # the branch moved on the server
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    listed = git(repo, "ls-remote", remote(server, "site", server.owner)).stdout
    assert f"{head}\trefs/heads/main" in listed

    # another branch is accepted without deploying
    git(repo, "checkout", "--quiet", "-b", "feature")
    (repo / "index.html").write_text("<h1>feature</h1>\n")
    git(repo, "commit", "--quiet", "-am", "feature")
    pushed = git(repo, "push", remote(server, "site", server.owner), "feature")
    assert "feature: accepted, not deployed" in pushed.stderr
    releases = server.api("GET", "/v1/apps/site/releases").json()["items"]
    assert [r["version"] for r in releases] == [1]

    # and a clone (read access) gets what was pushed
    clone = git(tmp_path, "clone", "--quiet", remote(server, "site", server.viewer), "copy")
    assert clone.returncode == 0
    assert (tmp_path / "copy" / "index.html").read_text() == "<h1>pushed</h1>\n"
    assert (tmp_path / "copy" / "blob.bin").read_bytes() == (repo / "blob.bin").read_bytes()


def test_failing_build_rejects_the_push(server: Server, tmp_path: Path) -> None:
    create_app_with_no_web(server, "broken")
    repo = make_repo(tmp_path / "broken", {"README.md": "nothing to run here\n"})
    pushed = git(repo, "push", remote(server, "broken", server.owner), "main", check=False)
    assert pushed.returncode != 0
    assert "remote: !      Deploy failed: no supported app found" in pushed.stderr
    assert "pre-receive hook declined" in pushed.stderr
    listed = git(repo, "ls-remote", remote(server, "broken", server.owner)).stdout
    assert "refs/heads/main" not in listed
    assert server.api("GET", "/v1/apps/broken/releases").json()["items"] == []


def test_auth_and_access(server: Server, tmp_path: Path) -> None:
    create_app_with_no_web(server, "guarded")
    repo = make_repo(tmp_path / "guarded", SITE)

    pushed = git(repo, "push", remote(server, "guarded", "swg_wrong"), "main", check=False)
    assert pushed.returncode != 0
    assert "Authentication failed" in pushed.stderr

    info = f"{server.url}/git/guarded.git/info/refs?service=git-receive-pack"
    r = httpx.get(info)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="ShellWeGo"'
    bad = base64.b64encode(b"x:swg_not_a_real_token").decode()
    r = httpx.get(info, headers={"Authorization": f"Basic {bad}"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="ShellWeGo"'

    # a viewer may read but not push
    r = httpx.get(info, auth=("x", server.viewer))
    assert r.status_code == 403
    read = f"{server.url}/git/guarded.git/info/refs?service=git-upload-pack"
    r = httpx.get(read, auth=("x", server.viewer))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-git-upload-pack-advertisement"
    pushed = git(repo, "push", remote(server, "guarded", server.viewer), "main", check=False)
    assert pushed.returncode != 0
    r = httpx.post(
        f"{server.url}/git/guarded.git/git-receive-pack",
        auth=("x", server.viewer),
        content=b"0000",
        headers={"Content-Type": "application/x-git-receive-pack-request"},
    )
    assert r.status_code == 403

    # no way out of the repository
    r = httpx.get(
        f"{server.url}/git/guarded.git/info/%2e%2e/%2e%2e/config", auth=("x", server.owner)
    )
    assert r.status_code == 404

    # another organization's token, or an unknown app: not found
    r = httpx.get(info, auth=("x", server.outsider))
    assert r.status_code == 404
    r = httpx.get(
        f"{server.url}/git/nope.git/info/refs?service=git-receive-pack", auth=("x", server.owner)
    )
    assert r.status_code == 404
    assert server.api("GET", "/v1/apps/guarded/releases").json()["items"] == []
