"""A real `shellwego up` keeps its data directory to itself: nothing under it (database
and its WAL, keys, credentials, uploads, builds, slugs, Git repositories, Caddy's state)
is readable or writable by group or others, and the owner's password is never printed.
An older install's 0644/0755 files are fixed on the next start."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from e2e.conftest import EXAMPLES, Platform, running_platform
from shellwego.runtime.sandbox import Sandbox

INSTANCE_HOMES = (("agent", "instances"), ("oneoff", "state"))
# Unsandboxed instances (no bubblewrap) of another user reach their app directory by its
# host path: the directories on the way may then be search-only (0711), never listable.
SEARCH_ONLY_WITHOUT_SANDBOX = {".", "agent", "agent/instances", "oneoff", "oneoff/state"}


def tenant_tree(rel: tuple[str, ...]) -> bool:
    """The apps' own trees, which keep the modes the app's build gave them (0644/0755,
    owned by the instance user, who needs them): a release's slug, and an instance's
    writable layer. The directories holding them are private, so nobody else reaches
    them (the walk checks those)."""
    if len(rel) >= 3 and rel[0] in ("agent", "oneoff") and rel[1] == "slugs":
        return True
    if rel in (("agent", "network", "resolv.conf"), ("oneoff", "network", "resolv.conf")):
        return True  # instances' /etc/resolv.conf (bound read-only): nameservers, no secret
    return len(rel) >= 4 and rel[:2] in INSTANCE_HOMES and rel[3] in ("app", "upper", "work")


def allowed(rel: tuple[str, ...], is_dir: bool, unsandboxed: bool) -> int:
    """The group/other bits a path may have: search-only on the way to an unsandboxed
    instance's app directory (an instance's own directory included), nothing else."""
    if not (unsandboxed and is_dir):
        return 0
    on_the_way = ("/".join(rel) or ".") in SEARCH_ONLY_WITHOUT_SANDBOX
    return 0o011 if on_the_way or (len(rel) == 3 and rel[:2] in INSTANCE_HOMES) else 0


def exposed(data_dir: Path) -> list[str]:
    """Everything under ``data_dir`` (itself included) that group or others may read,
    write or enter, the listed exceptions aside."""
    unsandboxed = Sandbox.detect().binary is None
    found = []
    for root, _dirs, files in os.walk(data_dir):
        for path in [Path(root), *(Path(root, name) for name in files)]:
            rel = path.relative_to(data_dir).parts
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode) or tenant_tree(rel):
                continue
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077 & ~allowed(rel, stat.S_ISDIR(st.st_mode), unsandboxed):
                found.append(f"{oct(mode)} {'/'.join(rel) or '.'}")
    return sorted(found)


def deploy_everything(p: Platform, tmp: Path) -> None:
    """An upload (build, slug, artifact), a git push (repository), a one-off command."""
    p.cli("apps", "create", "site")
    p.cli("deploy", str(EXAMPLES / "static-site"), "-a", "site")
    p.wait_for("site", "Hello from a static site")
    src = tmp / "src"
    subprocess.run(["cp", "-r", str(EXAMPLES / "static-site"), str(src)], check=True)
    git = ["git", "-c", "user.email=dev@example.com", "-c", "user.name=Dev"]
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "first"]):
        subprocess.run([*git, *args], cwd=src, check=True)
    p.cli("apps", "create", "pushed")
    token = json.loads((p.home / "cli" / "config.json").read_text())["token"]
    url = f"http://user:{token}@127.0.0.1:{p.api_port}/git/pushed.git"
    push = subprocess.run([*git, "push", url, "main"], cwd=src, capture_output=True, text=True)
    assert push.returncode == 0, push.stderr
    p.wait_for("pushed", "Hello from a static site")
    assert "index.html" in p.cli("run", "-a", "site", "--", "ls").stdout


def credentials(p: Platform) -> dict[str, str]:
    text = (p.data_dir / "credentials.txt").read_text()
    return dict(line.split(": ", 1) for line in text.splitlines())


def test_nothing_under_the_data_dir_is_for_anyone_else(tmp_path: Path) -> None:
    with running_platform(tmp_path / "home", "25100-25199") as p:
        deploy_everything(p, tmp_path)
        found = exposed(p.data_dir)
        names = {q.relative_to(p.data_dir).as_posix() for q in p.data_dir.rglob("*")}
        password = credentials(p)["password"]
        announced = "".join(p.output)
    # what the walk must have seen for it to mean anything
    for expected in (
        "shellwego.db",
        "shellwego.db-wal",
        "shellwego.db-shm",
        "master.key",
        "credentials.txt",
        "join-token",
        "caddy",
        "artifacts",
        "git",
        "tmp",
        "agent/slugs",
        "oneoff/slugs",
    ):
        assert expected in names, f"{expected} is missing: the walk proves nothing"
    assert found == []
    # the password is only in the 0600 credentials file: never on stdout or stderr
    assert password not in announced
    assert str(p.data_dir / "credentials.txt") in announced


def test_an_older_install_is_made_private_on_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_platform(home, "25200-25299") as p:
        p.cli("apps", "create", "site")
        p.cli("deploy", str(EXAMPLES / "static-site"), "-a", "site")
        p.wait_for("site", "Hello from a static site")
        data_dir = p.data_dir
    # what an install made before this change left: 0755 directories, 0644 files
    for root, _dirs, files in os.walk(data_dir):
        os.chmod(root, 0o755)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(0o755 if os.access(path, os.X_OK) else 0o644)
    assert exposed(data_dir) != []
    with running_platform(home, "25200-25299") as p:
        p.wait_for("site", "Hello from a static site")
        found = exposed(p.data_dir)
        output = "".join(p.output)
    assert found == []
    assert credentials(p)["password"] not in output
