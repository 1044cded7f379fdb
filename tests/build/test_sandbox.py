"""Build steps run the app's own install code: under bubblewrap they cannot see the
platform's data (hidden paths), while the build itself still works."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from shellwego.build.builder import CACHE_MOUNT, Builder
from shellwego.runtime.sandbox import Sandbox
from shellwego.runtime.user import NOBODY

from .helpers import Lines, run_in_slug, write

SETUP = """
from pathlib import Path
from setuptools import setup

marker = Path({marker!r})
try:
    seen = marker.read_text().strip()
except OSError as exc:
    seen = "hidden: " + type(exc).__name__
Path("peek").mkdir(exist_ok=True)
Path("peek/__init__.py").write_text("SEEN = " + repr(seen) + "\\n")
setup(name="peek", version="1.0", packages=["peek"])
"""


def _app(root: Path, marker: Path) -> Path:
    return write(
        root,
        {
            "requirements.txt": "./pkg\n",
            "pkg/setup.py": SETUP.format(marker=str(marker)),
            "Procfile": "web: python3 -c 'import peek'\n",
        },
    )


async def _build(tmp_path: Path, name: str, sandbox: bool | None) -> tuple[str, Lines]:
    secrets = tmp_path / "platform-data"
    secrets.mkdir(exist_ok=True)
    marker = secrets / "master.key"
    marker.write_text("TOP-SECRET")
    app = _app(tmp_path / name / "src", marker)
    # unsandboxed steps run as this process's user: they reach the test's private directory
    run_as = None if sandbox is False else NOBODY
    builder = Builder(tmp_path / "cache", hidden_paths=[secrets], sandbox=sandbox, run_as=run_as)
    log = Lines()
    result = await builder.build(app, tmp_path / name / "out", log)
    slug = tmp_path / name / "slug"
    slug.mkdir()
    shutil.unpack_archive(result.slug_path, slug, format="gztar")
    done = run_in_slug(slug, "python3 -c 'import peek; print(peek.SEEN)'")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), log


async def test_install_code_cannot_read_hidden_platform_data(tmp_path: Path) -> None:
    if Sandbox.detect().binary is None:
        pytest.skip("bubblewrap cannot create a sandbox on this host")
    seen, log = await _build(tmp_path, "sandboxed", sandbox=None)
    assert seen.startswith("hidden:"), seen
    assert "TOP-SECRET" not in log.text
    assert "sandbox unavailable" not in log.text


async def test_without_the_sandbox_the_same_build_would_see_it(tmp_path: Path) -> None:
    seen, log = await _build(tmp_path, "open", sandbox=False)
    assert seen == "TOP-SECRET"  # what the sandbox prevents
    assert "-----> Build sandbox unavailable: disabled" in log.text


async def test_server_layout_source_and_cache_inside_the_hidden_data_dir(tmp_path: Path) -> None:
    """As the control plane runs it: the data directory is hidden, yet the build's source
    (``data/tmp/...``) and the build cache (``data/cache/build``) live inside it."""
    if Sandbox.detect().binary is None:
        pytest.skip("bubblewrap cannot create a sandbox on this host")
    data = tmp_path / "data"
    marker = data / "master.key"
    write(data, {"master.key": "TOP-SECRET", "shellwego.db": "TOP-SECRET-DB"})
    builder = Builder(data / "cache" / "build", hidden_paths=[data])
    logs = []
    for n in (1, 2):
        work = data / "tmp" / f"build-{n}"
        log = Lines()
        result = await builder.build(_app(work / "src", marker), work / "out", log)
        slug = work / "slug"
        shutil.unpack_archive(result.slug_path, slug, format="gztar")
        done = run_in_slug(slug, "python3 -c 'import peek; print(peek.SEEN)'")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().startswith("hidden:"), done.stdout
        logs.append(log.text)
    assert "Installing dependencies from requirements.txt" in logs[0]
    assert "Reusing cached Python dependencies" in logs[1]
    assert all("sandbox unavailable" not in text and "TOP-SECRET" not in text for text in logs)


async def test_a_step_writes_only_its_source_and_the_cache(tmp_path: Path) -> None:
    if Sandbox.detect().binary is None:
        pytest.skip("bubblewrap cannot create a sandbox on this host")
    data = tmp_path / "data"
    other = "tmp/build-0/src/app.py"  # another app's build in progress
    write(data, {"master.key": "TOP-SECRET", other: "OTHER-APP-SOURCE"})
    cache = data / "cache" / "build"
    builder = Builder(cache, hidden_paths=[data])
    installers = builder.cache_for(65534) / "installers"  # the default user's own caches
    src = data / "tmp" / "build-1" / "src"
    src.mkdir(parents=True)
    escape = Path(f"/var/tmp/sw-escape-{tmp_path.name}")
    script = (
        f"echo built > built.txt; echo cached > {CACHE_MOUNT}/probe; "
        f"cat {data}/master.key {data}/{other}; "
        f"echo escaped > {tmp_path}/outside.txt; echo escaped > {escape}; "
        "echo HOME=$HOME PWD=$(pwd); exit 0"
    )
    log = Lines()
    await builder._run(
        ["/bin/sh", "-c", script],
        cwd=src,
        env={"PATH": os.environ["PATH"]},
        log=log,
        what="npm install",
        deadline=asyncio.get_running_loop().time() + 60,
    )
    assert (src / "built.txt").read_text() == "built\n"
    assert (installers / "probe").read_text() == "cached\n"  # installers' caches
    assert "TOP-SECRET" not in log.text and "OTHER-APP-SOURCE" not in log.text
    assert not (tmp_path / "outside.txt").exists()
    assert not escape.exists()
    assert "HOME=/tmp PWD=/app" in log.text  # the source, where instances will see it


async def test_sandboxed_steps_of_a_root_builder_run_unprivileged(tmp_path: Path) -> None:
    if Sandbox.detect().binary is None or os.geteuid() != 0:
        pytest.skip("needs bubblewrap and a builder running as root")
    builder = Builder(tmp_path / "cache")
    cache = builder.cache_for(65534)  # the default user's own cache
    (cache / "trees" / "python" / "key").mkdir(parents=True)  # stored dependency trees
    src = tmp_path / "src"
    src.mkdir()
    script = (
        "id -u; echo x > built.txt && echo wrote-source; "
        f"(echo x > {cache}/trees/python/key/probe) 2>/dev/null || echo stored-trees-read-only; "
        f"echo x > {CACHE_MOUNT}/probe && echo wrote-pip-cache"
    )
    log = Lines()
    await builder._run(
        ["/bin/sh", "-c", script],
        cwd=src,
        env={"PATH": "/usr/bin:/bin"},
        log=log,
        what="pip install",
        deadline=asyncio.get_running_loop().time() + 60,
    )
    assert [line.strip() for line in log.lines] == [
        "65534", "wrote-source", "stored-trees-read-only", "wrote-pip-cache",
    ]  # fmt: skip
    assert (src / "built.txt").stat().st_uid == 65534


async def test_steps_reach_their_cache_when_the_data_directory_is_under_a_private_home() -> None:
    """As `shellwego up` run by root keeps it: in ~/.local/share, behind root's 0700 home,
    which the app's user cannot search. The steps see their cache inside their own /tmp."""
    if Sandbox.detect().binary is None or os.geteuid() != 0:
        pytest.skip("needs bubblewrap and a builder running as root")
    home = Path(tempfile.mkdtemp(prefix="sw-home-", dir="/var/tmp"))  # outside /tmp
    try:
        home.chmod(0o700)
        data = home / ".local" / "share" / "shellwego"
        builder = Builder(data / "cache" / "build", hidden_paths=[data])
        src = data / "tmp" / "build-1" / "src"
        src.mkdir(parents=True)
        log = Lines()
        await builder._run(
            ["/bin/sh", "-c", f"id -u; echo cached > {CACHE_MOUNT}/probe && echo wrote-cache"],
            cwd=src,
            env={"PATH": os.environ["PATH"]},
            log=log,
            what="pip install",
            deadline=asyncio.get_running_loop().time() + 60,
        )
        assert log.lines[0].strip() == str(NOBODY[0])
        assert "wrote-cache" in log.text, log.text
        assert (builder.cache_for(NOBODY[0]) / "installers" / "probe").read_text() == "cached\n"
    finally:
        shutil.rmtree(home)
