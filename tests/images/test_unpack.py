"""The layer unpacker: OCI whiteouts, and every hostile entry refused or defused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shellwego.images.errors import DigestMismatch, UnsafeLayer, UnsupportedImage
from shellwego.images.manifest import OCI_LAYER_GZIP, Descriptor
from shellwego.images.store import ImageStore, chain_key
from shellwego.images.unpack import UnpackBudget, unpack_layer
from support.registry import Entry, Layer, make_layer


def _apply(tmp_path: Path, *layers: Layer) -> Path:
    root = tmp_path / "rootfs"
    root.mkdir(exist_ok=True)
    for i, layer in enumerate(layers):
        blob = tmp_path / f"layer{i}.tar.gz"
        blob.write_bytes(layer.blob)
        unpack_layer(blob, root, layer=layer.digest, diff_id=layer.diff_id)
    return root


BASE = make_layer(
    [
        Entry("etc", "dir", mode=0o755),
        Entry("etc/os-release", data=b"ID=test\n"),
        Entry("etc/gone", data=b"deleted above\n"),
        Entry("etc/keep", data=b"kept\n"),
        Entry("opt", "dir", mode=0o755),
        Entry("opt/app", "dir", mode=0o755),
        Entry("opt/app/old.txt", data=b"old\n"),
        Entry("opt/app/sub", "dir", mode=0o755),
        Entry("opt/app/sub/deep.txt", data=b"deep\n"),
        Entry("bin", "dir", mode=0o755),
        Entry("bin/tool", data=b"#!/bin/sh\n", mode=0o755),
    ]
)


def test_layers_apply_in_order_with_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    upper = make_layer(
        [
            Entry("etc/.wh.gone"),
            Entry("etc/os-release", data=b"ID=upper\n"),
            Entry("opt/app", "dir", mode=0o755),
            Entry("opt/app/.wh..wh..opq"),
            Entry("opt/app/new.txt", data=b"new\n"),
            Entry("usr", "dir", mode=0o755),
            Entry("usr/link", "symlink", target="/etc/os-release"),
            Entry("usr/hard", "hardlink", target="etc/keep"),
            Entry("implicit/parent/file", data=b"parents made\n"),
        ]
    )
    root = _apply(tmp_path, BASE, upper)
    assert not (root / "etc/gone").exists()
    assert (root / "etc/keep").read_text() == "kept\n"
    assert (root / "etc/os-release").read_text() == "ID=upper\n"
    assert sorted(os.listdir(root / "opt/app")) == ["new.txt"]
    assert os.readlink(root / "usr/link") == "/etc/os-release"
    assert os.stat(root / "usr/hard").st_ino == os.stat(root / "etc/keep").st_ino
    assert (root / "implicit/parent/file").read_text() == "parents made\n"
    assert stat.S_IMODE(os.stat(root / "bin/tool").st_mode) == 0o755
    assert not any(
        name.startswith(".wh.") for _, dirs, files in os.walk(root) for name in dirs + files
    )


def test_a_whiteout_hides_lower_layers_only(tmp_path: Path) -> None:
    same_layer = make_layer(
        [
            Entry("data", "dir", mode=0o755),
            Entry("data/mine", data=b"this layer\n"),
            Entry("data/.wh.mine"),
            Entry("data/.wh..wh..opq"),
        ]
    )
    root = _apply(tmp_path, same_layer)
    assert (root / "data/mine").read_text() == "this layer\n"
    # a whiteout of a lower directory this layer also writes into keeps this layer's part
    upper = make_layer([Entry("opt/app/fresh.txt", data=b"fresh\n"), Entry("opt/.wh.app")])
    root = (
        _apply(tmp_path / "second", BASE, upper) if (tmp_path / "second").mkdir() is None else root
    )
    assert sorted(os.listdir(root / "opt/app")) == ["fresh.txt"]


def test_a_file_replaces_a_directory_and_a_directory_a_file(tmp_path: Path) -> None:
    upper = make_layer([Entry("opt/app", data=b"now a file\n"), Entry("etc/keep", "dir")])
    root = _apply(tmp_path, BASE, upper)
    assert (root / "opt/app").read_text() == "now a file\n"
    assert (root / "etc/keep").is_dir()


@pytest.mark.parametrize(
    "entries",
    [
        [Entry("../escape", data=b"x")],
        [Entry("a/../../escape", data=b"x")],
        [Entry("/abs", data=b"x")],
        [Entry("link", "hardlink", target="../outside")],
        [Entry("link", "hardlink", target="/etc/passwd")],
        [Entry("link", "hardlink", target="not/there")],
        [Entry("etc/.wh...", data=b"")],
        [Entry("evil", "symlink", target="/etc"), Entry("x", "hardlink", target="evil/passwd")],
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "hardlink-dotdot",
        "hardlink-absolute",
        "hardlink-missing",
        "whiteout-dotdot",
        "hardlink-via-symlink",
    ],
)
def test_path_escapes_are_refused(tmp_path: Path, entries: list[Entry]) -> None:
    with pytest.raises(UnsafeLayer):
        _apply(tmp_path, make_layer(entries))
    assert not (tmp_path / "escape").exists()


def test_writes_through_a_symlink_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = make_layer(
        [
            Entry("evil", "symlink", target=str(outside)),
            Entry("evil/planted", data=b"pwned\n"),
        ]
    )
    with pytest.raises(UnsafeLayer, match="symlink"):
        _apply(tmp_path, hostile)
    assert list(outside.iterdir()) == []
    # the same through a relative link that climbs out, and through a link in a lower layer
    relative = make_layer([Entry("up", "symlink", target="../../.."), Entry("up/x", data=b"")])
    (tmp_path / "one").mkdir()
    with pytest.raises(UnsafeLayer):
        _apply(tmp_path / "one", relative)
    lower = make_layer([Entry("etc", "symlink", target=str(outside))])
    upper = make_layer([Entry("etc/passwd", data=b"root::0:0::/:/bin/sh\n")])
    (tmp_path / "two").mkdir()
    with pytest.raises(UnsafeLayer):
        _apply(tmp_path / "two", lower, upper)
    assert list(outside.iterdir()) == []


def test_a_whiteout_through_a_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    hostile = make_layer(
        [Entry("evil", "symlink", target=str(outside)), Entry("evil/.wh.precious")]
    )
    with pytest.raises(UnsafeLayer):
        _apply(tmp_path, hostile)
    assert (outside / "precious").read_text() == "keep me"
    opaque = make_layer(
        [Entry("evil2", "symlink", target=str(outside)), Entry("evil2/.wh..wh..opq")]
    )
    with pytest.raises(UnsafeLayer):
        _apply(tmp_path, opaque)
    assert (outside / "precious").read_text() == "keep me"


def test_a_symlink_replacing_a_file_is_not_followed_by_the_next_file(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("original")
    hostile = make_layer(
        [Entry("f", "symlink", target=str(outside)), Entry("f", data=b"overwritten?")]
    )
    root = _apply(tmp_path, hostile)
    assert outside.read_text() == "original"
    assert (root / "f").read_text() == "overwritten?"
    assert not (root / "f").is_symlink()


def test_devices_and_fifos_are_skipped_and_setuid_stripped(tmp_path: Path) -> None:
    layer = make_layer(
        [
            Entry("dev", "dir", mode=0o755),
            Entry("dev/null", "chr", mode=0o666),
            Entry("dev/sda", "blk", mode=0o660),
            Entry("pipe", "fifo", mode=0o644),
            Entry("suid", data=b"#!/bin/sh\n", mode=0o4755),
            Entry("sgid", data=b"#!/bin/sh\n", mode=0o2755),
            Entry("sgid-dir", "dir", mode=0o2775),
            Entry("tmp", "dir", mode=0o1777),
        ]
    )
    root = _apply(tmp_path, layer)
    assert os.listdir(root / "dev") == []
    assert not os.path.lexists(root / "pipe")
    assert stat.S_IMODE(os.stat(root / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "sgid").st_mode) == 0o755
    assert not os.stat(root / "sgid-dir").st_mode & stat.S_ISGID
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777


def test_a_layer_not_matching_its_diff_id_is_refused(tmp_path: Path) -> None:
    layer = make_layer([Entry("a", data=b"a")])
    other = make_layer([Entry("b", data=b"b")])
    root = tmp_path / "rootfs"
    root.mkdir()
    blob = tmp_path / "layer.tar.gz"
    blob.write_bytes(layer.blob)
    with pytest.raises(DigestMismatch):
        unpack_layer(blob, root, layer=layer.digest, diff_id=other.diff_id)


def test_garbage_and_zstd_layers_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    for name, data in (("garbage", b"\x1f\x8bnot gzip at all"), ("zstd", b"\x28\xb5\x2f\xfd....")):
        blob = tmp_path / name
        blob.write_bytes(data)
        with pytest.raises(UnsupportedImage):
            unpack_layer(blob, root, layer=name)


def _descriptor(layer: Layer) -> Descriptor:
    return Descriptor(media_type=OCI_LAYER_GZIP, digest=layer.digest, size=len(layer.blob))


def _store_with(tmp_path: Path, *layers: Layer) -> ImageStore:
    store = ImageStore(tmp_path / "images")
    store.blobs.mkdir(parents=True)
    for layer in layers:
        store.blob_path(layer.digest).write_bytes(layer.blob)
    return store


def test_the_store_caches_a_rootfs_by_its_layer_chain(tmp_path: Path) -> None:
    upper = make_layer([Entry("etc/extra", data=b"x")])
    store = _store_with(tmp_path, BASE, upper)
    layers = [_descriptor(BASE), _descriptor(upper)]
    rootfs = store.materialize(layers, [BASE.diff_id, upper.diff_id])
    assert rootfs.name == chain_key([BASE.digest, upper.digest]).removeprefix("sha256:")
    assert (rootfs / "etc/extra").exists()
    (rootfs / "marker").write_text("cached")
    assert store.materialize(layers) == rootfs
    assert (rootfs / "marker").exists()  # not unpacked again
    assert chain_key([BASE.digest]) != chain_key([BASE.digest, upper.digest])
    assert chain_key([BASE.digest, upper.digest]) != chain_key([upper.digest, BASE.digest])


def test_a_refused_layer_leaves_no_rootfs_behind(tmp_path: Path) -> None:
    hostile = make_layer([Entry("ok", data=b"fine"), Entry("../escape", data=b"x")])
    store = _store_with(tmp_path, BASE, hostile)
    with pytest.raises(UnsafeLayer):
        store.materialize([_descriptor(BASE), _descriptor(hostile)])
    assert list(store.rootfs_dir.iterdir()) == []


def test_an_image_unpacking_to_more_than_its_budget_is_refused(tmp_path: Path) -> None:
    big = make_layer([Entry("zeros", data=b"\0" * 200_000)])  # compresses to little
    store = _store_with(tmp_path, BASE, big)
    small = ImageStore(store.root, budget=lambda: UnpackBudget(max_bytes=100_000))
    with pytest.raises(UnsafeLayer, match="more than 100000 bytes"):
        small.materialize([_descriptor(BASE), _descriptor(big)])
    assert list(small.rootfs_dir.iterdir()) == []
    few = ImageStore(store.root, budget=lambda: UnpackBudget(max_entries=5))
    with pytest.raises(UnsafeLayer, match="more than 5 entries"):
        few.materialize([_descriptor(BASE)])
    assert store.materialize([_descriptor(BASE), _descriptor(big)]).is_dir()
