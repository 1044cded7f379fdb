"""The artifact store and slug extraction: content-addressed, idempotent, verified."""

from __future__ import annotations

import hashlib
import io
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shellwego.build.artifacts import LocalArtifactStore as ArtifactStore
from shellwego.build.artifacts import extract_slug, extract_slug_file
from shellwego.errors import InvalidInput, NotFound


def slug_file(path: Path, files: dict[str, bytes], evil: str | None = None) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {**files, **({evil: b"evil"} if evil else {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    src = slug_file(tmp_path / "slug.tar.gz", {"Procfile": b"web: x\n"})
    digest = store.put(src)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    where = store.path(digest)
    assert where == tmp_path / "store" / digest[:2] / f"{digest}.tar.gz"
    assert where.read_bytes() == src.read_bytes()
    before = where.stat().st_mtime_ns
    assert store.put(src) == digest
    assert where.stat().st_mtime_ns == before
    assert store.exists(digest)
    with store.open(digest) as handle:
        assert handle.read() == src.read_bytes()
    assert sorted(p.name for p in where.parent.iterdir()) == [where.name]  # no temp files


def test_missing_and_invalid_digests(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    absent = "0" * 64
    assert not store.exists(absent)
    with pytest.raises(NotFound):
        store.path(absent)
    with pytest.raises(NotFound):
        store.open(absent)
    for bad in ("../../etc/passwd", "a" * 63, "A" * 64, "g" * 64, "", "a" * 65):
        with pytest.raises(InvalidInput):
            store.path(bad)
        with pytest.raises(InvalidInput):
            store.exists(bad)
        with pytest.raises(InvalidInput):
            extract_slug(store, bad, tmp_path / "x")


def test_extract_slug_once_even_when_racing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(
        slug_file(tmp_path / "s.tar.gz", {"Procfile": b"web: x\n", "app/main.py": b"print(1)\n"})
    )
    dest = tmp_path / "slugs" / digest
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: extract_slug(store, digest, dest), range(8)))
    assert set(results) == {dest}
    assert (dest / "app" / "main.py").read_bytes() == b"print(1)\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == [digest]
    (dest / "marker").write_text("kept")
    assert extract_slug(store, digest, dest) == dest
    assert (dest / "marker").read_text() == "kept"  # an extracted slug is not redone


def test_extract_slug_refuses_unsafe_content(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    digest = store.put(slug_file(tmp_path / "s.tar.gz", {"ok": b"ok"}, evil="../escaped"))
    dest = tmp_path / "slugs" / digest
    with pytest.raises(InvalidInput):
        extract_slug(store, digest, dest)
    assert not dest.exists()
    assert not (tmp_path / "slugs" / "escaped").exists()
    assert list((tmp_path / "slugs").iterdir()) == []


def test_extract_slug_file_verifies_the_digest(tmp_path: Path) -> None:
    tarball = slug_file(tmp_path / "download.tar.gz", {"index.html": b"<h1>hi</h1>"})
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(InvalidInput, match="failed verification"):
        extract_slug_file(tarball, wrong, tmp_path / "slugs" / wrong)
    assert not (tmp_path / "slugs" / wrong).exists()
    dest = extract_slug_file(tarball, digest, tmp_path / "slugs" / digest)
    assert (dest / "index.html").read_bytes() == b"<h1>hi</h1>"
    assert extract_slug_file(tarball, digest, dest) == dest
