"""Tarballs across a trust boundary: untrusted ones in (uploads, slugs), source ones out.

``safe_extract`` reads a streamed tar (gzip or plain) that may be hostile: every member
is checked before anything is written (no absolute names, no ``..``, no hard links, no
devices, no writing through symbolic links, no symbolic link pointing outside the tree,
no name a filesystem path could not hold), the expanded size and the member count are
capped, and the tree appears at ``dest`` only once it is complete: on any error nothing is
left behind. It extracts into a directory of its own that only this process can enter, so
no other program can change the tree while it is written and checked.

Trees are written out (``make_tarball``, the builder's slugs) through directory file
descriptors (:mod:`.fdtree`): a link is stored as a link, never followed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from shellwego.errors import BuildFailed, Conflict, InvalidInput, PayloadTooLarge

from . import fdtree
from .fdtree import MAX_DEPTH, Entry

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1024 * 1024
# what a member costs in the raw tar stream beyond its data: header, padding, pax records
MEMBER_OVERHEAD = 3 * tarfile.BLOCKSIZE
HEADER_ALLOWANCE = 1024 * 1024

# a member's name: at most NAME_MAX bytes a part, and short enough for its extracted path to
# stay well within PATH_MAX (4096) wherever it is extracted
MAX_PART_BYTES = 255
MAX_NAME_BYTES = 3072

SKIP_NAMES = frozenset({".git", "__pycache__", ".venv", "node_modules", ".shellwego"})
IGNORE_FILE = ".shellwegoignore"


class _Prefixed(io.RawIOBase):
    """A reader that replays already-sniffed bytes, then reads on from the stream."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


class _Limited(io.RawIOBase):
    """Counts the bytes of the expanded tar stream and stops it past ``limit``."""

    def __init__(self, inner: io.RawIOBase | gzip.GzipFile, limit: int, shown: int) -> None:
        self._inner = inner
        self._limit = limit
        self._shown = shown
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        n = len(data) if data else 0
        self.seen += n
        if self.seen > self._limit:
            raise PayloadTooLarge(f"archive expands beyond {self._shown} bytes")
        buffer[:n] = data
        return n


def _open_stream(stream: BinaryIO, max_bytes: int, max_members: int) -> _Limited:
    head = stream.read(2)
    raw: io.RawIOBase | gzip.GzipFile = _Prefixed(head, stream)
    if head == GZIP_MAGIC:
        raw = gzip.GzipFile(fileobj=io.BufferedReader(raw, CHUNK), mode="rb")
    limit = max_bytes + (max_members + 1) * MEMBER_OVERHEAD + HEADER_ALLOWANCE
    return _Limited(raw, limit, max_bytes)


def _parts(name: str) -> tuple[str, ...]:
    if name.startswith("/"):
        raise InvalidInput(f"archive member {name[:200]!r} has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise InvalidInput(f"archive member {name[:200]!r} escapes the target directory")
    check_name(name, parts, InvalidInput)
    return parts


def check_name(rel: str, parts: Iterable[str], error: type[Exception]) -> None:
    """Refuse (with ``error``) a name no filesystem path could hold, wherever extracted:
    a part over 255 bytes, over 3072 bytes in all, or over MAX_DEPTH directories deep."""
    lengths = [len(os.fsencode(part)) for part in parts]
    if any(n > MAX_PART_BYTES for n in lengths):
        raise error(f"{rel[:200]!r} has a name part longer than {MAX_PART_BYTES} bytes")
    if sum(lengths) + len(lengths) > MAX_NAME_BYTES:
        raise error(f"{rel[:200]!r} is a path longer than {MAX_NAME_BYTES} bytes")
    if len(lengths) > MAX_DEPTH + 1:
        raise error(f"{rel[:200]!r} nests deeper than {MAX_DEPTH} directories")


class _Extraction:
    """Writes checked members under ``root``, never following a link on the way."""

    def __init__(self, root: Path, max_bytes: int, max_members: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.total = 0
        self.members = 0
        self.dirs: set[tuple[str, ...]] = {()}
        self.links: list[Path] = []

    def _parent(self, parts: tuple[str, ...], name: str) -> Path:
        for depth in range(1, len(parts)):
            prefix = parts[:depth]
            if prefix in self.dirs:
                continue
            path = self.root.joinpath(*prefix)
            try:
                st = path.lstat()
            except FileNotFoundError:
                path.mkdir(mode=0o755)
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise InvalidInput(
                        f"archive member {name[:200]!r} lies under a symbolic link"
                    ) from None
                if not stat.S_ISDIR(st.st_mode):
                    raise InvalidInput(
                        f"archive member {name[:200]!r} lies under a file, not a directory"
                    ) from None
            self.dirs.add(prefix)
        return self.root.joinpath(*parts)

    def _clear(self, path: Path, name: str) -> None:
        """Make room for a file or link: a later duplicate member replaces an earlier one."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise InvalidInput(f"archive member {name[:200]!r} conflicts with a directory")
        path.unlink()

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise PayloadTooLarge(f"archive has more than {self.max_members} entries")
        name = member.name
        parts = _parts(name)
        if member.islnk():
            raise InvalidInput(f"archive member {name[:200]!r} is a hard link (not accepted)")
        if member.ischr() or member.isblk() or member.isfifo():
            raise InvalidInput(f"archive member {name[:200]!r} is a device or fifo")
        if not (member.isreg() or member.isdir() or member.issym()):
            raise InvalidInput(f"archive member {name[:200]!r} has an unsupported type")
        if not parts:
            if member.isdir():
                return  # the archive's own top directory ("./")
            raise InvalidInput(f"archive member {name[:200]!r} has no usable name")
        path = self._parent(parts, name)
        if member.isdir():
            self._dir(path, parts, name)
        elif member.issym():
            self._symlink(path, parts, member)
        else:
            self._file(tar, path, member)

    def _dir(self, path: Path, parts: tuple[str, ...], name: str) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            path.mkdir(mode=0o755)
        else:
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidInput(f"archive member {name[:200]!r} conflicts with a file or link")
        self.dirs.add(parts)

    def _symlink(self, path: Path, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        target = member.linkname
        where = posixpath.normpath(posixpath.join("/".join(parts[:-1]) or ".", target))
        if posixpath.isabs(target) or where == ".." or where.startswith("../") or not target:
            raise InvalidInput(
                f"archive member {member.name[:200]!r} is a symbolic link pointing outside"
            )
        self._clear(path, member.name)
        os.symlink(target, path)
        self.links.append(path)

    def _file(self, tar: tarfile.TarFile, path: Path, member: tarfile.TarInfo) -> None:
        self.total += member.size
        if self.total > self.max_bytes:
            raise PayloadTooLarge(f"archive expands beyond {self.max_bytes} bytes")
        self._clear(path, member.name)
        mode = 0o755 if member.mode & 0o111 else 0o644
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - regular members always have data
            raise InvalidInput(f"archive member {member.name[:200]!r} has no data")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
        os.chmod(path, mode)  # the umask must not decide an executable bit
        with contextlib.suppress(OSError, OverflowError, ValueError):
            os.utime(path, (member.mtime, member.mtime))

    def check_links(self) -> None:
        """Every symbolic link, resolved through the finished tree, stays inside it."""
        root = os.path.realpath(self.root)
        for link in self.links:
            real = os.path.realpath(link)
            if real != root and not real.startswith(root + os.sep):
                rel = link.relative_to(self.root)
                raise InvalidInput(f"archive member {str(rel)[:200]!r} resolves outside the tree")


def safe_extract(
    stream: BinaryIO, dest: Path, *, max_bytes: int, max_members: int = 100_000
) -> None:
    """Extract an untrusted tar stream (gzip or plain) into ``dest`` (absent or empty).

    Raises InvalidInput for unsafe or corrupt archives and PayloadTooLarge past the
    limits; either way ``dest`` is left as it was.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise Conflict(f"cannot extract into {dest}: it is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name[:40]}-", dir=dest.parent))
    try:
        job = _Extraction(work, max_bytes, max_members)
        try:
            raw = _open_stream(stream, max_bytes, max_members)
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:
                    job.add(tar, member)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise InvalidInput(f"not a valid tar archive: {exc}") from None
        job.check_links()
        os.chmod(work, 0o755)
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# ---- writing --------------------------------------------------------------------------------


def tar_info(entry: Entry, *, reproducible: bool) -> tarfile.TarInfo | None:
    """A member for a walked entry (never a hard link); None for sockets, fifos, devices.

    ``reproducible`` zeroes times and owners and normalises modes, so the same tree
    always gives the same bytes.
    """
    st = entry.st
    info = tarfile.TarInfo(entry.rel)
    if entry.is_dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif entry.is_link:
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(entry.name, dir_fd=entry.dir_fd)
        info.mode = 0o777
    elif entry.is_file:
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    else:
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0 if reproducible else int(st.st_mtime)
    return info


class _Counting(io.RawIOBase):
    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._inner.write(data)
        self.written += len(data)
        return len(data)


def _ignore_patterns(src: Path) -> list[str]:
    path = src / IGNORE_FILE
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(errors="replace").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _ignored(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for raw in patterns:
        dir_only = raw.endswith("/")
        pattern = raw.rstrip("/")
        if dir_only and not is_dir:
            continue
        anchored = pattern.startswith("/") or "/" in pattern
        pattern = pattern.lstrip("/")
        if fnmatch.fnmatchcase(rel if anchored else name, pattern):
            return True
    return False


def make_tarball(src_dir: Path, out: BinaryIO | Path) -> int:
    """Gzip tar of a source directory for upload; returns the bytes written.

    Leaves out ``.git``, ``__pycache__``, ``.venv``, ``node_modules``, ``.shellwego`` and
    whatever ``.shellwegoignore`` lists (glob patterns, one a line; ``dir/`` matches
    directories only; a pattern with a ``/`` matches the path from the top).
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise InvalidInput(f"{src_dir} is not a directory")
    if isinstance(out, Path):
        with out.open("wb") as handle:
            return make_tarball(src_dir, handle)
    patterns = _ignore_patterns(src_dir)

    def keep(rel: str, is_dir: bool) -> bool:
        return not (patterns and _ignored(rel, is_dir, patterns))

    counter = _Counting(out)
    root = fdtree.open_dir(src_dir)
    try:
        with (
            gzip.GzipFile(fileobj=counter, mode="wb", mtime=0, filename="") as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            add_tree(tar, fdtree.walk(root, SKIP_NAMES, keep), reproducible=False)
    finally:
        os.close(root)
    return counter.written


def add_tree(tar: tarfile.TarFile, entries: Iterable[Entry], *, reproducible: bool) -> None:
    """Add walked entries to ``tar``, files with their content (each opened without
    following a link, and only if it is still the file the walk saw)."""
    for entry in entries:
        info = tar_info(entry, reproducible=reproducible)
        if info is None:
            continue
        if info.isreg():
            fd = fdtree.open_file(entry.dir_fd, entry.name, entry.rel, entry.st)
            with os.fdopen(fd, "rb") as data:
                try:
                    tar.addfile(info, data)
                except OSError:  # it shrank while it was read
                    raise BuildFailed(
                        f"{entry.rel[:200]} changed while the platform was reading it"
                    ) from None
        else:
            tar.addfile(info)
