"""A one-off ``run`` sees its release's slug and environment and nothing of the
platform's data directory: not the master key, not the database, not other slugs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shellwego.settings import Settings

from .conftest import Cli, api_get

SECRET = "platform-secret-4f1e"


@pytest.fixture
def settings(sqlite_template: Path) -> Iterator[Settings]:
    """The data directory, database inside, outside /tmp (which the sandbox replaces)."""
    base = Path(tempfile.mkdtemp(prefix="shellwego-data-", dir="/var/tmp"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir()
    database = data / "shellwego.db"
    shutil.copyfile(sqlite_template, database)
    try:
        yield Settings.from_env({}, data_dir=data, database_url=f"sqlite:///{database}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_one_off_command_cannot_read_the_platform_data(logged_in: Cli) -> None:
    data = logged_in.api.ctx.settings.data_dir
    (data / "plans.txt").write_text(SECRET)
    (data / "plans.txt").chmod(0o644)  # readable by anyone who can see it
    assert logged_in("apps", "create", "hello").exit_code == 0
    assert logged_in("config", "set", "GREETING=hi", "-a", "hello").exit_code == 0
    (logged_in.workdir / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    (logged_in.workdir / "motd.txt").write_text("from the slug\n")
    assert logged_in("scale", "web=0", "-a", "hello").exit_code == 0
    r = logged_in("deploy")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert {"master.key", "shellwego.db", "artifacts"} <= {p.name for p in data.iterdir()}

    # the release's environment and slug are there
    r = logged_in("run", "-a", "hello", "--", "sh", "-c", 'echo "$GREETING"; cat motd.txt')
    assert (r.exit_code, r.stdout) == (0, "hi\nfrom the slug\n"), r.stderr

    # the data directory is not
    for name in ("master.key", "shellwego.db", "plans.txt", "artifacts"):
        r = logged_in("run", "-a", "hello", "--", "cat", str(data / name))
        assert r.exit_code == 1, (name, r.stdout)
        assert "No such file or directory" in r.stdout
        assert SECRET not in r.stdout
    r = logged_in("run", "-a", "hello", "--", "ls", "-A", str(data))
    assert r.exit_code == 0 and r.stdout.split() == []  # the command's app is at /app
    if os.geteuid() == 0:
        r = logged_in("run", "-a", "hello", "--", "id", "-u")  # the app's own uid
        uid = api_get(logged_in.api, "/v1/apps/hello")["uid"]
        assert (r.exit_code, r.stdout) == (0, f"{uid}\n")
