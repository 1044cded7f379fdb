"""Untrusted tarballs: hostile ones are refused and leave nothing behind; good ones extract."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from shellwego.build.archive import make_tarball, safe_extract
from shellwego.errors import Conflict, InvalidInput, PayloadTooLarge, ShellWeGoError

Member = tuple[tarfile.TarInfo, bytes | None]


def reg(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755
    return info, None


def tarball(members: list[Member], *, compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def extract(blob: bytes, dest: Path, **limits: int) -> None:
    safe_extract(io.BytesIO(blob), dest, max_bytes=limits.pop("max_bytes", 10**6), **limits)


def test_good_archive_extracts(tmp_path: Path) -> None:
    blob = tarball(
        [
            special("./", tarfile.DIRTYPE),
            reg("./Procfile", b"web: ./run\n"),
            reg("./run", b"#!/bin/sh\necho hi\n", mode=0o755),
            reg("app/deep/mod.py", b"X = 1\n"),  # parents without their own members
            special("docs", tarfile.DIRTYPE),
            special("current", tarfile.SYMTYPE, "app/deep"),
            special("app/deep/up", tarfile.SYMTYPE, "../../Procfile"),
        ]
    )
    dest = tmp_path / "out"
    extract(blob, dest)
    assert (dest / "Procfile").read_bytes() == b"web: ./run\n"
    assert os.access(dest / "run", os.X_OK)
    assert not (dest / "Procfile").stat().st_mode & 0o111
    assert (dest / "app" / "deep" / "mod.py").read_text() == "X = 1\n"
    assert (dest / "docs").is_dir()
    assert os.readlink(dest / "current") == "app/deep"
    assert (dest / "app" / "deep" / "up").read_bytes() == b"web: ./run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_plain_tar_and_empty_dest_dir(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    dest.mkdir()
    extract(tarball([reg("a.txt", b"plain")], compress=False), dest)
    assert (dest / "a.txt").read_bytes() == b"plain"


def test_non_empty_dest_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(Conflict):
        extract(tarball([reg("a.txt")]), dest)
    assert (dest / "keep").read_text() == "mine"


ATTACKS: dict[str, tuple[Callable[[], bytes], type[ShellWeGoError], dict[str, int]]] = {
    "dotdot": (lambda: tarball([reg("ok.txt"), reg("../evil", b"evil")]), InvalidInput, {}),
    "nested dotdot": (lambda: tarball([reg("a/../../evil", b"evil")]), InvalidInput, {}),
    "absolute": (lambda: tarball([reg("/tmp/evil-abs", b"evil")]), InvalidInput, {}),
    "symlink to absolute": (
        lambda: tarball([special("etc", tarfile.SYMTYPE, "/etc")]),
        InvalidInput,
        {},
    ),
    "symlink up": (
        lambda: tarball([special("sub/up", tarfile.SYMTYPE, "../../evil")]),
        InvalidInput,
        {},
    ),
    "symlink chain escape": (
        # each link looks inside on its own; resolved together they leave the tree
        lambda: tarball(
            [
                special("here", tarfile.SYMTYPE, "."),
                special("out", tarfile.SYMTYPE, "here/.."),
            ]
        ),
        InvalidInput,
        {},
    ),
    "write through symlink": (
        lambda: tarball(
            [special("d", tarfile.SYMTYPE, "sub"), special("sub", tarfile.DIRTYPE), reg("d/x")]
        ),
        InvalidInput,
        {},
    ),
    "hardlink": (
        lambda: tarball([reg("a.txt"), special("b.txt", tarfile.LNKTYPE, "a.txt")]),
        InvalidInput,
        {},
    ),
    "hardlink outside": (
        lambda: tarball([special("passwd", tarfile.LNKTYPE, "/etc/passwd")]),
        InvalidInput,
        {},
    ),
    "fifo": (lambda: tarball([special("pipe", tarfile.FIFOTYPE)]), InvalidInput, {}),
    "device": (lambda: tarball([special("null", tarfile.CHRTYPE)]), InvalidInput, {}),
    "oversize": (
        lambda: tarball([reg("a", b"a" * 600), reg("b", b"b" * 600)]),
        PayloadTooLarge,
        {"max_bytes": 1000},
    ),
    "too many members": (
        lambda: tarball([reg(f"f{n}") for n in range(11)]),
        PayloadTooLarge,
        {"max_members": 10},
    ),
    "not a tar": (lambda: b"this is not a tarball at all\n" * 40, InvalidInput, {}),
    "empty": (lambda: b"", InvalidInput, {}),
    "random gzip": (
        lambda: __import__("gzip").compress(os.urandom(4096)),
        InvalidInput,
        {},
    ),
    "truncated": (lambda: tarball([reg("big", os.urandom(50_000))])[:2000], InvalidInput, {}),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_hostile_archive_is_refused_and_leaves_nothing(tmp_path: Path, attack: str) -> None:
    make, error, limits = ATTACKS[attack]
    root = tmp_path / "root"
    root.mkdir()
    dest = root / "src"
    with pytest.raises(error) as raised:
        extract(make(), dest, **limits)
    if attack in ("not a tar", "empty", "random gzip", "truncated"):
        assert str(raised.value).startswith("not a valid tar archive: ")
    assert not dest.exists()
    assert list(root.iterdir()) == [], "no temporary directory may be left behind"
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/evil-abs").exists()


def test_failed_extraction_keeps_an_existing_empty_dest_empty(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    dest.mkdir()
    with pytest.raises(InvalidInput):
        extract(tarball([reg("ok.txt"), reg("../evil")]), dest)
    assert dest.is_dir() and list(dest.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_make_tarball_skips_and_honours_ignore_file(tmp_path: Path) -> None:
    src = tmp_path / "app"
    for rel, text in {
        "app.py": "print(1)\n",
        "pkg/mod.py": "X = 1\n",
        "pkg/__pycache__/mod.cpython-311.pyc": "junk",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".venv/bin/python": "junk",
        "node_modules/x/index.js": "junk",
        ".shellwego/python/six.py": "junk",
        "debug.log": "junk",
        "logs/keep.txt": "kept",
        "sub/logs/a.txt": "kept",
        "build/out.bin": "junk",
        "secret/key": "junk",
        ".shellwegoignore": "# comments are ignored\n*.log\n/build\nsecret/\n",
    }.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "link").symlink_to("app.py")
    os.link(src / "app.py", src / "hard.py")  # a second name of the same file stays a file

    out = tmp_path / "src.tar.gz"
    written = make_tarball(src, out)
    assert written == out.stat().st_size > 0
    buf = io.BytesIO()
    assert make_tarball(src, buf) == len(buf.getvalue())

    with tarfile.open(out) as tar:
        names = sorted(tar.getnames())
    assert names == sorted(
        [
            ".shellwegoignore",
            "app.py",
            "hard.py",
            "link",
            "logs",
            "logs/keep.txt",
            "pkg",
            "pkg/mod.py",
            "run.sh",
            "sub",
            "sub/logs",
            "sub/logs/a.txt",
        ]
    )
    dest = tmp_path / "back"
    with out.open("rb") as stream:
        safe_extract(stream, dest, max_bytes=10**6)
    assert (dest / "hard.py").read_text() == "print(1)\n"
    assert os.readlink(dest / "link") == "app.py"
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755


def test_make_tarball_of_a_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        make_tarball(tmp_path / "nope", io.BytesIO())
