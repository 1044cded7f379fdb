"""The artifact store: slugs by sha256, and their extraction where they run."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from shellwego.errors import Conflict, InvalidInput, NotFound
from shellwego.files import PRIVATE_FILE, make_private_dir

from .archive import safe_extract

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024
# slugs are built by the platform, but their content is the app developer's
MAX_SLUG_BYTES = 8 * 1024**3
MAX_SLUG_MEMBERS = 1_000_000


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidInput(f"invalid artifact digest {str(digest)[:80]!r}: want 64 hex digits")
    return digest


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    """Content-addressed files: ``root/<first two hex digits>/<sha256>.tar.gz``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _where(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / f"{digest}.tar.gz"

    def put(self, path: Path) -> str:
        """Store a copy of ``path``; returns its sha256. Storing the same bytes again is a no-op."""
        digest = file_digest(path)
        dest = self._where(digest)
        if dest.is_file():
            return digest
        make_private_dir(dest.parent)
        fd, name = tempfile.mkstemp(prefix=f".{digest[:12]}-", dir=dest.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, PRIVATE_FILE)  # mkstemp's already; read only by this process
            if file_digest(tmp) != digest:  # the source changed while it was copied
                raise InvalidInput(f"{path.name} changed while it was being stored")
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def path(self, digest: str) -> Path:
        dest = self._where(digest)
        if not dest.is_file():
            raise NotFound(f"artifact {digest[:12]} not found")
        return dest

    def exists(self, digest: str) -> bool:
        return self._where(digest).is_file()

    def open(self, digest: str) -> BinaryIO:
        return self.path(digest).open("rb")


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
