"""Applying image layers to a root filesystem, safely.

A layer is a tar (maybe gzipped) of changes over the layers below it; files named
``.wh.NAME`` delete ``NAME`` from the lower layers and ``.wh..wh..opq`` empties its
directory of them (OCI image spec, "whiteouts"). Layers come from anyone, so every entry is
checked before anything is written:

* names are relative and stay inside the root: an absolute name or a ``..`` component is
  refused;
* nothing is ever written *through* a symlink: each directory on the way to an entry is
  opened relative to its parent with ``O_NOFOLLOW``, so a symlink there (``etc -> /etc``
  followed by ``etc/passwd``) is refused instead of followed; symlinks themselves are
  created as they are (they are resolved inside the container at run time);
* hard links must point at an entry already inside the root (same rules);
* device nodes and fifos are skipped; setuid and setgid bits are stripped; file
  capabilities and other extended attributes are not applied.

Any refusal aborts the layer with :class:`UnsafeLayer`; the caller throws the half-made
root away. The uncompressed stream is hashed and checked against the image config's
``diff_id`` for the layer.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import zlib
from pathlib import Path
from typing import IO

from shellwego.images.errors import DigestMismatch, UnsafeLayer, UnsupportedImage

log = logging.getLogger(__name__)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class UnpackBudget:
    """How much one root filesystem may hold, over all its layers: a layer that would
    unpack to more (a decompression bomb) is refused."""

    def __init__(self, max_bytes: int = 16 * 1024**3, max_entries: int = 2_000_000) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self.entries = 0

    def spend(self, layer: str, size: int) -> None:
        self.bytes += max(0, size)
        self.entries += 1
        if self.bytes > self.max_bytes:
            raise UnsafeLayer(
                f"layer {layer}: the image unpacks to more than {self.max_bytes} bytes"
            )
        if self.entries > self.max_entries:
            raise UnsafeLayer(f"layer {layer}: the image has more than {self.max_entries} entries")


class _HashingReader:
    """A read-only file object hashing what is read through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def clean_name(name: str, layer: str) -> tuple[str, ...]:
    """The components of a tar entry's name, refusing absolute names and ``..``."""
    if name.startswith("/"):
        raise UnsafeLayer(f"layer {layer}: absolute path {name[:200]!r}")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeLayer(f"layer {layer}: path {name[:200]!r} escapes the root")
    if any("\0" in p for p in parts):
        raise UnsafeLayer(f"layer {layer}: path with a NUL byte")
    return parts


def _remove(dir_fd: int, name: str) -> None:
    """Remove ``name`` (a file, symlink or whole directory) from ``dir_fd``, following no
    symlink; nothing when it does not exist."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


class _LayerApplier:
    def __init__(self, root_fd: int, layer: str, budget: UnpackBudget) -> None:
        self.root_fd = root_fd
        self.layer = layer
        self.budget = budget
        self.written: set[str] = set()  # entries this layer made ("a/b/c")
        self.holding: set[str] = set()  # directories holding entries this layer made
        self.as_root = os.geteuid() == 0

    def _unsafe(self, path: tuple[str, ...], why: str) -> UnsafeLayer:
        return UnsafeLayer(f"layer {self.layer}: {'/'.join(path)[:200]!r} {why}")

    def _open_dir(self, path: tuple[str, ...], create: bool) -> int | None:
        """An fd of directory ``path`` under the root, walked one component at a time
        without following symlinks; missing directories are made when ``create`` (else
        None)."""
        fd = os.dup(self.root_fd)
        try:
            for i, part in enumerate(path):
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.lstat(part, dir_fd=fd)
                    if stat.S_ISLNK(st.st_mode):
                        raise self._unsafe(
                            path[: i + 1], "is a symlink; refusing to write through it"
                        ) from None
                    raise self._unsafe(path[: i + 1], "is not a directory") from None
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _clear(self, dir_fd: int, prefix: str) -> None:
        """Opaque directory: remove what lower layers put under it."""
        for entry in os.listdir(dir_fd):
            rel = f"{prefix}/{entry}" if prefix else entry
            if rel in self.written:
                st = os.lstat(entry, dir_fd=dir_fd)
                if stat.S_ISDIR(st.st_mode):
                    sub = os.open(entry, _DIR_FLAGS, dir_fd=dir_fd)
                    try:
                        self._clear(sub, rel)
                    finally:
                        os.close(sub)
                continue
            _remove(dir_fd, entry)

    def apply(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            path = clean_name(member.name, self.layer)
            self.budget.spend(self.layer, member.size if member.isreg() else 0)
            if not path:
                continue  # the root itself
            parent, name = path[:-1], path[-1]
            if name == OPAQUE:
                fd = self._open_dir(parent, create=True)
                assert fd is not None
                try:
                    self._clear(fd, "/".join(parent))
                finally:
                    os.close(fd)
                continue
            if name.startswith(WHITEOUT):
                self._whiteout(parent, name[len(WHITEOUT) :])
                continue
            if member.ischr() or member.isblk() or member.isfifo():
                log.debug("layer %s: skipping device or fifo %s", self.layer, "/".join(path)[:200])
                continue
            if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
                log.debug("layer %s: skipping entry of type %r", self.layer, member.type)
                continue
            fd = self._open_dir(parent, create=True)
            assert fd is not None
            try:
                if member.isdir():
                    self._directory(fd, name, member)
                elif member.isreg():
                    self._file(fd, name, member, tar)
                elif member.issym():
                    _remove(fd, name)
                    os.symlink(member.linkname, name, dir_fd=fd)
                    self._own(fd, name, member)
                else:
                    self._hardlink(fd, name, path, member)
            finally:
                os.close(fd)
            self.written.add("/".join(path))
            self.holding.update("/".join(path[:i]) for i in range(1, len(path)))

    def _whiteout(self, parent: tuple[str, ...], target: str) -> None:
        if target in ("", ".", "..") or "/" in target:
            raise self._unsafe((*parent, WHITEOUT + target), "is an invalid whiteout")
        full = "/".join((*parent, target))
        if full in self.written:
            return  # a whiteout hides lower layers only
        fd = self._open_dir(parent, create=False)
        if fd is None:
            return
        try:
            if full in self.holding:  # this layer wrote under it: hide the lower rest only
                sub = os.open(target, _DIR_FLAGS, dir_fd=fd)
                try:
                    self._clear(sub, full)
                finally:
                    os.close(sub)
            else:
                _remove(fd, target)
        finally:
            os.close(fd)

    def _own(self, dir_fd: int, name: str, member: tarfile.TarInfo) -> None:
        if self.as_root:
            os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)

    @staticmethod
    def _mode(member: tarfile.TarInfo) -> int:
        return member.mode & 0o1777  # no setuid, no setgid

    def _directory(self, dir_fd: int, name: str, member: tarfile.TarInfo) -> None:
        try:
            st = os.lstat(name, dir_fd=dir_fd)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dir_fd)
                os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            mode = self._mode(member)
            os.fchmod(fd, mode if self.as_root else mode | 0o700)
            if self.as_root:
                os.fchown(fd, member.uid, member.gid)
        finally:
            os.close(fd)

    def _file(self, dir_fd: int, name: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        _remove(dir_fd, name)
        source = tar.extractfile(member)
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        try:
            if source is not None:
                while chunk := source.read(_CHUNK):
                    _write_all(fd, chunk)
            if self.as_root:
                os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, self._mode(member))  # after chown, which may clear mode bits
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _hardlink(
        self, dir_fd: int, name: str, path: tuple[str, ...], member: tarfile.TarInfo
    ) -> None:
        target = clean_name(member.linkname, self.layer)
        if not target:
            raise self._unsafe(path, "is a hard link to the root")
        tfd = self._open_dir(target[:-1], create=False)
        if tfd is None:
            raise self._unsafe(
                path, f"is a hard link to {member.linkname[:200]!r}, which is not in the image"
            )
        try:
            try:
                st = os.lstat(target[-1], dir_fd=tfd)
            except FileNotFoundError:
                raise self._unsafe(
                    path, f"is a hard link to {member.linkname[:200]!r}, which is not in the image"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise self._unsafe(path, "is a hard link to a directory")
            if target == path:
                return
            _remove(dir_fd, name)
            os.link(target[-1], name, src_dir_fd=tfd, dst_dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(tfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def unpack_layer(
    blob: Path,
    root: Path,
    *,
    layer: str,
    diff_id: str | None = None,
    budget: UnpackBudget | None = None,
) -> None:
    """Apply the layer in file ``blob`` (a tar, gzipped or not) to directory ``root``.
    ``layer`` names it in errors (its digest); ``diff_id``, when given, is the digest the
    uncompressed tar must have; ``budget``: what the root filesystem may still take."""
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        with open(blob, "rb") as raw:
            magic = raw.read(4)
            raw.seek(0)
            if magic.startswith(_ZSTD_MAGIC):
                raise UnsupportedImage(f"layer {layer} is zstd-compressed, which is not supported")
            stream: IO[bytes] = raw
            if magic.startswith(_GZIP_MAGIC):
                stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
            reader = _HashingReader(stream)
            try:
                with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                    _LayerApplier(root_fd, layer, budget or UnpackBudget()).apply(tar)
                reader.drain()
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise UnsupportedImage(
                    f"layer {layer} is not a valid tar archive: {type(exc).__name__}"
                ) from None
        if diff_id and reader.digest != diff_id:
            raise DigestMismatch(
                f"layer {layer} unpacks to {reader.digest}, not the image's {diff_id}"
            )
    finally:
        os.close(root_fd)
