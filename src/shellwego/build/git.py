"""Git push deploys: one bare repository per app, served by ``git http-backend`` over CGI.

Each repository has a ``pre-receive`` hook (``python -m shellwego.build.hook``) that
builds and deploys a pushed ``main`` or ``master``; a failed deploy rejects the push.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import shellwego
from shellwego.errors import InvalidInput, RuntimeFailure, Unavailable

if TYPE_CHECKING:
    from .artifacts import ArtifactStore

log = logging.getLogger(__name__)

HOOK = "pre-receive"
CHUNK = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def hook_script(python: str | None = None) -> str:
    """The hook: the platform's own interpreter running ``shellwego.build.hook``."""
    interpreter = python or sys.executable
    package_root = str(Path(shellwego.__file__).resolve().parent.parent)
    return (
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(package_root)}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f"exec {shlex.quote(interpreter)} -P -m shellwego.build.hook\n"
    )


def _git(*args: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        ["git", *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if proc.returncode != 0:
        what = next((a for a in args if not a.startswith("-") and "/" not in a), args[0])
        raise RuntimeFailure(f"git {what} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


def _install_hook(repo: Path) -> None:
    hooks = repo / "hooks"
    hooks.mkdir(exist_ok=True)
    hook = hooks / HOOK
    text = hook_script()
    if hook.is_file() and hook.read_text() == text:
        return
    tmp = hooks / f".{HOOK}.tmp"
    tmp.write_text(text)
    os.chmod(tmp, 0o700)  # run by the control plane's own user; nobody else's to read
    os.replace(tmp, hook)


def repos_root(data_dir: Path) -> Path:
    """Where the control plane keeps the apps' bare repositories."""
    return data_dir / "git"


def remove_repo(root: Path, app_id: str) -> None:
    """Delete the app's bare repository, if it has one; a repeat does nothing."""
    shutil.rmtree(repo_path(root, app_id), ignore_errors=True)


def repo_path(root: Path, app_id: str) -> Path:
    if not _REPO_NAME.match(app_id):
        raise InvalidInput(f"invalid repository name {app_id[:80]!r}")
    return root / f"{app_id}.git"


def ensure_repo(root: Path, app_id: str) -> Path:
    """The app's bare repository, created on first use; its hook is kept current."""
    path = repo_path(root, app_id)
    if path.is_dir():
        _install_hook(path)
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{app_id}-", dir=root))
    try:
        # --shared=0600: git makes every file 0600 and directory 0700, whatever the umask
        _git(
            "init",
            "--bare",
            "--quiet",
            "--template=",
            "--initial-branch=main",
            "--shared=0600",
            str(tmp),
        )
        _git("--git-dir", str(tmp), "config", "receive.denyNonFastForwards", "false")
        _install_hook(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# ---- repositories shared through the artifact store ----------------------------------------
#
# With a store every control-plane replica shares, an app's repository lives there as a git
# bundle (``git/<app id>``): before a push (or a fetch) is served, the local repository is
# brought up to the bundle (``git fetch`` from it: objects added, refs moved, nothing
# replaced under a reader), and after a push a new bundle of every ref is stored. A push
# holds the app's cluster-wide repository lock throughout; a fetch only syncs first (see
# the git route).

SYNCED = "shellwego-synced"  # in a bare repository: the bundle's sha256 it was synced with
SYNC_TIMEOUT = 600.0


def stored_name(app_id: str) -> str:
    """The app's repository's name in the artifact store."""
    if not _REPO_NAME.match(app_id):
        raise InvalidInput(f"invalid repository name {app_id[:80]!r}")
    return f"git/{app_id}"


def _refs(repo: Path) -> str:
    return _git("--git-dir", str(repo), "for-each-ref", "--format=%(objectname) %(refname)")


def _synced(repo: Path) -> str | None:
    try:
        return (repo / SYNCED).read_text().strip() or None
    except FileNotFoundError:
        return None


def _mark_synced(repo: Path, digest: str | None) -> None:
    if digest is None:
        (repo / SYNCED).unlink(missing_ok=True)
        return
    tmp = repo / f".{SYNCED}.tmp"
    tmp.write_text(digest + "\n")
    os.replace(tmp, repo / SYNCED)


def _fetch_bundle(repo: Path, bundle: Path, attempts: int = 3) -> None:
    """Move ``repo``'s refs to the bundle's (objects added first); tried again when a
    concurrent update held a ref's lock."""
    for attempt in range(1, attempts + 1):
        try:
            _git(
                "--git-dir",
                str(repo),
                "fetch",
                "--quiet",
                "--prune",
                "--update-head-ok",
                "--no-write-fetch-head",
                str(bundle),
                "+refs/*:refs/*",
                timeout=SYNC_TIMEOUT,
            )
            return
        except RuntimeFailure:
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)


def pull_repo(store: ArtifactStore, root: Path, app_id: str) -> str:
    """The app's repository, brought up to the store's copy when that is newer; returns
    its refs (to tell, after a push, whether anything changed)."""
    repo = ensure_repo(root, app_id)
    name = stored_name(app_id)
    digest = store.named_digest(name)
    if digest is not None and digest != _synced(repo):
        work = Path(tempfile.mkdtemp(prefix=f".{app_id}-pull-", dir=root))
        try:
            bundle = work / "repo.bundle"
            got = store.get_named(name, bundle)
            if got is not None:
                _fetch_bundle(repo, bundle)
                _mark_synced(repo, got)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _refs(repo)


def push_repo(store: ArtifactStore, root: Path, app_id: str, before: str) -> None:
    """Store the app's repository (a bundle of every ref) unless its refs are still
    ``before``."""
    repo = repo_path(root, app_id)
    refs = _refs(repo)
    if refs == before:
        return
    name = stored_name(app_id)
    if not refs.strip():  # every branch deleted
        store.delete_named(name)
        _mark_synced(repo, None)
        return
    work = Path(tempfile.mkdtemp(prefix=f".{app_id}-push-", dir=root))
    try:
        bundle = work / "repo.bundle"
        _git(
            "--git-dir",
            str(repo),
            "bundle",
            "create",
            "--quiet",
            str(bundle),
            "--all",
            timeout=SYNC_TIMEOUT,
        )
        _mark_synced(repo, store.put_named(name, bundle))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- the CGI bridge -------------------------------------------------------------------------


@dataclass(frozen=True)
class CgiRequest:
    method: str
    path_info: str  # "/<repo>.git/<rest>"
    query: str
    content_type: str | None
    content_length: int | None
    content_encoding: str | None
    git_protocol: str | None
    remote_user: str
    remote_addr: str
    may_push: bool = False


@dataclass
class CgiResponse:
    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


def cgi_environment(
    project_root: Path, request: CgiRequest, extra: Mapping[str, str]
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(project_root),
        "GIT_PROJECT_ROOT": str(project_root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "PATH_INFO": request.path_info,
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.query,
        "REMOTE_USER": request.remote_user,
        "REMOTE_ADDR": request.remote_addr,
        # pushing is allowed per request, whatever the repository's own config says
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.receivepack",
        "GIT_CONFIG_VALUE_0": "true" if request.may_push else "false",
        **extra,
    }
    if request.content_type:
        env["CONTENT_TYPE"] = request.content_type
    if request.content_length is not None:
        env["CONTENT_LENGTH"] = str(request.content_length)
    if request.content_encoding:
        env["HTTP_CONTENT_ENCODING"] = request.content_encoding
    if request.git_protocol:
        env["HTTP_GIT_PROTOCOL"] = request.git_protocol
    return env


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()


class _Output:
    """Reads the CGI's stdout into a bounded queue while the request body is still going in."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
        self.buffer = b""
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        try:
            while chunk := await self.proc.stdout.read(CHUNK):
                await self.queue.put(chunk)
        finally:
            await self.queue.put(None)

    @staticmethod
    def _end_of_headers(buffer: bytes) -> tuple[int, int] | None:
        found = [(at, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (at := buffer.find(sep)) >= 0]
        return min(found) if found else None

    async def headers(self) -> tuple[int, dict[str, str]] | None:
        while (end := self._end_of_headers(self.buffer)) is None:
            if len(self.buffer) > MAX_HEADER_BYTES:
                return None
            chunk = await self.queue.get()
            if chunk is None:
                return None
            self.buffer += chunk
        at, length = end
        head = self.buffer[:at].decode("latin-1")
        self.buffer = self.buffer[at + length :]
        status = 200
        headers: dict[str, str] = {}
        for line in head.split("\n"):
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if not name:
                continue
            if name.lower() == "status":
                code = value.split(" ", 1)[0]
                status = int(code) if code.isdigit() else 500
            else:
                headers[name] = value
        return status, headers

    async def body(self) -> AsyncIterator[bytes]:
        if self.buffer:
            yield self.buffer
            self.buffer = b""
        while (chunk := await self.queue.get()) is not None:
            yield chunk


async def http_backend(
    project_root: Path,
    request: CgiRequest,
    body: AsyncIterator[bytes],
    extra_env: Mapping[str, str],
) -> CgiResponse:
    """Run ``git http-backend`` for one request; the response body streams as git writes it.

    The request body is passed in completely before the response starts, so nothing else
    competes for it; the output is read meanwhile, so git never blocks on a full pipe.
    """
    env = cgi_environment(project_root, request, extra_env)
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise Unavailable(f"git is not usable on this server: {exc}") from None
    output = _Output(proc)
    errors = asyncio.create_task(_drain_stderr(proc))
    try:
        await _feed(proc, body)
        parsed = await output.headers()
    except BaseException:
        await _kill(proc)
        output.task.cancel()
        errors.cancel()
        raise
    if parsed is None:
        await _kill(proc)
        output.task.cancel()
        detail = (await errors).strip()
        log.warning("git http-backend gave no response: %s", detail[:500])
        raise RuntimeFailure("git http-backend gave no response")
    status, headers = parsed

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for chunk in output.body():
                yield chunk
            await proc.wait()
            detail = (await errors).strip()
            if detail:
                log.info("git http-backend: %s", detail[:2000])
        finally:
            await _kill(proc)
            output.task.cancel()
            errors.cancel()

    return CgiResponse(status=status, headers=headers, body=stream())


async def _feed(proc: asyncio.subprocess.Process, body: AsyncIterator[bytes]) -> None:
    assert proc.stdin is not None
    try:
        async for chunk in body:
            if chunk:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # git stopped reading: its answer says why
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()
            await proc.stdin.wait_closed()


async def _drain_stderr(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    kept = b""
    while chunk := await proc.stderr.read(CHUNK):
        kept = (kept + chunk)[-16 * 1024 :]
    return kept.decode("utf-8", "replace")
