"""The builder with real pip and npm: relocatable slugs, dependency caching, limits."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from shellwego.build import builder as builder_module
from shellwego.build.artifacts import LocalArtifactStore as ArtifactStore
from shellwego.build.artifacts import extract_slug
from shellwego.build.builder import (
    RELOCATABLE_SHEBANG,
    Builder,
    BuildResult,
    fix_shebangs,
    host_python,
)
from shellwego.errors import BuildFailed
from shellwego.runtime.sandbox import Sandbox
from shellwego.runtime.user import NOBODY
from support.net import free_port

from .helpers import Lines, run_in_slug, write

PYTHON_APP = {
    "requirements.txt": "six\npyflakes\n",
    "Procfile": "web: python app.py\n",
    "app.py": "import six\nprint('six', six.__version__)\n",
}
INSTALLERS = pytest.mark.parametrize("installer", ["uv", "pip"])


async def build(builder: Builder, files: dict[str, str], work: Path) -> tuple[Lines, object]:
    src = write(work / "src", files)
    log = Lines()
    result = await builder.build(src, work / "out", log)
    return log, result


@INSTALLERS
async def test_python_slug_is_relocatable_and_rebuilds_from_cache(
    tmp_path: Path, installer: str
) -> None:
    builder = Builder(tmp_path / "cache", python_installer=installer)
    store = ArtifactStore(tmp_path / "artifacts")

    cold, result = await build(builder, PYTHON_APP, tmp_path / "b1")
    assert cold.lines[0] == "-----> Python app detected"
    assert f"-----> Installing dependencies from requirements.txt with {installer}" in cold.lines
    # the installer's own output, streamed into the log, indented
    done = "Successfully installed" if installer == "pip" else " + pyflakes=="
    assert any(line.startswith(f"       {done}") for line in cold.lines), cold.text
    assert result.stack == "python"  # type: ignore[attr-defined]
    assert result.process_types == {"web": "python app.py"}  # type: ignore[attr-defined]
    assert result.env == {"PYTHONUNBUFFERED": "1"}  # type: ignore[attr-defined]
    slug = result.slug_path  # type: ignore[attr-defined]
    assert slug == tmp_path / "b1" / "out" / "slug.tar.gz"
    assert result.size_bytes == slug.stat().st_size  # type: ignore[attr-defined]
    digest = store.put(slug)
    assert digest == result.sha256  # type: ignore[attr-defined]
    with tarfile.open(slug) as tar:
        members = tar.getmembers()
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert not any(m.islnk() for m in members)
    # no link out of the slug (the runtime refuses one): the venv's python is a copy
    assert [m.name for m in members if m.issym() and m.linkname.startswith("/")] == []

    # the slug runs from anywhere: extract it elsewhere, with the build tree gone
    shutil.rmtree(tmp_path / "b1")
    app_dir = extract_slug(store, digest, tmp_path / "elsewhere" / digest)
    venv = app_dir / ".shellwego" / "python"
    ran = run_in_slug(
        app_dir, 'python -c "import six, sys; print(six.__file__); print(sys.prefix)"'
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0].startswith(str(venv / "lib"))
    assert ran.stdout.splitlines()[1] == str(venv)  # a real virtualenv
    script = venv / "bin" / "pyflakes"
    assert script.read_bytes().startswith(RELOCATABLE_SHEBANG)
    for command in ("pyflakes --version", "python -m pyflakes --version", "pip --version"):
        ran = run_in_slug(app_dir, command)
        assert ran.returncode == 0, (command, ran.stderr)
    assert f"{venv}/lib/" in run_in_slug(app_dir, "pip --version").stdout
    ran = run_in_slug(app_dir, "python app.py")
    assert ran.stdout.startswith("six 1."), ran.stderr

    # unchanged requirements: the installed tree comes from the cache, same bytes out
    warm, again = await build(builder, PYTHON_APP, tmp_path / "b2")
    assert any(line.startswith("-----> Reusing cached Python dependencies") for line in warm.lines)
    assert not any("Installing dependencies" in line for line in warm.lines)
    assert again.sha256 == digest  # type: ignore[attr-defined]

    # changed requirements: installed again
    changed = {**PYTHON_APP, "requirements.txt": "six\n"}
    third, _ = await build(builder, changed, tmp_path / "b3")
    assert f"-----> Installing dependencies from requirements.txt with {installer}" in third.lines


@INSTALLERS
async def test_failing_pip_install_fails_the_build(tmp_path: Path, installer: str) -> None:
    builder = Builder(tmp_path / "cache", python_installer=installer)
    files = {"requirements.txt": "shellwego-no-such-package-7f3a==0.0.1\n", "app.py": ""}
    log = Lines()
    with pytest.raises(BuildFailed) as raised:
        await builder.build(write(tmp_path / "src", files), tmp_path / "out", log)
    what = "uv pip install" if installer == "uv" else "pip install"
    assert str(raised.value) == f"{what} failed (exit 1)"
    assert "shellwego-no-such-package-7f3a" in log.text  # the installer's explanation
    assert not (tmp_path / "out" / "slug.tar.gz").exists()
    cached = tmp_path / "cache" / "python"
    assert not cached.exists() or not any(p.name[0] != "." for p in cached.iterdir())


async def test_requirements_without_packages_still_get_a_virtualenv(tmp_path: Path) -> None:
    builder = Builder(tmp_path / "cache")
    files = {"requirements.txt": "# the standard library is enough\n", "Procfile": "web: x\n"}
    log, result = await build(builder, files, tmp_path)
    assert "-----> No dependencies listed in requirements.txt: a bare virtualenv" in log.lines
    assert result.stack == "python"  # type: ignore[attr-defined]
    app_dir = tmp_path / "slug"
    shutil.unpack_archive(result.slug_path, app_dir, format="gztar")  # type: ignore[attr-defined]
    ran = run_in_slug(app_dir, "python -c 'import sys; print(sys.prefix)' && pip --version")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == str(app_dir / ".shellwego" / "python")


async def test_node_build_caches_node_modules_and_hides_platform_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHELLWEGO_MASTER_KEY", "top-secret-master-key")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db/x")
    package = {
        "name": "node-app",
        "version": "1.0.0",
        "private": True,
        "scripts": {"preinstall": "env > build-env.txt", "start": "node server.js"},
    }
    files = {"package.json": json.dumps(package), "server.js": "console.log('hi')\n"}
    builder = Builder(tmp_path / "cache")
    cold, result = await build(builder, files, tmp_path / "b1")
    assert cold.lines[0] == "-----> Node.js app detected"
    assert "-----> Installing dependencies with npm install" in cold.lines
    assert result.stack == "node"  # type: ignore[attr-defined]
    assert result.process_types == {"web": "npm start"}  # type: ignore[attr-defined]
    assert result.env == {"NODE_ENV": "production"}  # type: ignore[attr-defined]
    app_dir = tmp_path / "run"
    with result.slug_path.open("rb") as stream:  # type: ignore[attr-defined]
        from shellwego.build.archive import safe_extract

        safe_extract(stream, app_dir, max_bytes=10**8)
    seen_env = (app_dir / "build-env.txt").read_text()
    assert "PATH=" in seen_env
    assert "top-secret-master-key" not in seen_env
    assert "hunter2" not in seen_env
    ran = run_in_slug(app_dir, 'echo "$PATH"; node server.js')
    assert ran.stdout.splitlines()[0].startswith(f"{app_dir}/node_modules/.bin:")
    assert ran.stdout.splitlines()[1] == "hi"

    warm, _ = await build(builder, files, tmp_path / "b2")
    assert any(line.startswith("-----> Reusing cached node_modules") for line in warm.lines)
    assert not any("npm install" in line for line in warm.lines)


async def test_static_site_serves_with_its_default_command(tmp_path: Path) -> None:
    builder = Builder(tmp_path / "cache")
    files = {"public/index.html": "<h1>static ok</h1>\n", "README.md": "not served"}
    log, result = await build(builder, files, tmp_path / "b")
    assert log.lines[0] == "-----> Static site detected"
    store = ArtifactStore(tmp_path / "artifacts")
    digest = store.put(result.slug_path)  # type: ignore[attr-defined]
    app_dir = extract_slug(store, digest, tmp_path / "slugs" / digest)
    port = free_port()
    command = result.process_types["web"]  # type: ignore[attr-defined]
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=app_dir,
        env={"HOME": str(app_dir), "PATH": os.environ["PATH"], "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # sh does not exec the server: stop the whole group
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert r.status_code == 200
        assert "static ok" in r.text
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def test_step_output_streams_as_it_happens(tmp_path: Path) -> None:
    builder = Builder(tmp_path / "cache")
    arrived: list[str] = []
    go = tmp_path / "go"

    async def log(line: str) -> None:
        arrived.append(line)
        go.touch()  # the step goes on only once its first line has reached the log

    # were its output held back until it ends, the step would wait for "go" until it times out
    await builder._run(
        ["/bin/sh", "-c", "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        log=log,
        what="step",
        deadline=asyncio.get_running_loop().time() + 60,
    )
    assert arrived == ["       first", "       second"]


async def test_failing_step_reports_its_exit_status(tmp_path: Path) -> None:
    builder = Builder(tmp_path / "cache")
    with pytest.raises(BuildFailed) as raised:
        await builder._run(
            ["/bin/sh", "-c", "echo nope; exit 3"],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            log=Lines(),
            what="npm ci",
            deadline=asyncio.get_running_loop().time() + 60,
        )
    assert str(raised.value) == "npm ci failed (exit 3)"


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


async def test_timeout_kills_the_whole_step(tmp_path: Path) -> None:
    # unsandboxed (and as this process's user), so the child's pid is a host pid the test
    # can watch and the step can write into the test's private directory
    builder = Builder(tmp_path / "cache", timeout_seconds=1.5, sandbox=False, run_as=None)
    pid_file = tmp_path / "child.pid"
    with pytest.raises(BuildFailed) as raised:
        await builder._run(
            ["/bin/sh", "-c", f"sleep 100000 & echo $! > {pid_file}; wait"],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            log=Lines(),
            what="pip install",
            deadline=asyncio.get_running_loop().time() + builder.timeout_seconds,
        )
    assert str(raised.value) == "build timed out after 1.5s"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while not _gone(child):
        assert time.monotonic() < deadline, "the step's child survived the timeout"
        await asyncio.sleep(0.05)


async def test_timeout_kills_a_sandboxed_step_and_its_children(tmp_path: Path) -> None:
    builder = Builder(tmp_path / "cache", timeout_seconds=1.5)
    token = f"{60 + os.getpid() % 1000 / 1000:.3f}"  # a sleep only this test runs
    with pytest.raises(BuildFailed, match="timed out"):
        await builder._run(
            ["/bin/sh", "-c", f"sleep {token} & wait"],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            log=Lines(),
            what="pip install",
            deadline=asyncio.get_running_loop().time() + builder.timeout_seconds,
        )
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", f"sleep {token}"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the step's child survived the timeout"
        await asyncio.sleep(0.05)


async def test_memory_cap_applies_to_steps_without_cgroups(tmp_path: Path) -> None:
    builder = Builder(tmp_path / "cache", memory_bytes=256 * 1024**2, cgroups=False)
    log = Lines()
    with pytest.raises(BuildFailed, match=r"failed \(exit 1\)"):
        await builder._run(
            ["python3", "-c", "bytearray(1024**3)"],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            log=log,
            what="step",
            deadline=asyncio.get_running_loop().time() + 60,
        )
    assert "MemoryError" in log.text


# Three processes of about 80 MiB each: every one fits a 160 MiB address-space limit,
# together they are over a 160 MiB cap on the whole step. The step ends as soon as one of
# them is gone (killed), or after 20 s with all three alive.
GREEDY_CHILDREN = """
import subprocess, sys, time
from subprocess import DEVNULL
hog = "import time; b = b'x' * (80 << 20); time.sleep(20)"
children = [
    subprocess.Popen([sys.executable, "-c", hog], stdout=DEVNULL, stderr=DEVNULL) for _ in range(3)
]
while all(child.poll() is None for child in children):
    time.sleep(0.05)
ended = [child.returncode for child in children if child.returncode is not None]
for child in children:
    child.kill()
sys.exit(1 if any(ended) else 0)
"""


@pytest.mark.parametrize("sandbox", [None, False], ids=["host-default", "unsandboxed"])
async def test_memory_cap_bounds_a_whole_step_with_its_children(
    tmp_path: Path, sandbox: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # unsandboxed steps run as this process's user: they reach the test's private directory
    run_as = None if sandbox is False else NOBODY
    builder = Builder(
        tmp_path / "cache", memory_bytes=160 * 1024**2, sandbox=sandbox, run_as=run_as
    )
    cgroups = builder.cgroups()
    if not cgroups.available:
        pytest.skip(f"no writable cgroups here: {cgroups.note}")
    made: list[str] = []  # the names of the step's cgroups (other builds may run beside it)
    create = cgroups.create

    def recorded(name: str, *args: Any, **kwargs: Any) -> dict[str, str]:
        made.append(name)
        return create(name, *args, **kwargs)

    monkeypatch.setattr(cgroups, "create", recorded)
    log = Lines()
    with pytest.raises(BuildFailed) as raised:
        await builder._run(
            [host_python(), "-c", GREEDY_CHILDREN],  # the interpreter builds use
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            log=log,
            what="pip install",
            deadline=asyncio.get_running_loop().time() + 60,
        )
    assert str(raised.value) == (
        "pip install ran out of memory: the build memory limit is 160 MiB for all of a "
        "step's processes"
    )
    # the step's cgroup is gone with it
    [name] = made
    assert not [parent / name for parent in cgroups.parents.values() if (parent / name).exists()]


def test_fix_shebangs_makes_scripts_relocatable(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "plain").write_text("#!/opt/build/venv/bin/python3.11\nimport sys\n")
    (bin_dir / "long").write_text(
        "#!/bin/sh\n'''exec' /very/long/path/bin/python3 \"$0\" \"$@\"\n' '''\nimport os\n"
    )
    (bin_dir / "shell").write_text("#!/bin/sh\necho hi\n")
    (bin_dir / "plain").chmod(0o755)
    assert fix_shebangs(bin_dir) == 2
    assert (bin_dir / "plain").read_bytes() == RELOCATABLE_SHEBANG + b"import sys\n"
    assert (bin_dir / "plain").stat().st_mode & 0o777 == 0o755
    assert (bin_dir / "long").read_bytes() == RELOCATABLE_SHEBANG + b"import os\n"
    assert (bin_dir / "shell").read_text() == "#!/bin/sh\necho hi\n"
    assert fix_shebangs(bin_dir) == 0
    # the script runs with the python next to it, through a link to it too
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "plain").write_bytes(RELOCATABLE_SHEBANG + b"import sys\nprint(sys.executable)\n")
    (tmp_path / "elsewhere").symlink_to(bin_dir / "plain")
    ran = subprocess.run([tmp_path / "elsewhere"], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == str(bin_dir / "python")


async def test_sandboxed_steps_run_the_platforms_uv_wherever_the_host_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform installed under /tmp (a checkout there, say): the steps' private /tmp
    hides its virtualenv, yet they run its uv."""
    real = builder_module._uv_binary()
    if real is None or Sandbox.detect().binary is None:
        pytest.skip("needs uv and bubblewrap")
    kept = tmp_path / "platform" / ".venv" / "bin" / "uv"  # where the sandbox shows nothing
    kept.parent.mkdir(parents=True)
    shutil.copy2(real, kept)
    monkeypatch.setattr(builder_module, "_uv_binary", lambda: str(kept))
    builder = Builder(tmp_path / "cache")
    log, result = await build(builder, PYTHON_APP, tmp_path)
    assert isinstance(result, BuildResult), log.text
    assert "-----> Installing dependencies from requirements.txt with uv" in log.lines
