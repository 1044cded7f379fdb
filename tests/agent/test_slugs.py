"""The slug cache: download once, verify, extract safely, share, collect old slugs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from shellwego.agent.slugs import SlugCache
from shellwego.errors import InvalidInput, ShellWeGoError


def make_slug(where: Path, files: dict[str, bytes], *, evil: str | None = None) -> tuple[str, Path]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if evil:
            info = tarfile.TarInfo(evil)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    blob = buf.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    path = where / f"{digest}.tar.gz"
    path.write_bytes(blob)
    return digest, path


class Store:
    """Serves slugs by digest the way the control plane does, counting downloads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.downloads: list[str] = []

    async def download(self, digest: str, dest: Path) -> Path:
        self.downloads.append(digest)
        await asyncio.sleep(0.01)
        shutil.copyfile(self.root / f"{digest}.tar.gz", dest)
        return dest


@pytest.fixture
def store(tmp_path: Path) -> Store:
    (tmp_path / "store").mkdir()
    return Store(tmp_path / "store")


async def test_download_once_and_share(tmp_path: Path, store: Store) -> None:
    digest, _ = make_slug(store.root, {"Procfile": b"web: serve\n", "app/main.py": b"print(1)\n"})
    cache = SlugCache(tmp_path / "slugs", store.download)
    dirs = await asyncio.gather(*(cache.ensure(digest) for _ in range(4)))
    assert len(set(dirs)) == 1
    app_dir = dirs[0]
    assert app_dir == tmp_path / "slugs" / digest
    assert (app_dir / "Procfile").read_bytes() == b"web: serve\n"
    assert (app_dir / "app" / "main.py").read_bytes() == b"print(1)\n"
    assert store.downloads == [digest]
    assert await cache.ensure(digest) == app_dir
    assert store.downloads == [digest]
    # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "slugs").iterdir()) == [digest]


async def test_unsafe_slug_is_refused_and_leaves_nothing(tmp_path: Path, store: Store) -> None:
    digest, _ = make_slug(store.root, {"ok.txt": b"ok"}, evil="../../escaped.txt")
    cache = SlugCache(tmp_path / "slugs", store.download)
    with pytest.raises(ShellWeGoError):
        await cache.ensure(digest)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "slugs" / digest).exists()
    assert cache.cached() == []


async def test_bad_digest_is_refused(tmp_path: Path, store: Store) -> None:
    cache = SlugCache(tmp_path / "slugs", store.download)
    with pytest.raises(InvalidInput):
        await cache.ensure("../../etc")
    assert store.downloads == []


async def test_gc_keeps_used_and_most_recent(tmp_path: Path, store: Store) -> None:
    cache = SlugCache(tmp_path / "slugs", store.download, keep=2)
    digests = []
    for n in range(5):
        digest, _ = make_slug(store.root, {"n": str(n).encode()})
        path = await cache.ensure(digest)
        os.utime(path, (1000 + n, 1000 + n))  # oldest first
        digests.append(digest)
    removed = cache.gc(in_use={digests[0]})
    # in use: 0; most recent unused: 4 and 3; the rest goes
    assert sorted(removed) == sorted([digests[1], digests[2]])
    assert sorted(cache.cached()) == sorted([digests[0], digests[3], digests[4]])
    assert cache.gc(in_use={digests[0]}) == []


async def test_the_cache_is_private_to_the_agent(tmp_path: Path, store: Store) -> None:
    """Instances never reach a cached slug by its path: they get a layer over it."""
    digest, _ = make_slug(store.root, {"Procfile": b"web: serve\n"})
    previous = os.umask(0)
    try:
        cache = SlugCache(tmp_path / "agent" / "slugs", store.download)
        await cache.ensure(digest)
    finally:
        os.umask(previous)
    for path in (tmp_path / "agent", tmp_path / "agent" / "slugs"):
        assert path.stat().st_mode & 0o777 == 0o700, path


async def test_a_slug_the_control_plane_lacks_is_reported_as_missing(tmp_path: Path) -> None:
    from shellwego.errors import ArtifactMissing, NotFound

    async def download(digest: str, dest: Path) -> Path:
        raise NotFound(f"artifact {digest[:12]}: artifact {digest[:12]} not found")

    cache = SlugCache(tmp_path / "slugs", download)
    with pytest.raises(ArtifactMissing, match="not in the control plane's artifact store"):
        await cache.ensure("cd" * 32)
    assert cache.cached() == []
