"""The platform's files are its owner's alone: 0700 directories, 0600 files.

The data directory holds the database (password and token hashes, wrapped keys), the
master key, credentials, uploaded sources, builds, slugs and Caddy's keys. The roles
run with the umask :data:`UMASK` so that whatever they (and the tools they run: SQLite,
git, Caddy) create is private, the helpers here create files and directories with
explicit modes whatever the umask, and :func:`make_private_tree` takes group and other
permissions away from what an older install left readable.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
from collections.abc import Sequence
from pathlib import Path

UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SEARCH_ONLY = 0o011  # group and other may enter a directory, not list it


def make_private_dir(path: Path, mode: int = PRIVATE_DIR) -> None:
    """Create ``path`` with every directory it creates on the way ``mode`` (0700: ours
    only), whatever the umask; ``path`` itself ends up with exactly ``mode``."""
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile: still checked below
            directory.mkdir(mode=mode)
            os.chmod(directory, mode)  # mkdir's mode is cut by the umask
    if stat.S_IMODE(path.stat().st_mode) != mode:
        path.chmod(mode)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (credentials, tokens)."""
    if not path.parent.is_dir():
        make_private_dir(path.parent)
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "w") as handle:
        handle.write(text)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of a file created 0600 (an existing one is made 0600)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # an existing file keeps its mode otherwise
    except OSError:
        os.close(fd)
        raise
    return fd


def _matches(rel: tuple[str, ...], patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        parts = pattern.split("/")
        if len(parts) == len(rel) and all(
            fnmatch.fnmatchcase(name, part) for name, part in zip(rel, parts, strict=True)
        ):
            return True
    return False


def _tightened(mode: int, is_dir: bool) -> int:
    """``mode`` without group and other permissions, except that a search-only directory
    (0711: the process runtime opens the way to an unsandboxed instance's app directory
    so) keeps its search bits: never listable, still enterable."""
    if is_dir and mode & 0o077 == SEARCH_ONLY:
        return mode & 0o700 | SEARCH_ONLY
    return mode & 0o700


def make_private_tree(root: Path, *, leave: Sequence[str] = ()) -> None:
    """Make ``root`` and everything under it its owner's alone (creating ``root`` 0700):
    group and other permissions are taken away, without following links.

    ``leave``: paths relative to ``root`` (``*`` matches one name) of files, or of trees,
    that are the apps' own (a slug keeps the modes its build gave it and belongs to the instance
    user; an instance's writable layer is the app's): neither changed nor entered. The
    directories holding them are made private like the rest.
    """
    if not root.is_dir():
        make_private_dir(root)
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root).parts
        dirs[:] = [d for d in dirs if not _matches((*rel, d), leave)]
        files = [f for f in files if not _matches((*rel, f), leave)]
        for path in (Path(here), *(Path(here, name) for name in files)):
            with contextlib.suppress(FileNotFoundError):
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
                    continue
                mode = _tightened(stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode))
                if mode != stat.S_IMODE(st.st_mode):
                    # the platform's own tree (the apps' are left alone): the links in it
                    # are the platform's too
                    os.chmod(path, mode)
