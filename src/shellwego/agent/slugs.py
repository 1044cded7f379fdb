"""The node's slug cache: ``<state_dir>/slugs/<digest>-<uid>/`` holds one extracted slug
for the instances of the app running as ``uid`` (``<digest>`` alone when instances do not
run as an app uid of their own).

A missing slug is downloaded from the control plane (sha256-verified), extracted
safely and atomically, and shared by every instance of every release of that app built
from it -- read-only: instances never write to it nor even see it. The runtime gives each instance
a private writable layer over it (see :mod:`shellwego.runtime.layer`), and the cache
directory is private to the agent (0700), so no instance can reach a slug by its path.
Slugs no instance uses are deleted, except the ``keep`` most recently used ones (so a
rollback does not download again).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from shellwego.errors import ArtifactMissing, InvalidInput, NotFound, RuntimeFailure
from shellwego.files import make_private_dir
from shellwego.runtime.layer import slug_dir_name

log = logging.getLogger(__name__)

Downloader = Callable[[str, Path], Awaitable[Path]]

DIGEST_LENGTH = 64
HEX = frozenset("0123456789abcdef")


def check_digest(digest: str) -> str:
    if len(digest) != DIGEST_LENGTH or not set(digest) <= HEX:
        raise InvalidInput(f"invalid slug digest {digest[:80]!r}")
    return digest


def _is_slug_dir(name: str) -> bool:
    digest, _, uid = name.partition("-")
    return len(digest) == DIGEST_LENGTH and set(digest) <= HEX and (not uid or uid.isdigit())


def _fallback_extract(tarball: Path, dest: Path) -> Path:
    """Extract a gzip'd tar into ``dest`` atomically with tarfile's ``data`` filter.

    The filter refuses absolute paths, ``..`` escapes, links pointing outside, devices
    and set-uid bits.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name[:12]}-", dir=dest.parent))
    try:
        try:
            with tarfile.open(tarball, "r:*") as tar:
                tar.extractall(work, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise RuntimeFailure(f"slug {dest.name[:12]} cannot be extracted: {exc}") from exc
        try:
            os.rename(work, dest)
        except OSError:
            if not dest.is_dir():
                raise
            shutil.rmtree(work, ignore_errors=True)  # another extraction won the race
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest


def extract(tarball: Path, digest: str, dest: Path) -> Path:
    """Extract with the build package's verified extractor, or tarfile's data filter."""
    try:
        artifacts = importlib.import_module("shellwego.build.artifacts")
    except ImportError:
        return _fallback_extract(tarball, dest)
    result: Path = artifacts.extract_slug_file(tarball, digest, dest)
    return result


class SlugCache:
    def __init__(self, root: Path, download: Downloader, *, keep: int = 3) -> None:
        self.root = root
        self.download = download
        self.keep = keep
        self._locks: dict[str, asyncio.Lock] = {}

    def path_of(self, digest: str, uid: int | None = None) -> Path:
        return self.root / slug_dir_name(check_digest(digest), uid)

    def cached(self) -> list[str]:
        """The slug directories held (``<digest>`` or ``<digest>-<uid>``)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _is_slug_dir(p.name))

    async def ensure(self, digest: str, uid: int | None = None) -> Path:
        """The extracted slug's directory for instances running as ``uid``, downloading it
        first when it is not cached."""
        dest = self.path_of(digest, uid)
        lock = self._locks.setdefault(dest.name, asyncio.Lock())
        async with lock:
            if dest.is_dir():
                with contextlib.suppress(OSError):
                    os.utime(dest)  # most recently used: kept longest by gc
                return dest
            make_private_dir(self.root)
            tarball = self.root / f".{dest.name}.tar.gz"
            try:
                log.info("downloading slug %s", digest[:12])
                try:
                    await self.download(digest, tarball)
                except NotFound:
                    raise ArtifactMissing(
                        f"slug {digest[:12]} is not in the control plane's artifact store"
                    ) from None
                await asyncio.to_thread(extract, tarball, digest, dest)
            finally:
                with contextlib.suppress(OSError):
                    tarball.unlink()
            log.info("slug %s ready", digest[:12])
            return dest

    def gc(self, in_use: Iterable[str]) -> list[str]:
        """Delete unused slug directories (``in_use``: their names, see
        :func:`slug_dir_name`) beyond the ``keep`` most recently used; returns what went."""
        used = set(in_use)
        spare = [d for d in self.cached() if d not in used and not self._busy(d)]
        spare.sort(key=lambda d: (self.root / d).stat().st_mtime, reverse=True)
        removed = []
        for digest in spare[self.keep :]:
            shutil.rmtree(self.root / digest, ignore_errors=True)
            removed.append(digest)
            log.info("removed unused slug %s", digest[:12])
        for digest in [d for d, lock in self._locks.items() if not lock.locked()]:
            if digest not in used:
                del self._locks[digest]
        return removed

    def _busy(self, digest: str) -> bool:
        lock = self._locks.get(digest)
        return lock is not None and lock.locked()
