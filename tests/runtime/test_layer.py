"""The app layer over a slug, in the fallback mode that works for any user: a private copy."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from shellwego.errors import RuntimeFailure
from shellwego.runtime.layer import COPY, OVERLAY, Layers
from shellwego.runtime.user import RunUser


def _slug(root: Path) -> Path:
    slug = root / "slugs" / "abc"
    (slug / "static").mkdir(parents=True)
    (slug / "data.txt").write_text("shipped\n")
    (slug / "run").write_text("#!/bin/sh\n")
    (slug / "run").chmod(0o755)
    os.symlink("data.txt", slug / "link")
    return slug


def test_a_copy_layer_is_fresh_at_each_start_and_leaves_the_slug_alone(tmp_path: Path) -> None:
    slug = _slug(tmp_path)
    layers = Layers(COPY)
    app = layers.prepare(slug, tmp_path / "i-1", None)
    assert app == tmp_path / "i-1" / "app"
    assert (app / "data.txt").read_text() == "shipped\n"
    assert os.readlink(app / "link") == "data.txt"
    assert (app / "run").stat().st_mode & 0o777 == 0o755
    (app / "data.txt").write_text("changed\n")
    (app / "static" / "new.css").write_text("x")
    again = layers.prepare(slug, tmp_path / "i-1", None)
    assert (again / "data.txt").read_text() == "shipped\n"
    assert not (again / "static" / "new.css").exists()
    assert (slug / "data.txt").read_text() == "shipped\n"
    assert layers.prefix() == [] and layers.mount_script(slug, tmp_path / "i-1") == ""


def test_a_copy_layer_belongs_to_the_instance_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give files away")
    slug = _slug(tmp_path)
    app = Layers(COPY).prepare(slug, tmp_path / "i-1", RunUser(65534, 65534, "setpriv"))
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [app, *app.rglob("*")]}
    assert owners == {(65534, 65534)}
    assert {p.lstat().st_uid for p in [slug, *slug.rglob("*")]} == {0}


def test_an_overlay_never_hands_a_slug_its_instances_could_reach(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("overlays are for a root agent")
    user = RunUser(65534, 65534, "setpriv")
    shared = Path(tempfile.mkdtemp(prefix="shellwego-test-", dir="/var/tmp"))
    try:
        shared.chmod(0o755)
        slug = _slug(shared)  # shared/slugs is 0755: uid 65534 could walk in
        assert user.blocked_at(slug) is None
        with pytest.raises(RuntimeFailure, match="only root can enter"):
            Layers(OVERLAY, "unshare", "mount").prepare(slug, tmp_path / "i-1", user)
        assert {p.lstat().st_uid for p in [slug, *slug.rglob("*")]} == {0}
    finally:
        shutil.rmtree(shared)
