"""The artifact store: slugs by sha256, named blobs (git repositories), and the
extraction of slugs where they run.

One typed interface, :class:`ArtifactStore`, with two implementations:

- :class:`LocalArtifactStore`: a directory of the data directory (the all-in-one and any
  single control plane; the default);
- :class:`shellwego.build.s3.S3ArtifactStore`: an S3-compatible bucket every control-plane
  replica reaches (``SHELLWEGO_ARTIFACT_STORE=s3://bucket/prefix``), with a local
  directory as its cache.

Slugs are content-addressed: ``<first two hex digits>/<sha256>.tar.gz``. A named blob
(``git/<app id>``) is mutable: ``named/<name>`` holds the sha256 of its current content,
kept beside it as ``named/<name>@<sha256>``. Whatever is fetched is verified against its
sha256 before it is used.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from shellwego.errors import (
    ArtifactMissing,
    ConfigError,
    Conflict,
    InvalidInput,
    RuntimeFailure,
    Unavailable,
)
from shellwego.files import PRIVATE_FILE, make_private_dir

from .archive import safe_extract

if TYPE_CHECKING:
    from shellwego.settings import Settings

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}){0,3}$")
CHUNK = 1024 * 1024
# slugs are built by the platform, but their content is the app developer's
MAX_SLUG_BYTES = 8 * 1024**3
MAX_SLUG_MEMBERS = 1_000_000
NAMED = "named"


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidInput(f"invalid artifact digest {str(digest)[:80]!r}: want 64 hex digits")
    return digest


def check_name(name: str) -> str:
    """A named blob's name: ``kind/part…`` of safe characters (no ``..``, no ``@``)."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidInput(f"invalid artifact name {str(name)[:80]!r}")
    return name


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def slug_key(digest: str) -> str:
    """Where a slug is kept, relative to the store's root or prefix."""
    check_digest(digest)
    return f"{digest[:2]}/{digest}.tar.gz"


def _pointer_key(name: str) -> str:
    return f"{NAMED}/{check_name(name)}"


def _blob_key(name: str, digest: str) -> str:
    return f"{_pointer_key(name)}@{check_digest(digest)}"


def verified(path: Path, digest: str, what: str) -> None:
    """Refuse ``path`` unless its content hashes to ``digest``."""
    actual = file_digest(path)
    if actual != digest:
        raise RuntimeFailure(
            f"{what} failed verification: its content hashes to {actual[:12]}, not {digest[:12]}"
        )


@runtime_checkable
class ArtifactStore(Protocol):
    """Where the control plane keeps slugs and the apps' git repositories."""

    @property
    def shared(self) -> bool:
        """Whether every control-plane replica sees what this one stores."""
        ...

    def put(self, path: Path) -> str:
        """Store a copy of ``path``; returns its sha256. Storing the same bytes again is a no-op."""
        ...

    def exists(self, digest: str) -> bool: ...

    def path(self, digest: str) -> Path:
        """A verified local copy of the slug ``digest`` (:class:`ArtifactMissing` if none)."""
        ...

    def open(self, digest: str) -> BinaryIO: ...

    def put_named(self, name: str, path: Path) -> str:
        """Make ``path``'s content the current blob named ``name``; returns its sha256."""
        ...

    def named_digest(self, name: str) -> str | None:
        """The sha256 of the blob named ``name`` now, None when there is none."""
        ...

    def get_named(self, name: str, dest: Path) -> str | None:
        """Write the blob named ``name`` (verified) to ``dest``; its sha256, None if none."""
        ...

    def delete_named(self, name: str) -> None:
        """Forget the blob named ``name``; a repeat does nothing."""
        ...


class BlobStore(ABC):
    """Named blobs over five primitives on keys (paths relative to the store's root)."""

    @abstractmethod
    def _download(self, key: str, dest: Path) -> bool:
        """Write the object ``key`` to ``dest``; False when there is none."""

    @abstractmethod
    def _upload(self, key: str, src: Path) -> None: ...

    @abstractmethod
    def _read_small(self, key: str) -> bytes | None: ...

    @abstractmethod
    def _write_small(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _list(self, prefix: str) -> list[str]:
        """The keys starting with ``prefix``."""

    def put_named(self, name: str, path: Path) -> str:
        digest = file_digest(path)
        if self.named_digest(name) == digest:
            return digest
        blob = _blob_key(name, digest)
        self._upload(blob, path)
        verify = Path(tempfile.mkstemp(prefix=".verify-", dir=path.parent)[1])
        try:  # what readers get is what was meant: the source did not change meanwhile
            if not self._download(blob, verify) or file_digest(verify) != digest:
                self._delete(blob)
                raise Conflict(f"{path.name} changed while it was being stored")
        finally:
            verify.unlink(missing_ok=True)
        self._write_small(_pointer_key(name), digest.encode())
        for key in self._list(f"{_pointer_key(name)}@"):
            if key != blob:
                self._delete(key)
        return digest

    def named_digest(self, name: str) -> str | None:
        raw = self._read_small(_pointer_key(name))
        if raw is None:
            return None
        digest = raw.decode("ascii", "replace").strip()
        if not _DIGEST.match(digest):
            raise RuntimeFailure(f"the artifact store's pointer {name!r} is damaged")
        return digest

    def get_named(self, name: str, dest: Path) -> str | None:
        for _attempt in range(3):
            digest = self.named_digest(name)
            if digest is None:
                return None
            fd, tmp_name = tempfile.mkstemp(prefix=".fetch-", dir=dest.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                if self._download(_blob_key(name, digest), tmp):
                    verified(tmp, digest, f"{name} {digest[:12]}")
                    os.replace(tmp, dest)
                    return digest
            finally:
                tmp.unlink(missing_ok=True)
            # replaced by a newer blob since its pointer was read: read the pointer again
        raise Unavailable(f"{name} keeps changing in the artifact store; try again")

    def delete_named(self, name: str) -> None:
        self._delete(_pointer_key(name))
        for key in self._list(f"{_pointer_key(name)}@"):
            self._delete(key)


def _copy_into(src: Path, dest: Path, check: Callable[[Path], None] | None = None) -> None:
    """Copy ``src`` to ``dest`` atomically (a private file, fsync'd, then renamed);
    ``check`` may refuse the copy (by raising) before it takes ``dest``'s name."""
    make_private_dir(dest.parent)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name[:12]}-", dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as source:
            shutil.copyfileobj(source, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, PRIVATE_FILE)  # mkstemp's already; read only by this process
        if check is not None:
            check(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class LocalArtifactStore(BlobStore):
    """Everything in one directory: ``root/<first two hex digits>/<sha256>.tar.gz`` and
    ``root/named/…``. Seen by this machine only."""

    shared = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _where(self, digest: str) -> Path:
        return self.root / slug_key(digest)

    def put(self, path: Path) -> str:
        """Store a copy of ``path``; returns its sha256. Storing the same bytes again is a no-op."""
        digest = file_digest(path)
        dest = self._where(digest)
        if dest.is_file():
            return digest

        def unchanged(copy: Path) -> None:
            if file_digest(copy) != digest:  # the source changed while it was copied
                raise InvalidInput(f"{path.name} changed while it was being stored")

        _copy_into(path, dest, unchanged)
        return digest

    def put_verified(self, tmp: Path, digest: str) -> Path:
        """Move ``tmp`` (a file in this store's filesystem) in as the slug ``digest``,
        unless its content is not that slug."""
        verified(tmp, digest, f"artifact {digest[:12]}")
        dest = self._where(digest)
        make_private_dir(dest.parent)
        os.chmod(tmp, PRIVATE_FILE)
        os.replace(tmp, dest)
        return dest

    def path(self, digest: str) -> Path:
        dest = self._where(digest)
        if not dest.is_file():
            raise ArtifactMissing(f"artifact {digest[:12]} not found")
        return dest

    def exists(self, digest: str) -> bool:
        return self._where(digest).is_file()

    def open(self, digest: str) -> BinaryIO:
        return self.path(digest).open("rb")

    # ---- primitives of the named blobs -------------------------------------------------------

    def _key_path(self, key: str) -> Path:
        return self.root / key

    def _download(self, key: str, dest: Path) -> bool:
        src = self._key_path(key)
        try:
            with src.open("rb") as source, dest.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
        except FileNotFoundError:
            return False
        return True

    def _upload(self, key: str, src: Path) -> None:
        _copy_into(src, self._key_path(key))

    def _read_small(self, key: str) -> bytes | None:
        try:
            return self._key_path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _write_small(self, key: str, data: bytes) -> None:
        dest = self._key_path(key)
        make_private_dir(dest.parent)
        fd, name = tempfile.mkstemp(prefix=".ptr-", dir=dest.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(name, dest)

    def _delete(self, key: str) -> None:
        self._key_path(key).unlink(missing_ok=True)

    def _list(self, prefix: str) -> list[str]:
        folder, _, start = prefix.rpartition("/")
        where = self.root / folder
        if not where.is_dir():
            return []
        return sorted(
            f"{folder}/{p.name}"
            for p in where.iterdir()
            if p.name.startswith(start) and p.is_file()
        )


def open_store(settings: Settings) -> ArtifactStore:
    """The store ``settings`` name: ``SHELLWEGO_ARTIFACT_STORE`` (``s3://bucket/prefix``)
    or, by default, ``<data dir>/artifacts``. Credentials come from the environment
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), never from settings or logs."""
    local = LocalArtifactStore(settings.data_dir / "artifacts")
    where = settings.artifact_store
    if not where:
        return local
    if not where.startswith("s3://"):
        raise ConfigError(f"SHELLWEGO_ARTIFACT_STORE must be s3://bucket/prefix, got {where!r}")
    try:
        from .s3 import S3ArtifactStore
    except ImportError as exc:  # boto3 is an optional dependency: the `s3` extra
        raise ConfigError(
            f"SHELLWEGO_ARTIFACT_STORE={where} needs boto3 (pip install 'shellwego[s3]'): {exc}"
        ) from None
    return S3ArtifactStore.from_url(
        where, cache=local, endpoint=settings.s3_endpoint, region=settings.s3_region
    )


def _extract(stream: BinaryIO, dest: Path) -> Path:
    """Extract into ``dest`` once; concurrent extractions of the same slug agree on one."""
    if dest.is_dir():
        return dest
    try:
        safe_extract(stream, dest, max_bytes=MAX_SLUG_BYTES, max_members=MAX_SLUG_MEMBERS)
    except (OSError, Conflict):
        if dest.is_dir():  # another extraction finished first
            return dest
        raise
    return dest


def extract_slug(store: ArtifactStore, digest: str, dest: Path) -> Path:
    """The slug ``digest`` extracted at ``dest`` (extracted now unless it already is)."""
    check_digest(digest)
    if dest.is_dir():
        return dest
    with store.open(digest) as stream:
        return _extract(stream, dest)


def extract_slug_file(tarball: Path, digest: str, dest: Path) -> Path:
    """Verify that ``tarball`` is the slug ``digest``, then extract it at ``dest``."""
    check_digest(digest)
    if dest.is_dir():
        return dest
    actual = file_digest(tarball)
    if actual != digest:
        raise InvalidInput(
            f"slug {digest[:12]} failed verification: its content hashes to {actual[:12]}"
        )
    with tarball.open("rb") as stream:
        return _extract(stream, dest)
