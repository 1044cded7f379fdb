"""The builder: an app's source directory in, a relocatable slug (gzip tarball) out.

A slug runs anywhere it is extracted: each process is ``/bin/sh -c <command>`` in the
slug directory with ``HOME`` set to it (``/app`` in the sandbox, as on Heroku), after
``$HOME/.profile.d/*.sh`` is sourced. So dependencies are installed inside the app (a
virtualenv in ``.shellwego/python``, ``node_modules``) and found through paths relative to
``$HOME``. Sandboxed build steps see the source at ``/app`` too, so what installers write
(paths in ``.pth`` files, scripts) is where instances will find it; scripts are made
relocatable all the same, for slugs built or run without a sandbox.

Each app has a cache of its own under ``cache_dir`` (``uid-<its uid>``): the installers'
caches, which its build steps write, and its installed dependency trees, stored by a key
over what decides them (requirements or lockfile, interpreter version), which only the
platform writes; a rebuild with the same key links the stored tree in instead of
installing. What the platform does as root in a tree the app's code has written goes
through directory file descriptors (:mod:`.fdtree`): see README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import hashlib
import json
import os
import posixpath
import re
import resource
import shlex
import shutil
import signal
import stat
import sys
import tarfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from shellwego.errors import BuildFailed, RuntimeFailure
from shellwego.runtime.cgroups import Cgroups
from shellwego.runtime.command import BASE_PATH
from shellwego.runtime.layer import private_mounts
from shellwego.runtime.network import NodeNetwork
from shellwego.runtime.sandbox import APP_MOUNT, Sandbox
from shellwego.runtime.user import NOBODY, SWITCH_CAPS, RunUser, run_user

from . import fdtree
from . import node as nodejs
from . import python as py
from .archive import SKIP_NAMES, add_tree, check_name
from .detect import GENERIC, LABELS, NODE, PYTHON, STATIC, BuildPlan, detect
from .fdtree import Entry, Owner

Log = Callable[[str], Awaitable[None]]
_T = TypeVar("_T")

GiB = 1024**3
INDENT = "       "
PLATFORM_DIR = ".shellwego"
SLUG_NAME = "slug.tar.gz"
# fast over small: level 1 writes a slug ~2.5x faster than 6 for ~15% more bytes
SLUG_COMPRESSION = 1
# a script that runs with the ``python`` next to it, wherever the virtualenv is (uv's form)
RELOCATABLE_SHEBANG = (
    b"#!/bin/sh\n"
    b'\'\'\'exec\' "$(dirname -- "$(realpath -- "$0")")"/\'python\' "$0" "$@"\n'
    b"' '''\n"
)
VENV = f"{PLATFORM_DIR}/python"  # the app's virtualenv
STAGING = f"{PLATFORM_DIR}/build"  # requirement files the platform writes for a step
UV, PIP = "uv", "pip"
# the app's config that build steps see (a build never sees the app's other config)
BUILD_CONFIG = ("DISABLE_COLLECTSTATIC",)
HOOKS = ("bin/pre_compile", "bin/post_compile")
INSTALLERS = "installers"  # in an app's cache: pip's and npm's caches, written by its steps
# where sandboxed steps see their app's installer caches: inside their private /tmp, so
# that no directory of the host (the data directory may lie under root's 0700 home)
# stands between them and it
CACHE_MOUNT = Path("/tmp/cache")
# where sandboxed steps see the platform's uv: wherever the host keeps it (a virtualenv
# under /tmp, say, which the steps' private /tmp hides), they find it here
UV_MOUNT = Path("/tmp/.shellwego/bin/uv")
TREES = "trees"  # in an app's cache: stored dependency trees, written by the platform only

# the build's subprocesses see only these variables of the platform's environment
ENV_KEEP = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "PYENV_ROOT",
        "PYENV_VERSION",
    }
)
ENV_PREFIXES = ("PIP_", "UV_", "LC_", "npm_config_", "NPM_CONFIG_")

PYTHON_PROFILE = """\
export VIRTUAL_ENV="$HOME/.shellwego/python"
export PATH="$VIRTUAL_ENV/bin:$PATH"
"""
NODE_PROFILE = """\
export PATH="$HOME/node_modules/.bin:$PATH"
"""

_INCLUDE = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)[\s=]+(\S+)")
_LOCAL = re.compile(r"^\s*(?:-e|--editable|\.|/|file:)|\sfile:|@\s*file:")


@dataclass(frozen=True)
class BuildResult:
    slug_path: Path
    size_bytes: int
    stack: str
    process_types: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    sha256: str = ""


def build_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The platform's environment cut down to what installers need (no platform secrets)."""
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env.update(extra or {})
    return env


def host_python() -> str:
    """The ``python3`` apps run with: the first on the runtime's PATH, else the platform's
    PATH (skipping the platform's own virtualenv), so dependencies match the interpreter."""
    venv = py.platform_prefix()
    search = f"{BASE_PATH}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    for entry in search.split(os.pathsep):
        directory = Path(entry or ".")
        candidate = directory / "python3"
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        if venv is not None and directory.resolve().is_relative_to(venv):
            continue
        return str(candidate)
    base = Path(sys.base_prefix) / "bin" / "python3"
    if base.is_file():
        return str(base)
    raise BuildFailed("python3 is not installed on the build host")


def _has_requirements(text: str) -> bool:
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            return True
    return False


def requirement_files(root_fd: int) -> list[tuple[str, bytes]]:
    """``requirements.txt`` and every file it pulls in with ``-r`` / ``-c``, in order, once
    each, as ``(name, content)``; an include outside the app's source is refused (the
    platform reads only the app's own files)."""
    seen: dict[str, bytes] = {}
    todo = ["requirements.txt"]
    while todo:
        rel = todo.pop(0)
        if rel in seen:
            continue
        data = fdtree.read_file(root_fd, rel)
        if data is None:
            continue
        seen[rel] = data
        for line in data.decode("utf-8", "replace").splitlines():
            match = _INCLUDE.match(line)
            if match is None:
                continue
            include = match.group(1)
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), include))
            if include.startswith("/") or joined == ".." or joined.startswith("../"):
                raise BuildFailed(
                    f"{rel} includes {include[:200]}, which is outside the app's source"
                )
            todo.append(joined)
    return list(seen.items())


LOCKFILES = ("uv.lock", "poetry.lock", "Pipfile.lock")


def python_key(root_fd: int, interpreter: str) -> str:
    """Cache key of an app's Python dependency tree (``interpreter`` names the interpreter
    and the installer).

    requirements.txt and the files it includes, with the whole source tree when they
    refer to local paths; a lockfile with pyproject.toml (the app itself is not
    installed); otherwise, for a pyproject.toml app, the whole source tree.
    """
    material = hashlib.sha256(b"python\0" + interpreter.encode() + b"\0")
    files = requirement_files(root_fd)
    if not files:
        for name in LOCKFILES:
            lock = fdtree.read_file(root_fd, name)
            if lock is not None:
                pyproject = fdtree.read_file(root_fd, "pyproject.toml") or b""
                material.update(name.encode() + b"\0" + lock + b"\0" + pyproject)
                return material.hexdigest()
        material.update(b"pyproject\0" + tree_digest(root_fd).encode())
        return material.hexdigest()
    local = False
    for _rel, data in files:
        material.update(data + b"\0")
        lines = data.decode("utf-8", "replace").splitlines()
        local = local or any(_LOCAL.search(line) for line in lines)
    if local:
        material.update(b"tree\0" + tree_digest(root_fd).encode())
    return material.hexdigest()


def tree_digest(root_fd: int) -> str:
    """sha256 over the names and contents of the source tree (platform directories aside)."""
    digest = hashlib.sha256()
    for entry in fdtree.walk(root_fd, SKIP_NAMES):
        digest.update(entry.rel.encode("utf-8", "surrogateescape") + b"\0")
        if entry.is_link:
            target = os.readlink(entry.name, dir_fd=entry.dir_fd)
            digest.update(b"L" + target.encode("utf-8", "surrogateescape") + b"\0")
        elif entry.is_file:
            fd = fdtree.open_file(entry.dir_fd, entry.name, entry.rel, entry.st)
            with os.fdopen(fd, "rb") as handle:
                while chunk := handle.read(1024 * 1024):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def _relocatable(data: bytes) -> bytes | None:
    """A pip-generated script run by the ``python`` next to it (None: leave it as it is)."""
    if data.startswith(RELOCATABLE_SHEBANG):
        return None
    if data.startswith(b"#!/bin/sh\n'''exec' "):
        # pip's form for interpreter paths too long for a shebang line
        lines = data.split(b"\n", 3)
        if len(lines) == 4 and lines[2].startswith(b"' '''"):
            return RELOCATABLE_SHEBANG + lines[3]
    elif data.startswith(b"#!"):
        first, _, rest = data.partition(b"\n")
        if b"python" in first and first + b"\n" != RELOCATABLE_SHEBANG:
            return RELOCATABLE_SHEBANG + rest
    return None


def fix_shebangs(top: Path, rel: str = ".", owner: Owner | None = None) -> int:
    """Point pip's generated scripts in ``top/rel`` at the ``python`` next to them; returns
    how many changed. Scripts are read and replaced through directory descriptors, so a link in
    the way is never followed; with ``owner``, only its own files are read, and the new
    ones are given to it."""
    root = fdtree.open_dir(top)
    try:
        bin_fd = _subdir(root, rel)
    finally:
        os.close(root)
    if bin_fd is None:  # none, or not a directory (a link is not followed)
        return 0
    changed = 0
    try:
        for name in sorted(os.listdir(bin_fd)):
            st = os.stat(name, dir_fd=bin_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            entry = Entry(bin_fd, name, f"{rel}/{name}", st)
            fdtree.check_owner(entry, None if owner is None else owner[0])
            fd = fdtree.open_file(bin_fd, name, entry.rel, st)
            with os.fdopen(fd, "rb") as handle:
                new = _relocatable(handle.read())
            if new is not None:
                fdtree.write_file(bin_fd, name, new, stat.S_IMODE(st.st_mode), owner)
                changed += 1
    finally:
        os.close(bin_fd)
    return changed


class _HashingWriter:
    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self._inner.write(data)  # type: ignore[attr-defined]
        return len(data)

    def flush(self) -> None:
        self._inner.flush()  # type: ignore[attr-defined]


def write_slug(app: Path, slug: Path, owner: int | None = None) -> tuple[int, str]:
    """Deterministic gzip tarball of ``app``: sorted, mtime 0, owner 0; ``(size, sha256)``.

    The tree is walked through directory descriptors and never through a link; with
    ``owner`` (the build's user), a file it does not own is refused, not read."""
    root = fdtree.open_dir(app)
    try:
        with slug.open("wb") as raw:
            hashing = _HashingWriter(raw)
            with (
                gzip.GzipFile(
                    fileobj=hashing,  # type: ignore[arg-type]
                    mode="wb",
                    mtime=0,
                    filename="",
                    compresslevel=SLUG_COMPRESSION,
                ) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                add_tree(
                    tar, _owned(fdtree.walk(root, frozenset({".git"})), owner), reproducible=True
                )
    finally:
        os.close(root)
    return hashing.size, hashing.digest.hexdigest()


def _owned(entries: Iterator[Entry], owner: int | None) -> Iterator[Entry]:
    for entry in entries:
        check_name(entry.rel, entry.rel.split("/"), BuildFailed)
        fdtree.check_owner(entry, owner)
        yield entry


def _write_profile(app: Path, name: str, text: str, owner: Owner | None) -> None:
    root = fdtree.open_dir(app)
    try:
        try:
            profile = fdtree.open_subdir(root, ".profile.d", create=True, owner=owner)
        except BuildFailed:
            raise BuildFailed(".profile.d must be a directory") from None
        assert profile is not None
        try:
            try:
                st = os.stat(name, dir_fd=profile, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if not stat.S_ISREG(st.st_mode):
                    raise BuildFailed(f".profile.d/{name} is reserved for the platform")
            fdtree.write_file(profile, name, text.encode(), 0o644, owner)
        finally:
            os.close(profile)
    finally:
        os.close(root)


def _clear(app: Path, name: str) -> None:
    root = fdtree.open_dir(app)
    try:
        fdtree.remove(root, name)
    finally:
        os.close(root)


@dataclass(frozen=True, slots=True)
class Job:
    """One build: the source, who its steps run as, the app's cache, its deadline."""

    src: Path
    user: RunUser | None  # whom steps switch to (None: they run as this process)
    cache: Path  # the app's own cache directory
    deadline: float
    at: Path | None = None  # where steps see the source (/app in the sandbox), else ``src``
    config: Mapping[str, str] = field(default_factory=dict)  # the app's, for build steps

    def step_path(self, rel: str) -> str:
        """``rel`` (in the source) as build steps see it."""
        return str((self.at or self.src) / rel)

    @property
    def owner(self) -> Owner | None:
        """Who the app's tree belongs to (None: this process, which is not root)."""
        return None if self.user is None else (self.user.uid, self.user.gid)

    @property
    def uid(self) -> int | None:
        return None if self.user is None else self.user.uid

    @property
    def installers(self) -> Path:
        return self.cache / INSTALLERS

    @property
    def step_installers(self) -> str:
        """The installer caches as build steps see them."""
        return str(CACHE_MOUNT if self.at is not None else self.installers)


class Builder:
    """Builds slugs; build steps run as subprocesses under a memory cap, a process limit,
    an open-files limit and a time limit.

    The memory cap and the process limit bound a whole step, every process it starts
    included: each step runs in a cgroup of its own where the host's cgroups are writable
    (else each of its processes gets that much address space, ``prlimit --as``, and the
    process count is not limited).

    Steps of a builder running as root run as an unprivileged user: the app's own uid
    (``build(..., user=)``), else ``run_as``. The source tree is handed to that user once,
    before any step runs; the user writes it and the app's installer caches, nothing else.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        memory_bytes: int = 2 * GiB,
        timeout_seconds: float = 900,
        hidden_paths: Sequence[Path] = (),
        sandbox: bool | None = None,
        cgroups: bool | None = None,
        run_as: tuple[int, int] | None = NOBODY,
        pids_limit: int | None = 512,
        nofile_limit: int | None = 10240,
        network: NodeNetwork | None = None,
        python_installer: str | None = None,
    ) -> None:
        """``hidden_paths``: what build steps (which run the app's own install code) must not
        see, e.g. the platform's data directory. ``sandbox``: None = bubblewrap when it
        works here, False = never. ``cgroups``: None = a cgroup per step when the host
        allows it, False = the per-process memory limit only. ``run_as``: the uid/gid
        steps of a build without a user of its own run as when this process is root
        (None: as root). ``pids_limit``: processes per step (a pids cgroup);
        ``nofile_limit``: open files per process (RLIMIT_NOFILE). ``network``: the node
        network each step gets a namespace of its own on, for its run (egress only: it
        reaches package indexes, never the platform, the host or any instance); None: the
        host's network. ``python_installer``: ``"uv"`` or ``"pip"`` (None: uv where the
        app's steps can run it, else pip)."""
        self.cache_dir = Path(cache_dir)
        self.memory_bytes = memory_bytes
        self.timeout_seconds = timeout_seconds
        self.hidden_paths = tuple(hidden_paths)
        self.pids_limit = pids_limit
        self.nofile_limit = nofile_limit
        self._want_sandbox = sandbox
        self._sandbox: Sandbox | None = None
        self._want_cgroups = cgroups
        self._cgroups: Cgroups | None = None
        self._run_as = run_as
        self.network = network
        self.python_installer = python_installer

    def sandbox(self) -> Sandbox:
        """How build steps are isolated on this host (detected once)."""
        if self._sandbox is None:
            self._sandbox = (
                Sandbox(None, note="disabled by configuration")
                if self._want_sandbox is False
                else Sandbox.detect()
            )
        return self._sandbox

    def cgroups(self) -> Cgroups:
        """How build steps' memory and processes are limited on this host (detected once)."""
        if self._cgroups is None:
            self._cgroups = (
                Cgroups(0, {}, "disabled by configuration")
                if self._want_cgroups is False
                else Cgroups.detect()
            )
        return self._cgroups

    def cache_for(self, uid: int | None) -> Path:
        """The build cache of the app whose builds run as ``uid``."""
        return self.cache_dir / ("shared" if uid is None else f"uid-{int(uid)}")

    def _job(
        self,
        src: Path,
        user: tuple[int, int] | None,
        deadline: float,
        config: Mapping[str, str] | None = None,
    ) -> Job:
        """A build's job: its cache made ready, its source handed to its user."""
        wanted = user or self._run_as
        at = APP_MOUNT if self.sandbox().binary is not None else None
        home = self.cache_for(wanted[0] if wanted else None)
        job = Job(src, run_user(wanted), home, deadline, at, dict(config or {}))
        self.cache_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        job.cache.mkdir(mode=0o711, exist_ok=True)
        cache = fdtree.open_dir(job.cache)
        try:
            for name, owner in ((INSTALLERS, job.owner), (TREES, None)):
                fd = fdtree.open_subdir(cache, name, create=True, owner=owner)
                assert fd is not None
                os.fchmod(fd, 0o700)
                os.close(fd)
        finally:
            os.close(cache)
        if job.owner is not None:
            root = fdtree.open_dir(src)
            try:
                fdtree.chown_tree(root, job.owner)
                os.fchmod(root, 0o700)  # the build's user's alone
            finally:
                os.close(root)
        return job

    async def build(
        self,
        src: Path,
        out: Path,
        log: Log,
        *,
        user: tuple[int, int] | None = None,
        config: Mapping[str, str] | None = None,
    ) -> BuildResult:
        """Build the app in ``src`` (in place) and write ``out/slug.tar.gz``; its steps run
        as ``user`` (uid, gid: the app's own) when this process is root. ``config``: the
        app's config vars; build steps see only those named in :data:`BUILD_CONFIG`."""
        deadline = asyncio.get_running_loop().time() + self.timeout_seconds
        sandbox = await asyncio.to_thread(self.sandbox)
        if sandbox.binary is None:
            await log(f"-----> Build sandbox unavailable: {sandbox.note}")
        plan: BuildPlan = await asyncio.to_thread(detect, src)
        await log(f"-----> {LABELS[plan.stack]} detected")
        await asyncio.to_thread(_clear, src, PLATFORM_DIR)
        seen = {k: v for k, v in (config or {}).items() if k in BUILD_CONFIG}
        job = await asyncio.to_thread(self._job, src, user, deadline, seen)
        env: dict[str, str] = {}
        await self._hook(job, log, HOOKS[0], {})
        interpreter: str | None = None
        if plan.stack == PYTHON:
            env, interpreter = await self._python(job, log)
        elif plan.stack == NODE:
            env = await self._node(job, log)
        elif plan.stack == STATIC:
            await log("-----> Nothing to install: the files are served as they are")
        elif plan.stack == GENERIC:
            await log("-----> Nothing to install: running the Procfile's commands")
        await self._hook(job, log, HOOKS[1], self._runtime_env(job, plan.stack))
        if interpreter is not None:
            await asyncio.to_thread(_python_profile, job, interpreter)
        await log("-----> Compressing slug")
        out.mkdir(mode=0o700, parents=True, exist_ok=True)  # root's: the slug is the app's alone
        slug = out / SLUG_NAME
        size, digest = await asyncio.to_thread(write_slug, src, slug, job.uid)
        return BuildResult(
            slug_path=slug,
            size_bytes=size,
            stack=plan.stack,
            process_types=dict(plan.process_types),
            env=env,
            sha256=digest,
        )

    # ---- hooks ---------------------------------------------------------------------------

    async def _hook(self, job: Job, log: Log, rel: str, extra: dict[str, str]) -> None:
        """Run the app's ``bin/pre_compile`` or ``bin/post_compile`` (Heroku's hooks) as a
        build step, when the app has one."""
        found = await asyncio.to_thread(_in_tree, job.src, lambda fd: _is_file(fd, rel))
        if not found:
            return
        name = rel.rpartition("/")[2]
        await log(f"-----> Running {name} hook")
        script = 'if [ -x "$1" ]; then exec "$1"; else exec /bin/sh "$1"; fi'
        await self._run(
            ["/bin/sh", "-c", script, "sh", job.step_path(rel)],
            cwd=job.src,
            env=build_environment({**job.config, **extra}),
            log=log,
            what=name,
            deadline=job.deadline,
            job=job,
        )

    def _runtime_env(self, job: Job, stack: str) -> dict[str, str]:
        """What build steps after the install see of the app's dependencies."""
        if stack == PYTHON:
            venv = job.step_path(VENV)
            return {"VIRTUAL_ENV": venv, "PATH": f"{venv}/bin:{build_environment()['PATH']}"}
        if stack == NODE:
            bins = job.step_path("node_modules/.bin")
            return {"NODE_ENV": "production", "PATH": f"{bins}:{build_environment()['PATH']}"}
        return {}

    # ---- python --------------------------------------------------------------------------

    def installer(self, job: Job) -> str | None:
        """uv's binary when builds use uv and the app's steps can run it, else None (pip)."""
        if self.python_installer == PIP:
            return None
        found = _uv_binary()
        if found is None:
            return None
        if job.at is not None:
            return str(UV_MOUNT)  # sandboxed: mounted there (see _run)
        if job.user is not None and job.user.blocked_at(Path(found)):
            return None
        return found

    def _interpreter(self, job: Job, request: py.Request | None) -> py.Interpreter:
        def blocked_at(path: Path) -> Path | None:
            return None if job.user is None else job.user.blocked_at(path)

        if request is None:
            path = host_python()
            version = py.full_version(path)
            if version is None:
                raise BuildFailed(f"{path} is not usable on the build host")
            return py.Interpreter(path, version, blocked_at(Path(path)))
        search = f"{BASE_PATH}{os.pathsep}{build_environment()['PATH']}"
        found = py.candidates(search, py.current_homes())
        venv = py.platform_prefix()
        if venv is not None:
            found = [f for f in found if not Path(f).resolve().is_relative_to(venv)]
        return py.choose(request, found, blocked_at)

    async def _python(self, job: Job, log: Log) -> tuple[dict[str, str], str]:
        """Install the app's virtualenv; (its environment, the interpreter it runs on)."""
        app = job.src
        files = await asyncio.to_thread(_read_all, app, PYTHON_FILES)
        request = _python_request(files)
        interpreter = await asyncio.to_thread(self._interpreter, job, request)
        if interpreter.blocked is not None:
            raise BuildFailed(
                f"Python {interpreter.label} is out of reach of the app's processes: "
                f"{interpreter.blocked} is not searchable by them"
            )
        uv = await asyncio.to_thread(self.installer, job)
        tool = UV if uv else PIP
        asked = f", as {request.describe()} asks" if request else ""
        await log(f"-----> Using Python {interpreter.label}{asked}")
        install = _install_plan(files, uv is not None)
        described = f"{interpreter.path}\0{interpreter.version}\0{tool}\0{install.kind}"
        key = await asyncio.to_thread(_in_tree, app, lambda fd: python_key(fd, described))
        await asyncio.to_thread(_clear, app, VENV)
        if await asyncio.to_thread(self._stored, job, "python", key):
            await log(f"-----> Reusing cached Python dependencies ({key[:12]})")
            await asyncio.to_thread(self._reuse, job, "python", key, VENV)
        else:
            if install.kind == "uv.lock" or install.args(""):
                await log(f"-----> Installing dependencies from {install.kind} with {tool}")
            else:
                await log(f"-----> No dependencies listed in {install.kind}: a bare virtualenv")
            for line in install.notes:
                await log(f"{INDENT}{line}")
            await self._python_install(job, log, interpreter, uv, install)
            fixed = await asyncio.to_thread(fix_shebangs, app, f"{VENV}/bin", job.owner)
            if fixed:
                await log(f"{INDENT}{fixed} script(s) made relocatable")
            await asyncio.to_thread(self._store, job, "python", key, VENV)
            await log(f"-----> Cached Python dependencies ({key[:12]})")
        await self._collectstatic(job, log, interpreter)
        return {"PYTHONUNBUFFERED": "1"}, os.path.realpath(interpreter.path)

    async def _python_install(
        self,
        job: Job,
        log: Log,
        interpreter: py.Interpreter,
        uv: str | None,
        install: _Install,
    ) -> None:
        """Make the virtualenv and install into it, as build steps."""
        venv = job.step_path(VENV)
        python = f"{venv}/bin/python"
        cache = job.step_installers
        env = build_environment(
            {
                **job.config,
                "PIP_ROOT_USER_ACTION": "ignore",
                "PYTHONUNBUFFERED": "1",
                "UV_CACHE_DIR": f"{cache}/uv",
                "UV_PYTHON_DOWNLOADS": "never",
                "UV_LINK_MODE": "copy",
                "UV_NO_PROGRESS": "1",
                "UV_PROJECT_ENVIRONMENT": venv,
                # the host's certificate store, as pip and npm use it (a proxy's CA in it)
                "UV_SYSTEM_CERTS": "1",
                "UV_NATIVE_TLS": "1",  # its name before uv 0.9
                **_uv_index(),
            }
        )
        await asyncio.to_thread(_stage, job, install)
        try:
            if uv is not None:
                make = [uv, "venv", "--relocatable", "--seed", "--python", interpreter.path, venv]
                what = "uv venv"
            else:
                make, what = [interpreter.path, "-m", "venv", venv], "python -m venv"
            await self._run(
                make,
                cwd=job.src,
                env=env,
                log=log,
                what=what,
                deadline=job.deadline,
                job=job,
            )
            if install.kind == "uv.lock" and uv is not None:
                argv = [uv, "sync", "--locked", "--no-dev", "--no-install-project", "--inexact"]
                argv += ["--python", python]
                what = "uv sync"
            elif uv is not None:
                argv, what = [uv, "pip", "install", "--python", python], "uv pip install"
            else:
                argv = [python, "-m", "pip", "install", "--cache-dir", f"{cache}/pip"]
                argv += ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
                what = "pip install"
            if install.kind != "uv.lock" or uv is None:
                args = install.args(job.step_path(STAGING))
                if not args:
                    return
                argv += args
            await self._run(
                argv, cwd=job.src, env=env, log=log, what=what, deadline=job.deadline, job=job
            )
        finally:
            await asyncio.to_thread(_clear, job.src, STAGING)

    async def _collectstatic(self, job: Job, log: Log, interpreter: py.Interpreter) -> None:
        """Django's ``manage.py collectstatic --noinput``, as on Heroku: for an app with a
        manage.py and Django installed, unless DISABLE_COLLECTSTATIC is set (in the app's
        config or the build's environment)."""
        minor = ".".join(str(n) for n in interpreter.version.release[:2])
        django = f"{VENV}/lib/python{minor}/site-packages/django"

        def wanted(fd: int) -> bool:
            return _is_file(fd, "manage.py") and fdtree.is_dir(fd, django)

        if not await asyncio.to_thread(_in_tree, job.src, wanted):
            return
        disabled = job.config.get("DISABLE_COLLECTSTATIC", os.environ.get("DISABLE_COLLECTSTATIC"))
        if disabled not in (None, "", "0"):
            await log("-----> Skipping collectstatic (DISABLE_COLLECTSTATIC is set)")
            return
        await log("-----> Running manage.py collectstatic --noinput")
        await self._run(
            [f"{job.step_path(VENV)}/bin/python", "manage.py", "collectstatic", "--noinput"],
            cwd=job.src,
            env=build_environment({**job.config, **self._runtime_env(job, PYTHON)}),
            log=log,
            what="manage.py collectstatic",
            deadline=job.deadline,
            job=job,
        )

    # ---- node ----------------------------------------------------------------------------

    async def _node(self, job: Job, log: Log) -> dict[str, str]:
        app = job.src
        node_bin = shutil.which("node")
        if node_bin is None:
            raise BuildFailed("Node.js app detected but node is not on the build host")
        version = (await self._capture([node_bin, "--version"], "node")).strip()
        names = ("package.json", *nodejs.LOCKFILES)
        files = await asyncio.to_thread(_read_all, app, names)
        try:
            package = json.loads(files["package.json"] or b"")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BuildFailed(f"package.json is not valid JSON: {exc}") from None
        engines = package.get("engines") if isinstance(package, dict) else None
        wanted = engines.get("node") if isinstance(engines, dict) else None
        nodejs.check_engine(nodejs.parse_version(version), wanted)
        asked = f", as engines.node {wanted} asks" if isinstance(wanted, str) else ""
        await log(f"-----> Using Node.js {version}{asked}")
        found = nodejs.manager({name for name, data in files.items() if data is not None})
        tool = shutil.which(found.name)
        if tool is None:
            raise BuildFailed(
                f"{found.lockfile} needs {found.name}, which is not installed on the build "
                f"host: install it there, or commit a lockfile of a package manager it has "
                f"(npm: package-lock.json)"
            )
        tool_version = (await self._capture([tool, "--version"], found.name)).strip()
        material = hashlib.sha256(
            b"node\0" + version.encode() + b"\0" + (files["package.json"] or b"")
        )
        material.update(f"\0{found.name}\0{tool_version}\0".encode())
        if found.lockfile is not None:
            material.update(b"\0lock\0" + (files[found.lockfile] or b""))
        key = material.hexdigest()
        modules = "node_modules"
        await asyncio.to_thread(_clear, app, modules)
        if await asyncio.to_thread(self._stored, job, "node", key):
            await log(f"-----> Reusing cached node_modules ({key[:12]})")
            await asyncio.to_thread(self._reuse, job, "node", key, modules)
        else:
            argv = nodejs.install_argv(
                found.name, tool, tool_version, found.lockfile, job.step_installers
            )
            what = f"{found.name} {argv[1]}"
            source = f" from {found.lockfile}" if found.lockfile else ""
            await log(f"-----> Installing dependencies{source} with {what}")
            await self._run(
                argv,
                cwd=app,
                env=build_environment(
                    {
                        **job.config,
                        "NODE_ENV": "production",
                        "CI": "true",
                        "COREPACK_ENABLE_DOWNLOAD_PROMPT": "0",
                    }
                ),
                log=log,
                what=what,
                deadline=job.deadline,
                job=job,
            )
            await asyncio.to_thread(self._store, job, "node", key, modules)
            await log(f"-----> Cached node_modules ({key[:12]})")
        await asyncio.to_thread(_write_profile, app, "node.sh", NODE_PROFILE, job.owner)
        return {"NODE_ENV": "production"}

    # ---- stored dependency trees -----------------------------------------------------------

    @staticmethod
    def _stored(job: Job, kind: str, key: str) -> bool:
        return _in_tree(job.cache, lambda fd: fdtree.is_dir(fd, f"{TREES}/{kind}/{key}/ready"))

    @staticmethod
    def _reuse(job: Job, kind: str, key: str, target: str) -> None:
        """Link the stored tree in at ``target`` in the app's source (made afresh)."""
        with _opened(job.cache) as cache, _opened(job.src) as app:
            parent, _, name = target.rpartition("/")
            into = fdtree.open_subdir(app, parent, create=True, owner=job.owner)
            stored = fdtree.open_subdir(cache, f"{TREES}/{kind}/{key}/ready")
            assert into is not None and stored is not None
            try:
                fdtree.remove(into, name)
                os.mkdir(name, 0o755, dir_fd=into)
                made = fdtree.open_subdir(into, name)
                assert made is not None
                try:
                    if job.owner is not None:
                        os.fchown(made, *job.owner)
                    fdtree.copy_tree(stored, made, owner=job.uid, give=job.owner)
                finally:
                    os.close(made)
            finally:
                os.close(into)
                os.close(stored)

    @staticmethod
    def _store(job: Job, kind: str, key: str, source: str) -> None:
        """Store the tree at ``source`` in the app's source (or an empty tree) under ``key``,
        atomically; a concurrent store of the same key wins."""
        with _opened(job.cache) as cache, _opened(job.src) as app:
            trees = fdtree.open_subdir(cache, f"{TREES}/{kind}", create=True)
            assert trees is not None
            tmp = f".{key[:16]}-{os.urandom(6).hex()}"
            try:
                os.mkdir(tmp, 0o700, dir_fd=trees)
                ready = fdtree.open_subdir(trees, f"{tmp}/ready", create=True)
                assert ready is not None
                try:
                    found = _subdir(app, source)
                    if found is not None:
                        try:
                            fdtree.copy_tree(found, ready, owner=job.uid, give=job.owner)
                        finally:
                            os.close(found)
                finally:
                    os.close(ready)
                with contextlib.suppress(OSError):  # OSError: stored meanwhile
                    os.rename(tmp, key, src_dir_fd=trees, dst_dir_fd=trees)
            finally:
                fdtree.remove(trees, tmp)
                os.close(trees)

    # ---- subprocesses --------------------------------------------------------------------

    def _limited(self, argv: list[str]) -> tuple[list[str], Callable[[], None] | None]:
        prlimit = shutil.which("prlimit")
        if prlimit is not None:
            return [prlimit, f"--as={self.memory_bytes}", "--", *argv], None
        limit = self.memory_bytes

        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        return argv, cap

    async def _run(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log: Log,
        what: str,
        deadline: float,
        job: Job | None = None,
    ) -> None:
        """Run one build step, streaming its output line by line into ``log``.

        With bubblewrap, the step sees the host read-only, its own source (at ``/app``)
        and its app's installer caches writable, a private /tmp as HOME, and none of
        ``hidden_paths``.
        Without a ``job`` (a step outside a build) it runs for ``cwd`` as ``run_as``.
        """
        if job is None:
            job = await asyncio.to_thread(self._job, cwd, None, deadline)
        sandbox = self.sandbox()
        if sandbox.binary is None and job.user is not None:
            self._check_reachable(job.user, cwd, job.installers)
        cgroups = await asyncio.to_thread(self.cgroups)
        dirs: dict[str, str] = {}
        if cgroups.available:
            try:
                dirs = cgroups.create(
                    f"build-{os.urandom(6).hex()}", self.memory_bytes, None, self.pids_limit
                )
            except RuntimeFailure as exc:
                await log(f"{INDENT}no cgroup for this step ({exc.detail})")
        full, preexec = (argv, None) if dirs else self._limited(argv)
        if job.user is not None:
            full = [*job.user.argv(), *full]
        if sandbox.binary is not None:
            keep = SWITCH_CAPS if job.user is not None else ()
            uv = _uv_binary() if job.at is not None and self.python_installer != PIP else None
            full = sandbox.argv(
                cwd,
                self.hidden_paths,
                full,
                binds=[(job.installers, CACHE_MOUNT) if job.at is not None else job.installers],
                keep_caps=keep,
                at=job.at,
                tools=[(Path(uv), UV_MOUNT)] if job.at is not None and uv else [],
            )
            env = {**env, "HOME": "/tmp"}
        elif job.user is not None:
            env = {**env, "HOME": str(job.installers)}
        script = Cgroups.join_script(dirs) if dirs else ""
        if self.nofile_limit is not None:
            script += f"ulimit -n {int(self.nofile_limit)} || exit 125\n"
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.network is not None:
                    net = await stack.enter_async_context(
                        self.network.session(f"build-{os.urandom(6).hex()}")
                    )
                    # its own network namespace, and mounts of its own for its resolv.conf
                    setup = ["/bin/sh", "-c", net.mount_script() + 'exec "$@"\n', "sh"]
                    full = [*net.enter_argv(), *private_mounts(), *setup, *full]
                if script:
                    full = ["/bin/sh", "-c", script + 'exec "$@"\n', "sh", *full]
                await self._step(
                    full,
                    cwd=cwd,
                    env=env,
                    preexec=preexec,
                    log=log,
                    what=what,
                    deadline=deadline,
                    dirs=dirs,
                )
        except BuildFailed:
            if dirs and Cgroups.oom_kills(dirs):
                raise BuildFailed(
                    f"{what} ran out of memory: the build memory limit is "
                    f"{self.memory_bytes // (1024 * 1024)} MiB for all of a step's processes"
                ) from None
            if dirs and Cgroups.forks_refused(dirs):
                raise BuildFailed(
                    f"{what} reached the build's process limit: at most {self.pids_limit} "
                    "processes for all of a step's processes"
                ) from None
            raise
        finally:
            if dirs:
                await Cgroups.remove(dirs)  # and whatever the step left running in it

    @staticmethod
    def _check_reachable(user: RunUser, *paths: Path) -> None:
        """Without a sandbox, steps reach their source and caches by their host paths."""
        for path in paths:
            blocked = user.blocked_at(path)
            if blocked is not None:
                raise BuildFailed(
                    f"build steps run as uid {user.uid} without a sandbox and cannot reach "
                    f"{path}: {blocked} is not searchable by them (install bubblewrap, or "
                    f"keep builds where that user can reach them)"
                )

    async def _step(
        self,
        full: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        preexec: Callable[[], None] | None,
        log: Log,
        what: str,
        deadline: float,
        dirs: dict[str, str],
    ) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *full,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except OSError as exc:
            raise BuildFailed(f"{what} could not start: {exc.strerror or exc}") from None
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(self._follow(proc, log, dirs), max(remaining, 0.001))
        except TimeoutError:
            await _kill(proc)
            raise BuildFailed(f"build timed out after {self.timeout_seconds:g}s") from None
        except BaseException:
            await _kill(proc)
            raise
        code = proc.returncode
        if code is not None and code < 0:
            raise BuildFailed(f"{what} was killed by signal {-code}")
        if code != 0:
            raise BuildFailed(f"{what} failed (exit {code})")

    @classmethod
    async def _follow(
        cls, proc: asyncio.subprocess.Process, log: Log, dirs: dict[str, str]
    ) -> None:
        """Log the step's output until its own process ends; what it left running then (which
        may hold the output open, e.g. the sandbox's init waiting for them) is killed."""
        reader = asyncio.create_task(cls._pump(proc, log))
        try:
            # (``proc.wait()`` would wait for the output to end too: watch the exit instead)
            while not reader.done() and proc.returncode is None:
                await asyncio.wait({reader}, timeout=0.1)
            if not reader.done():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                Cgroups.kill(dirs)
            await reader
            await proc.wait()
        finally:
            reader.cancel()

    @staticmethod
    async def _pump(proc: asyncio.subprocess.Process, log: Log) -> None:
        assert proc.stdout is not None
        pending = b""
        while chunk := await proc.stdout.read(64 * 1024):
            pending += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    await log(INDENT + text)
            if len(pending) > 64 * 1024:  # a very long line: pass it on in pieces
                await log(INDENT + pending.decode("utf-8", "replace"))
                pending = b""
        if pending.strip():
            await log(INDENT + pending.decode("utf-8", "replace").rstrip())

    async def _capture(self, argv: list[str], what: str) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=build_environment(),
                start_new_session=True,
            )
        except OSError as exc:
            raise BuildFailed(f"{what} is not usable on the build host: {exc}") from None
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            await _kill(proc)
            raise BuildFailed(f"{what} did not answer within 60s") from None
        if proc.returncode != 0:
            raise BuildFailed(f"{what} is not usable on the build host (exit {proc.returncode})")
        return stdout.decode("utf-8", "replace")


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the step's whole process group (installers start children of their own)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()


def _read(app: Path, rel: str) -> bytes | None:
    return _in_tree(app, lambda fd: fdtree.read_file(fd, rel))


def _in_tree(top: Path, work: Callable[[int], _T]) -> _T:
    with _opened(top) as fd:
        return work(fd)


@contextlib.contextmanager
def _opened(top: Path) -> Iterator[int]:
    fd = fdtree.open_dir(top)
    try:
        yield fd
    finally:
        os.close(fd)


def _subdir(top: int, rel: str) -> int | None:
    """``rel`` under ``top`` when it is a directory (not a link to one), else None."""
    try:
        return fdtree.open_subdir(top, rel)
    except BuildFailed:
        return None


# ---- python helpers ------------------------------------------------------------------------

PYTHON_FILES = (
    ".python-version",
    "runtime.txt",
    "pyproject.toml",
    "requirements.txt",
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "Pipfile",
)


@dataclass(frozen=True)
class _Install:
    """What a Python app's dependencies are installed from, as installer arguments."""

    kind: str  # requirements.txt, uv.lock, poetry.lock, Pipfile.lock or pyproject.toml
    direct: tuple[str, ...] = ()  # e.g. ("-r", "requirements.txt") or (".",)
    requirements: tuple[str, ...] = ()  # staged as a requirements file
    constraints: tuple[str, ...] = ()  # staged as a constraints file
    notes: tuple[str, ...] = ()

    def args(self, staging: str) -> list[str]:
        out = list(self.direct)
        if self.requirements:
            out += ["-r", f"{staging}/requirements.txt"]
        if self.constraints:
            out += ["-c", f"{staging}/constraints.txt"]
        return out


def _python_request(files: Mapping[str, bytes | None]) -> py.Request | None:
    for name in (".python-version", "runtime.txt"):
        data = files.get(name)
        if data is not None:
            found = py.parse_version_request(name, data.decode("utf-8", "replace"))
            if found is not None:
                return found
    return py.requires_python(files.get("pyproject.toml"))


def _install_plan(files: Mapping[str, bytes | None], uv: bool) -> _Install:
    """How to install the app's dependencies: requirements.txt, else a lockfile (uv.lock
    with uv, poetry.lock, Pipfile.lock), else pyproject.toml."""
    requirements = files.get("requirements.txt")
    pyproject = files.get("pyproject.toml")
    notes: tuple[str, ...] = ()
    if requirements is not None:
        if not _has_requirements(requirements.decode("utf-8", "replace")):
            return _Install("requirements.txt")
        return _Install("requirements.txt", ("-r", "requirements.txt"))
    if files.get("uv.lock") is not None and pyproject is not None:
        if uv:
            return _Install("uv.lock")
        notes = ("uv.lock is followed with uv only, which this build host lacks",)
    poetry = files.get("poetry.lock")
    if poetry is not None and pyproject is not None:
        wanted, pinned = py.poetry_requirements(pyproject, poetry)
        return _Install("poetry.lock", requirements=tuple(wanted), constraints=tuple(pinned))
    pipfile = files.get("Pipfile.lock")
    if pipfile is not None:
        return _Install("Pipfile.lock", requirements=tuple(py.pipfile_requirements(pipfile)))
    if files.get("Pipfile") is not None and pyproject is None:
        raise BuildFailed("Pipfile without Pipfile.lock: run 'pipenv lock' and commit it")
    if pyproject is None:
        return _Install("requirements.txt")
    data = py.load_toml("pyproject.toml", pyproject)
    if "build-system" in data:
        return _Install("pyproject.toml", (".",), notes=notes)
    project = data.get("project")
    deps = project.get("dependencies") if isinstance(project, dict) else None
    listed = tuple(d for d in deps if isinstance(d, str)) if isinstance(deps, list) else ()
    return _Install("pyproject.toml", requirements=listed, notes=notes)


def _stage(job: Job, install: _Install) -> None:
    """Write the install's requirement files where its step reads them."""
    if not (install.requirements or install.constraints):
        return
    with _opened(job.src) as root:
        staging = fdtree.open_subdir(root, STAGING, create=True, owner=job.owner)
        assert staging is not None
        try:
            for name, lines in (
                ("requirements.txt", install.requirements),
                ("constraints.txt", install.constraints),
            ):
                data = "".join(f"{line}\n" for line in lines).encode()
                fdtree.write_file(staging, name, data, 0o644, job.owner)
        finally:
            os.close(staging)


_VENV_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")


def _python_profile(job: Job, interpreter: str) -> None:
    """``.profile.d/python.sh``; the virtualenv's links to the interpreter leave the slug
    (it holds no link out of itself: the runtime refuses one) and the profile makes them
    again in each instance's writable app directory. Links are removed by name through
    the directory's descriptor, never followed; the profile links the interpreter the
    platform chose, whatever the links said."""
    names: list[str] = []
    with _opened(job.src) as root:
        bin_fd = _subdir(root, f"{VENV}/bin")
        if bin_fd is not None:
            try:
                for name in sorted(os.listdir(bin_fd)):
                    st = os.stat(name, dir_fd=bin_fd, follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode) or _VENV_PYTHON.match(name) is None:
                        continue
                    if os.readlink(name, dir_fd=bin_fd).startswith("/"):
                        os.unlink(name, dir_fd=bin_fd)
                        names.append(name)
            finally:
                os.close(bin_fd)
    text = PYTHON_PROFILE
    for name in names:
        link = f'"$VIRTUAL_ENV/bin/{name}"'
        text += f"[ -L {link} ] || ln -s {shlex.quote(interpreter)} {link} 2>/dev/null || :\n"
    _write_profile(job.src, "python.sh", text, job.owner)


def _uv_index() -> dict[str, str]:
    """The build host's pip index settings, for uv (which does not read pip's)."""
    env = build_environment()
    out: dict[str, str] = {}
    if "PIP_INDEX_URL" in env and "UV_DEFAULT_INDEX" not in env:
        out["UV_DEFAULT_INDEX"] = env["PIP_INDEX_URL"]
    if "PIP_EXTRA_INDEX_URL" in env and "UV_INDEX" not in env:
        out["UV_INDEX"] = env["PIP_EXTRA_INDEX_URL"]
    return out


@functools.cache
def _uv_binary() -> str | None:
    """The uv that came with the platform (its ``uv`` package), else one on PATH."""
    try:
        import uv  # type: ignore[import-untyped,unused-ignore]

        found: str = uv.find_uv_bin()
        return found
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _read_all(app: Path, names: Sequence[str]) -> dict[str, bytes | None]:
    with _opened(app) as fd:
        return {name: fdtree.read_file(fd, name) for name in names}


def _is_file(top: int, rel: str) -> bool:
    """Whether ``rel`` is a regular file under ``top`` (no link followed on the way)."""
    parent, _, name = rel.rpartition("/")
    try:
        where = fdtree.open_subdir(top, parent) if parent else os.dup(top)
    except BuildFailed:
        return False
    if where is None:
        return False
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=where, follow_symlinks=False).st_mode)
    except OSError:
        return False
    finally:
        os.close(where)
