"""Trees walked, read and written through directory file descriptors, never through a link.

What the platform does as root in a tree that tenant code has written (or could still be
writing) goes through here: a directory is entered with ``openat(O_DIRECTORY|O_NOFOLLOW)``
from its parent's descriptor, a file is opened with ``O_NOFOLLOW|O_NONBLOCK`` and checked
with ``fstat`` to be the regular file that ``lstat`` saw, and new names are made with
``O_CREAT|O_EXCL|O_NOFOLLOW`` and renamed into place. Nothing is looked up by a path that
tenant code could change under us, so a link (or a directory swapped for one) is never
followed, a FIFO never blocks and a device is never opened. Trees nested deeper than
:data:`MAX_DEPTH` directories are refused (each level holds a descriptor while it is
walked).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shellwego.errors import BuildFailed

MAX_DEPTH = 128
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1024 * 1024

Owner = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a walked tree: ``dir_fd`` (its directory, open while the walk is at
    it), ``name`` in it, ``rel`` from the top (posix) and what ``lstat`` saw."""

    dir_fd: int
    name: str
    rel: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


def _changed(rel: str) -> BuildFailed:
    return BuildFailed(f"{rel[:200]} changed while the platform was reading it")


def open_dir(path: Path) -> int:
    """A directory the platform made (its own path, not a tenant's), not itself a link."""
    try:
        return os.open(path, DIR_FLAGS)
    except OSError as exc:
        raise BuildFailed(f"cannot open {path}: {exc.strerror}") from None


def open_subdir(
    dir_fd: int, rel: str, *, create: bool = False, owner: Owner | None = None
) -> int | None:
    """``rel`` under ``dir_fd``, entered one name at a time without following links (None
    when missing and not ``create``). Created directories are given to ``owner``."""
    fd = os.dup(dir_fd)
    try:
        for name in _names(rel):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                child = _reopen(fd, name, rel)
                if owner is not None:
                    os.fchown(child, *owner)
            except OSError:
                raise BuildFailed(f"{rel[:200]} is not a directory (or is a link)") from None
            os.close(fd)
            fd = child
        result, fd = fd, -1
        return result
    finally:
        if fd >= 0:
            os.close(fd)


def _reopen(fd: int, name: str, rel: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except OSError:
        raise BuildFailed(f"{rel[:200]} is not a directory (or is a link)") from None


def _names(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BuildFailed(f"{rel[:200]} leaves its tree")
    return parts


def open_file(dir_fd: int, name: str, rel: str, st: os.stat_result | None = None) -> int:
    """Open the regular file ``name`` for reading: never a link, a FIFO or a device, and
    (given ``st``) the very file ``lstat`` saw."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        why = exc.strerror
        raise BuildFailed(f"{rel[:200]} cannot be read as a regular file ({why})") from None
    got = os.fstat(fd)
    if not stat.S_ISREG(got.st_mode) or (
        st is not None and (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino)
    ):
        os.close(fd)
        raise _changed(rel) if st is not None else BuildFailed(f"{rel[:200]} is not a regular file")
    return fd


def read_file(dir_fd: int, rel: str, limit: int = 16 * CHUNK) -> bytes | None:
    """The content of the regular file ``rel`` under ``dir_fd`` (None when it is missing);
    a link anywhere on the way, or something other than a file, is refused."""
    parent, _, name = rel.rpartition("/")
    where = open_subdir(dir_fd, parent) if parent else os.dup(dir_fd)
    if where is None:
        return None
    try:
        try:
            fd = open_file(where, name, rel)
        except BuildFailed:
            try:
                os.stat(name, dir_fd=where, follow_symlinks=False)
            except FileNotFoundError:
                return None
            raise
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise BuildFailed(f"{rel[:200]} is larger than {limit} bytes")
        return data
    finally:
        os.close(where)


def is_dir(dir_fd: int, rel: str) -> bool:
    """Whether ``rel`` is a directory under ``dir_fd``, no link followed on the way."""
    try:
        fd = open_subdir(dir_fd, rel)
    except BuildFailed:
        return False
    if fd is None:
        return False
    os.close(fd)
    return True


def walk(
    root_fd: int,
    skip: frozenset[str] = frozenset(),
    keep: Callable[[str, bool], bool] | None = None,
) -> Iterator[Entry]:
    """Everything under ``root_fd``, sorted by name, parents before their contents, links
    reported and never followed. Names in ``skip`` (at any depth), and what ``keep(rel,
    is_dir)`` refuses, are left out with their contents."""
    stack: list[tuple[int, str, list[str]]] = [(root_fd, "", sorted(os.listdir(root_fd)))]
    try:
        while stack:
            fd, prefix, names = stack[-1]
            if not names:
                stack.pop()
                if fd != root_fd:
                    os.close(fd)
                continue
            name = names.pop(0)
            if name in skip:
                continue
            rel = prefix + name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since it was listed
            entry = Entry(fd, name, rel, st)
            if keep is not None and not keep(rel, entry.is_dir):
                continue
            yield entry
            if entry.is_dir:
                if len(stack) > MAX_DEPTH:
                    raise BuildFailed(f"{rel[:200]} nests deeper than {MAX_DEPTH} directories")
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    raise _changed(rel) from None
                got = os.fstat(child)
                if (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino):
                    os.close(child)
                    raise _changed(rel)
                stack.append((child, rel + "/", sorted(os.listdir(child))))
    finally:
        for fd, _, _ in stack:
            if fd != root_fd:
                os.close(fd)


def remove(dir_fd: int, name: str) -> None:
    """Delete ``name`` (a tree, a file or a link; the link, never what it points to)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # descriptor-based: it never follows a link
    else:
        os.unlink(name, dir_fd=dir_fd)


def write_file(dir_fd: int, name: str, data: bytes, mode: int, owner: Owner | None = None) -> None:
    """Put a new file at ``name`` (replacing a file or link there, never writing through
    it); refused when ``name`` is a directory."""
    tmp = f".{name[:200]}.{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, NEW_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode & 0o777)  # never a set-id bit
    finally:
        os.close(fd)
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        os.unlink(tmp, dir_fd=dir_fd)
        raise


def chown_tree(root_fd: int, owner: Owner) -> None:
    """Give the tree (``root_fd`` last) to ``owner``, links themselves and never what they
    point to; a file with another name elsewhere (a hard link) is refused."""
    for entry in walk(root_fd):
        if entry.is_file and entry.st.st_nlink > 1:
            raise BuildFailed(f"{entry.rel[:200]} is a hard link: it is not handed over")
        os.chown(entry.name, *owner, dir_fd=entry.dir_fd, follow_symlinks=False)
    os.fchown(root_fd, *owner)


def check_owner(entry: Entry, owner: int | None) -> None:
    """A file in a tenant's tree that its user does not own came from outside the tree
    (a hard link): the platform does not read or pass on its content."""
    if owner is not None and entry.is_file and entry.st.st_uid != owner:
        raise BuildFailed(
            f"{entry.rel[:200]} is a file the build's user does not own (a hard link to a "
            "file outside the build?)"
        )


def copy_tree(
    src_fd: int, dst_fd: int, *, owner: int | None = None, give: Owner | None = None
) -> None:
    """Copy the tree under ``src_fd`` into the empty directory ``dst_fd``: files as hard
    links where the filesystem allows (else as copies), links as links; FIFOs, sockets and
    devices left out. With ``owner``, a file ``owner`` does not own is refused (see
    :func:`check_owner`); the directories and links made are given to ``give``."""
    made: dict[str, int] = {"": dst_fd}
    try:
        for entry in walk(src_fd):
            parent, _, _ = entry.rel.rpartition("/")
            at = made[parent]
            check_owner(entry, owner)
            if entry.is_dir:
                os.mkdir(entry.name, 0o755, dir_fd=at)
                made[entry.rel] = _reopen(at, entry.name, entry.rel)
                if give is not None:
                    os.fchown(made[entry.rel], *give)
            elif entry.is_link:
                target = os.readlink(entry.name, dir_fd=entry.dir_fd)
                os.symlink(target, entry.name, dir_fd=at)
                if give is not None:
                    os.chown(entry.name, *give, dir_fd=at, follow_symlinks=False)
            elif entry.is_file:
                _link_or_copy(entry, at, give)
            # drop descriptors of directories the walk has left
            for rel in [r for r in made if r and not _within(entry.rel, r)]:
                os.close(made.pop(rel))
    finally:
        for rel, fd in made.items():
            if rel:
                os.close(fd)


def _within(rel: str, directory: str) -> bool:
    return rel == directory or rel.startswith(directory + "/")


def _link_or_copy(entry: Entry, dst_fd: int, give: Owner | None) -> None:
    try:
        os.link(entry.name, entry.name, src_dir_fd=entry.dir_fd, dst_dir_fd=dst_fd,
                follow_symlinks=False)  # fmt: skip
        return
    except OSError:
        pass
    fd = open_file(entry.dir_fd, entry.name, entry.rel, entry.st)
    try:
        out = os.open(entry.name, NEW_FLAGS, entry.st.st_mode & 0o777, dir_fd=dst_fd)
        if give is not None:
            os.fchown(out, *give)
        with os.fdopen(fd, "rb", closefd=False) as src, os.fdopen(out, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    finally:
        os.close(fd)
