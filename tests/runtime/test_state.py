"""Directories the runtime creates are private at every level, whatever the umask."""

from __future__ import annotations

import stat
from pathlib import Path

from shellwego.files import make_private_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_directory_created_is_private(tmp_path: Path, open_umask: None) -> None:
    (tmp_path / "exists").mkdir(mode=0o755)
    make_private_dir(tmp_path / "exists" / "a" / "b" / "c")
    assert _mode(tmp_path / "exists") == 0o755  # not ours to change
    for path in ("exists/a", "exists/a/b", "exists/a/b/c"):
        assert _mode(tmp_path / path) == 0o700, path


def test_the_directory_itself_gets_exactly_the_mode(tmp_path: Path, open_umask: None) -> None:
    (tmp_path / "wide").mkdir(mode=0o777)
    make_private_dir(tmp_path / "wide")
    assert _mode(tmp_path / "wide") == 0o700
    make_private_dir(tmp_path / "wide", 0o711)
    assert _mode(tmp_path / "wide") == 0o711
    make_private_dir(tmp_path / "new" / "dir", 0o711)
    assert (_mode(tmp_path / "new"), _mode(tmp_path / "new" / "dir")) == (0o711, 0o711)
