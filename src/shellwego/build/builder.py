"""The builder: an app's source directory in, a relocatable slug (gzip tarball) out.

A slug runs anywhere it is extracted: each process is ``/bin/sh -c <command>`` in the
slug directory with ``HOME`` set to it, after ``$HOME/.profile.d/*.sh`` is sourced. So
dependencies are installed inside the app (``.shellwego/python``, ``node_modules``) and
found through paths relative to ``$HOME``.

Installed dependency trees are cached under ``cache_dir`` by a key over what decides
them (requirements or lockfile, interpreter version); a rebuild with the same key links
the cached tree in instead of installing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shellwego.errors import BuildFailed, RuntimeFailure
from shellwego.runtime.cgroups import Cgroups
from shellwego.runtime.command import BASE_PATH
from shellwego.runtime.layer import chown_tree
from shellwego.runtime.sandbox import Sandbox
from shellwego.runtime.user import NOBODY, SWITCH_CAPS, RunUser, run_user

from .archive import SKIP_NAMES, add_tree, walk
from .detect import GENERIC, LABELS, NODE, PYTHON, STATIC, BuildPlan, detect

Log = Callable[[str], Awaitable[None]]

GiB = 1024**3
INDENT = "       "
PLATFORM_DIR = ".shellwego"
SLUG_NAME = "slug.tar.gz"
# fast over small: level 1 writes a slug ~2.5x faster than 6 for ~15% more bytes
SLUG_COMPRESSION = 1
RELOCATABLE_SHEBANG = b"#!/usr/bin/env python3\n"
INSTALLER_CACHES = ("pip", "npm")  # under the cache dir, written by the build steps

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
ENV_PREFIXES = ("PIP_", "LC_", "npm_config_", "NPM_CONFIG_")

PYTHON_PROFILE = """\
export PYTHONPATH="$HOME/.shellwego/python${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$HOME/.shellwego/python/bin:$PATH"
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
    venv = Path(sys.prefix).resolve() if sys.prefix != sys.base_prefix else None
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


def requirement_files(req: Path) -> list[Path]:
    """``req`` and every file it pulls in with ``-r`` / ``-c``, in order, once each."""
    seen: list[Path] = []
    todo = [req]
    while todo:
        path = todo.pop(0)
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        for line in path.read_text(errors="replace").splitlines():
            match = _INCLUDE.match(line)
            if match:
                todo.append((path.parent / match.group(1)).resolve())
    return seen


def python_key(app: Path, interpreter: str) -> str:
    """Cache key of an app's Python dependency tree.

    requirements.txt and the files it includes, with the whole source tree when they
    refer to local paths; for a pyproject.toml app, the whole source tree.
    """
    material = hashlib.sha256(b"python\0" + interpreter.encode() + b"\0")
    requirements = app / "requirements.txt"
    if not requirements.is_file():
        material.update(b"pyproject\0" + tree_digest(app).encode())
        return material.hexdigest()
    local = False
    for path in requirement_files(requirements.resolve()):
        data = path.read_bytes()
        material.update(data + b"\0")
        lines = data.decode("utf-8", "replace").splitlines()
        local = local or any(_LOCAL.search(line) for line in lines)
    if local:
        material.update(b"tree\0" + tree_digest(app).encode())
    return material.hexdigest()


def tree_digest(root: Path) -> str:
    """sha256 over the names and contents of the source tree (platform directories aside)."""
    digest = hashlib.sha256()
    for path, rel in walk(root, SKIP_NAMES):
        digest.update(rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"L" + os.readlink(path).encode() + b"\0")
        elif path.is_file():
            with path.open("rb") as handle:
                while chunk := handle.read(1024 * 1024):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path) -> None:
    """Copy a tree with hard links where the filesystem allows (symlinks kept as links)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)


def store_tree(src: Path | None, key_dir: Path) -> None:
    """Store ``src`` (or an empty tree) as ``key_dir`` atomically; a concurrent store wins."""
    key_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key_dir.name[:16]}-", dir=key_dir.parent))
    try:
        if src is not None and src.is_dir():
            link_tree(src, tmp / "ready")
        else:
            (tmp / "ready").mkdir()
        try:
            os.rename(tmp, key_dir)
        except OSError:
            if not key_dir.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fix_shebangs(bin_dir: Path) -> int:
    """Point pip's generated scripts at ``python3`` on PATH; returns how many changed."""
    changed = 0
    if not bin_dir.is_dir():
        return 0
    for path in sorted(bin_dir.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        new: bytes | None = None
        if data.startswith(b"#!/bin/sh\n'''exec' "):
            # pip's form for interpreter paths too long for a shebang line
            lines = data.split(b"\n", 3)
            if len(lines) == 4 and lines[2].startswith(b"' '''"):
                new = RELOCATABLE_SHEBANG + lines[3]
        elif data.startswith(b"#!"):
            first, _, rest = data.partition(b"\n")
            if b"python" in first and first + b"\n" != RELOCATABLE_SHEBANG:
                new = RELOCATABLE_SHEBANG + rest
        if new is None:
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(new)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
        changed += 1
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


def write_slug(app: Path, slug: Path) -> tuple[int, str]:
    """Deterministic gzip tarball of ``app``: sorted, mtime 0, owner 0; ``(size, sha256)``."""
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
            add_tree(tar, walk(app, frozenset({".git"})), reproducible=True)
    return hashing.size, hashing.digest.hexdigest()


def _write_profile(app: Path, name: str, text: str) -> None:
    profile = app / ".profile.d"
    if profile.is_symlink() or (profile.exists() and not profile.is_dir()):
        raise BuildFailed(".profile.d must be a directory")
    profile.mkdir(exist_ok=True)
    target = profile / name
    if target.is_symlink() or target.is_dir():
        raise BuildFailed(f".profile.d/{name} is reserved for the platform")
    target.write_text(text)


def _clear(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


class Builder:
    """Builds slugs; build steps run as subprocesses under a memory cap and a time limit.

    The memory cap bounds a whole step, every process it starts included: each step runs
    in a cgroup of its own with that memory limit where the host's cgroups are writable,
    else each of its processes gets that much address space (``prlimit --as``).

    Sandboxed steps of a builder running as root run as ``run_as`` (an unprivileged
    user): the source tree and the installers' caches are handed to that user first.
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
    ) -> None:
        """``hidden_paths``: what build steps (which run the app's own install code) must not
        see, e.g. the platform's data directory. ``sandbox``: None = bubblewrap when it
        works here, False = never. ``cgroups``: None = a memory cgroup per step when the
        host allows it, False = the per-process limit only. ``run_as``: the uid/gid
        sandboxed steps run as when this process is root (None: as root)."""
        self.cache_dir = Path(cache_dir)
        self.memory_bytes = memory_bytes
        self.timeout_seconds = timeout_seconds
        self.hidden_paths = tuple(hidden_paths)
        self._want_sandbox = sandbox
        self._sandbox: Sandbox | None = None
        self._want_cgroups = cgroups
        self._cgroups: Cgroups | None = None
        self._user: RunUser | None = run_user(run_as)

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
        """How build steps' memory is capped on this host (detected once)."""
        if self._cgroups is None:
            self._cgroups = (
                Cgroups(0, {}, "disabled by configuration")
                if self._want_cgroups is False
                else Cgroups.detect()
            )
        return self._cgroups

    async def build(self, src: Path, out: Path, log: Log) -> BuildResult:
        """Build the app in ``src`` (in place) and write ``out/slug.tar.gz``."""
        deadline = asyncio.get_running_loop().time() + self.timeout_seconds
        sandbox = await asyncio.to_thread(self.sandbox)
        if sandbox.binary is None:
            await log(f"-----> Build sandbox unavailable: {sandbox.note}")
        plan: BuildPlan = await asyncio.to_thread(detect, src)
        await log(f"-----> {LABELS[plan.stack]} detected")
        await asyncio.to_thread(_clear, src / PLATFORM_DIR)
        env: dict[str, str] = {}
        if plan.stack == PYTHON:
            env = await self._python(src, log, deadline)
        elif plan.stack == NODE:
            env = await self._node(src, log, deadline)
        elif plan.stack == STATIC:
            await log("-----> Nothing to install: the files are served as they are")
        elif plan.stack == GENERIC:
            await log("-----> Nothing to install: running the Procfile's commands")
        await log("-----> Compressing slug")
        out.mkdir(parents=True, exist_ok=True)
        slug = out / SLUG_NAME
        size, digest = await asyncio.to_thread(write_slug, src, slug)
        return BuildResult(
            slug_path=slug,
            size_bytes=size,
            stack=plan.stack,
            process_types=dict(plan.process_types),
            env=env,
            sha256=digest,
        )

    # ---- python --------------------------------------------------------------------------

    async def _python(self, app: Path, log: Log, deadline: float) -> dict[str, str]:
        python = await asyncio.to_thread(host_python)
        described = await self._capture(
            [
                python,
                "-c",
                "import sys, sysconfig; print(sys.version.split()[0]); "
                "print(sys.implementation.cache_tag, sysconfig.get_platform())",
            ],
            "python3",
        )
        version = described.split()[0] if described.split() else "?"
        await log(f"-----> Using Python {version} ({python})")
        target = app / PLATFORM_DIR / "python"
        requirements = app / "requirements.txt"
        if requirements.is_file():
            if not _has_requirements(requirements.read_text(errors="replace")):
                await log("-----> No dependencies listed in requirements.txt")
                _write_profile(app, "python.sh", PYTHON_PROFILE)
                return {"PYTHONUNBUFFERED": "1"}
            what, args = "requirements.txt", ["-r", "requirements.txt"]
        else:
            what, args = "pyproject.toml", ["."]
        key = await asyncio.to_thread(python_key, app, described)
        cached = self.cache_dir / "python" / key
        if (cached / "ready").is_dir():
            await log(f"-----> Reusing cached Python dependencies ({key[:12]})")
            await asyncio.to_thread(link_tree, cached / "ready", target)
        else:
            await log(f"-----> Installing dependencies from {what} with pip")
            await self._run(
                [
                    python,
                    "-m",
                    "pip",
                    "install",
                    "--target",
                    str(target),
                    "--cache-dir",
                    str(self.cache_dir / "pip"),
                    "--disable-pip-version-check",
                    "--no-input",
                    "--progress-bar",
                    "off",
                    *args,
                ],
                cwd=app,
                env=build_environment({"PIP_ROOT_USER_ACTION": "ignore", "PYTHONUNBUFFERED": "1"}),
                log=log,
                what="pip install",
                deadline=deadline,
            )
            fixed = await asyncio.to_thread(fix_shebangs, target / "bin")
            if fixed:
                await log(f"{INDENT}{fixed} script(s) made relocatable")
            await asyncio.to_thread(store_tree, target, cached)
            await log(f"-----> Cached Python dependencies ({key[:12]})")
        _write_profile(app, "python.sh", PYTHON_PROFILE)
        return {"PYTHONUNBUFFERED": "1"}

    # ---- node ----------------------------------------------------------------------------

    async def _node(self, app: Path, log: Log, deadline: float) -> dict[str, str]:
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            raise BuildFailed("Node.js app detected but node and npm are not on the build host")
        version = (await self._capture([node, "--version"], "node")).strip()
        await log(f"-----> Using Node.js {version}")
        package = app / "package.json"
        lock = app / "package-lock.json"
        try:
            json.loads(package.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BuildFailed(f"package.json is not valid JSON: {exc}") from None
        material = hashlib.sha256(b"node\0" + version.encode() + b"\0" + package.read_bytes())
        if lock.is_file():
            material.update(b"\0lock\0" + lock.read_bytes())
        key = material.hexdigest()
        cached = self.cache_dir / "node" / key
        modules = app / "node_modules"
        await asyncio.to_thread(_clear, modules)
        if (cached / "ready").is_dir():
            await log(f"-----> Reusing cached node_modules ({key[:12]})")
            await asyncio.to_thread(link_tree, cached / "ready", modules)
        else:
            command = "ci" if lock.is_file() else "install"
            await log(f"-----> Installing dependencies with npm {command}")
            await self._run(
                [
                    npm,
                    command,
                    "--omit=dev",
                    "--cache",
                    str(self.cache_dir / "npm"),
                    "--no-audit",
                    "--no-fund",
                    "--no-progress",
                    "--no-update-notifier",
                ],
                cwd=app,
                env=build_environment({"NODE_ENV": "production", "CI": "true"}),
                log=log,
                what=f"npm {command}",
                deadline=deadline,
            )
            await asyncio.to_thread(store_tree, modules if modules.is_dir() else None, cached)
            await log(f"-----> Cached node_modules ({key[:12]})")
        _write_profile(app, "node.sh", NODE_PROFILE)
        return {"NODE_ENV": "production"}

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
    ) -> None:
        """Run one build step, streaming its output line by line into ``log``.

        With bubblewrap, the step sees the host read-only, its own source and the build
        cache writable, a private /tmp as HOME, and none of ``hidden_paths``.
        """
        cgroups = await asyncio.to_thread(self.cgroups)
        dirs: dict[str, str] = {}
        if cgroups.available:
            try:
                dirs = cgroups.create(f"build-{os.urandom(6).hex()}", self.memory_bytes, None)
            except RuntimeFailure as exc:
                await log(f"{INDENT}no memory cgroup for this step ({exc.detail})")
        full, preexec = (argv, None) if dirs else self._limited(argv)
        sandbox = self.sandbox()
        if sandbox.binary is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            keep: tuple[str, ...] = ()
            if self._user is not None:
                await asyncio.to_thread(self._hand_over, cwd, self._user)
                full, keep = [*self._user.argv(), *full], SWITCH_CAPS
            full = sandbox.argv(
                cwd, self.hidden_paths, full, binds=[self.cache_dir], keep_caps=keep
            )
            env = {**env, "HOME": "/tmp"}
        if dirs:
            full = ["/bin/sh", "-c", Cgroups.join_script(dirs) + 'exec "$@"\n', "sh", *full]
        try:
            await self._step(
                full, cwd=cwd, env=env, preexec=preexec, log=log, what=what, deadline=deadline
            )
        except BuildFailed:
            if dirs and Cgroups.oom_kills(dirs):
                raise BuildFailed(
                    f"{what} ran out of memory: the build memory limit is "
                    f"{self.memory_bytes // (1024 * 1024)} MiB for all of a step's processes"
                ) from None
            raise
        finally:
            if dirs:
                await Cgroups.remove(dirs)  # and whatever the step left running in it

    def _hand_over(self, src: Path, user: RunUser) -> None:
        """Let ``user`` write the source tree and the installers' caches (not the stored
        dependency trees, which only this process writes)."""
        chown_tree(src, user.uid, user.gid)
        for name in INSTALLER_CACHES:
            cache = self.cache_dir / name
            cache.mkdir(exist_ok=True)
            if cache.stat().st_uid != user.uid:
                chown_tree(cache, user.uid, user.gid)

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
            await asyncio.wait_for(self._pump(proc, log), max(remaining, 0.001))
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
        await proc.wait()

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
