"""Hostile builds against a root builder: sentinel files outside the build, a build tree
the app's uid can reach, and a Python app whose own build backend (``backend-path``)
runs whatever code a test gives it during ``pip install``."""

from __future__ import annotations

import io
import os
import random
import shutil
import stat
import tarfile
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shellwego.build.builder import Builder, BuildResult
from shellwego.errors import BuildFailed
from shellwego.runtime.sandbox import Sandbox

SECRET = b"SENTINEL-SECRET-7c1f"
SHARED = b"SENTINEL-SHARED-91ad"
SCRIPT = b"#!/usr/bin/python3\nprint('SENTINEL-SCRIPT')\n"

PYPROJECT = """\
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "hostile"
version = "0.1"
"""

# A PEP 517 backend: the attack runs in the app's directory when pip builds the wheel.
BACKEND = """\
import os, sys, zipfile

def attack():
{attack}

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    attack()
    name = "hostile-0.1-py3-none-any.whl"
    info = "hostile-0.1.dist-info/"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as whl:
        whl.writestr(info + "METADATA", "Metadata-Version: 2.1\\nName: hostile\\nVersion: 0.1\\n")
        whl.writestr(
            info + "WHEEL",
            "Wheel-Version: 1.0\\nGenerator: hostile\\nRoot-Is-Purelib: true\\n"
            "Tag: py3-none-any\\n",
        )
        whl.writestr("hostile_mod.py", {module!r})
        whl.writestr(info + "RECORD", "")
    return name
"""


def app_uid() -> int:
    """A uid nobody else on this host uses (apps get theirs from 1000000 up)."""
    return random.randrange(3_000_000, 3_900_000)


def need_root_builder(sandboxed: bool = True) -> None:
    if os.geteuid() != 0:
        pytest.skip("the attacks aim at a builder running as root, as the server runs it")
    if sandboxed and Sandbox.detect().binary is None:
        pytest.skip("bubblewrap cannot create a sandbox on this host")


@dataclass(frozen=True)
class Sentinels:
    """Files the attacks aim at, outside any build: root's, in a directory of their own."""

    root: Path

    @property
    def secret(self) -> Path:  # root's alone (0600)
        return self.root / "secret"

    @property
    def script(self) -> Path:  # a root-owned Python script, as fix_shebangs would rewrite
        return self.root / "tool"

    @property
    def shared(self) -> Path:  # 0666: any user may hard-link it (fs.protected_hardlinks)
        return self.root / "shared"

    @property
    def private(self) -> Path:  # a directory only root enters, with a secret in it
        return self.root / "private"

    @property
    def fifo(self) -> Path:
        return self.root / "fifo"

    def make(self) -> None:
        os.chmod(self.root, 0o755)
        for path, data, mode in (
            (self.secret, SECRET, 0o600),
            (self.script, SCRIPT, 0o755),
            (self.shared, SHARED, 0o666),
        ):
            path.write_bytes(data)
            os.chmod(path, mode)
        self.private.mkdir(mode=0o700)
        (self.private / "secret").write_bytes(SECRET)
        os.chmod(self.private / "secret", 0o600)
        (self.private / "tool").write_bytes(SCRIPT)
        os.mkfifo(self.fifo, 0o666)
        os.chmod(self.fifo, 0o666)

    def snapshot(self) -> dict[str, tuple[object, ...]]:
        """Content, type and mode, owner and link count of everything here."""
        seen: dict[str, tuple[object, ...]] = {}
        for path in sorted(self.root.rglob("*")):
            st = path.lstat()
            data = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            seen[str(path)] = (data, st.st_mode, st.st_uid, st.st_gid, st.st_nlink)
        return seen


@pytest.fixture
def sentinels() -> Iterator[Sentinels]:
    root = Path(tempfile.mkdtemp(prefix="sw-sentinel-", dir="/var/tmp"))
    found = Sentinels(root)
    found.make()
    before = found.snapshot()
    yield found
    try:
        assert found.snapshot() == before, "a sentinel outside the build was changed"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def work() -> Iterator[Path]:
    """A build tree an app's uid can reach without a sandbox too (0711, like data/tmp/build-*)."""
    root = Path(tempfile.mkdtemp(prefix="sw-build-", dir="/var/tmp"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def write_app(src: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def hostile_python_app(src: Path, attack: str, module: str = "SAFE = True\n") -> Path:
    """A Python app whose build backend runs ``attack`` (Python, in the app directory)."""
    body = textwrap.indent(attack.strip() or "pass", "    ")
    backend = BACKEND.format(attack=body, module=module)
    return write_app(
        src,
        {"pyproject.toml": PYPROJECT, "backend.py": backend, "Procfile": "web: python3 -c 1\n"},
    )


async def run_build(
    builder: Builder, src: Path, out: Path, uid: int
) -> tuple[Lines, BuildResult | BuildFailed]:
    """Build as the app ``uid``; a refused build is an outcome, not an error."""
    log = Lines()
    try:
        return log, await builder.build(src, out, log, user=(uid, uid))
    except BuildFailed as exc:
        return log, exc


def slug_bytes(result: BuildResult | BuildFailed) -> bytes:
    """Every name and file content of the slug (nothing when the build was refused)."""
    if isinstance(result, BuildFailed):
        return b""
    chunks: list[bytes] = []
    with tarfile.open(result.slug_path) as tar:
        for member in tar:
            chunks.append(member.name.encode() + b"\0" + member.linkname.encode())
            data = tar.extractfile(member) if member.isreg() else None
            if data is not None:
                chunks.append(data.read())
    return b"\n".join(chunks)


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf
