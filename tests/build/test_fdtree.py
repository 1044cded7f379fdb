"""Trees through directory descriptors: links are never followed, FIFOs never opened, a
directory swapped for a link while it is walked is noticed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from shellwego.build import fdtree
from shellwego.errors import BuildFailed


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the tree, with a file that must never change."""
    where = tmp_path / "outside"
    where.mkdir()
    (where / "keep").write_text("KEEP")
    return where


@pytest.fixture
def tree(tmp_path: Path, outside: Path) -> Iterator[int]:
    root = tmp_path / "tree"
    (root / "b" / "c").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "b" / "c" / "d.txt").write_text("d")
    (root / "to-outside").symlink_to(outside)
    (root / "to-keep").symlink_to(outside / "keep")
    (root / "loop").symlink_to("loop")
    os.mkfifo(root / "pipe")
    fd = fdtree.open_dir(root)
    yield fd
    os.close(fd)


def test_walk_is_sorted_and_never_follows_links(tree: int) -> None:
    seen = [(e.rel, e.is_dir, e.is_link) for e in fdtree.walk(tree, frozenset({"c"}))]
    assert seen == [
        ("a.txt", False, False),
        ("b", True, False),
        ("loop", False, True),
        ("pipe", False, False),
        ("to-keep", False, True),
        ("to-outside", False, True),
    ]


def test_a_directory_swapped_for_a_link_while_walked_is_refused(
    tmp_path: Path, tree: int, outside: Path
) -> None:
    walking = fdtree.walk(tree)
    for entry in walking:
        if entry.rel == "b":  # the walk is about to enter b: swap it for a link
            os.rename(tmp_path / "tree" / "b", tmp_path / "b-moved")
            os.symlink(outside, tmp_path / "tree" / "b")
            with pytest.raises(BuildFailed, match="b changed while the platform was reading it"):
                next(walking)
            break


def test_deep_trees_are_refused(tmp_path: Path) -> None:
    fd = fdtree.open_dir(tmp_path)
    try:
        at = os.dup(fd)
        for _ in range(fdtree.MAX_DEPTH + 2):
            os.mkdir("d", dir_fd=at)
            inner = os.open("d", os.O_RDONLY, dir_fd=at)
            os.close(at)
            at = inner
        os.close(at)
        with pytest.raises(BuildFailed, match="nests deeper than 128 directories"):
            list(fdtree.walk(fd))
    finally:
        os.close(fd)


def test_files_are_read_only_when_regular_and_reached_without_links(tree: int) -> None:
    assert fdtree.read_file(tree, "b/c/d.txt") == b"d"
    assert fdtree.read_file(tree, "missing.txt") is None
    for rel in ("pipe", "to-keep", "to-outside/keep", "loop", "b"):
        with pytest.raises(BuildFailed):
            fdtree.read_file(tree, rel)  # a FIFO fails at once: it is never opened blocking


def test_write_file_replaces_a_link_without_writing_through_it(
    tmp_path: Path, tree: int, outside: Path
) -> None:
    fdtree.write_file(tree, "to-keep", b"mine", 0o4755)
    written = tmp_path / "tree" / "to-keep"
    assert not written.is_symlink() and written.read_bytes() == b"mine"
    assert stat.S_IMODE(written.stat().st_mode) == 0o755  # never a set-id bit
    assert (outside / "keep").read_text() == "KEEP"
    with pytest.raises(IsADirectoryError):
        fdtree.write_file(tree, "b", b"x", 0o644)
    assert not [p for p in (tmp_path / "tree").iterdir() if p.name.endswith(".tmp")]


def test_remove_deletes_links_not_what_they_point_to(tree: int, outside: Path) -> None:
    fdtree.remove(tree, "to-outside")
    fdtree.remove(tree, "b")
    fdtree.remove(tree, "missing")
    assert (outside / "keep").read_text() == "KEEP"
    assert sorted(os.listdir(tree)) == ["a.txt", "loop", "pipe", "to-keep"]


def test_copy_tree_links_files_keeps_links_and_leaves_out_fifos(tmp_path: Path, tree: int) -> None:
    dest = tmp_path / "copy"
    dest.mkdir()
    into = fdtree.open_dir(dest)
    try:
        fdtree.copy_tree(tree, into)
    finally:
        os.close(into)
    assert sorted(os.listdir(dest)) == ["a.txt", "b", "loop", "to-keep", "to-outside"]
    assert (dest / "a.txt").stat().st_ino == (tmp_path / "tree" / "a.txt").stat().st_ino
    assert os.readlink(dest / "to-outside") == str(tmp_path / "outside")
    assert (dest / "b" / "c" / "d.txt").read_text() == "d"


def test_files_of_another_owner_are_refused(tmp_path: Path, tree: int) -> None:
    dest = tmp_path / "copy"
    dest.mkdir()
    into = fdtree.open_dir(dest)
    try:
        with pytest.raises(BuildFailed, match=r"a\.txt is a file the build.s user does not own"):
            fdtree.copy_tree(tree, into, owner=os.geteuid() + 1)
    finally:
        os.close(into)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_chown_tree_gives_links_not_their_targets_and_refuses_hard_links(
    tmp_path: Path, tree: int, outside: Path
) -> None:
    fdtree.chown_tree(tree, (65534, 65534))
    assert (tmp_path / "tree" / "b" / "c" / "d.txt").stat().st_uid == 65534
    assert (tmp_path / "tree" / "to-keep").lstat().st_uid == 65534
    assert (outside / "keep").stat().st_uid == 0 and outside.stat().st_uid == 0
    os.link(outside / "keep", tmp_path / "tree" / "hard")
    with pytest.raises(BuildFailed, match="hard is a hard link"):
        fdtree.chown_tree(tree, (65533, 65533))
    assert (outside / "keep").stat().st_uid == 0
