"""A hostile app against the root side of the builder: its upload, and what its own code
writes during the build (a ``backend-path`` build backend runs inside ``pip install``).

Each attack aims at sentinel files made outside the build (under /var/tmp, root's); the
``sentinels`` fixture fails the test if any of them changed (content, mode, owner, link
count), and no slug may carry what only root can read. Builds run as the server runs
them: the builder as root, steps as the app's own uid, in the sandbox unless a test says
otherwise (hard links across the sandbox's mounts are refused by the kernel, so those
attacks run without it).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from shellwego.build.archive import safe_extract
from shellwego.build.builder import RELOCATABLE_SHEBANG, Builder, BuildResult
from shellwego.errors import BuildFailed, InvalidInput
from support.hostile_build import (
    SECRET,
    SHARED,
    Sentinels,
    app_uid,
    hostile_python_app,
    need_root_builder,
    run_build,
    slug_bytes,
    tar_of,
    write_app,
)

BIN = ".shellwego/python/bin"

# what the app's build backend does, in its app directory; @NAME@ is a sentinel's path
ATTACKS = {
    # the reported one: pip's script, and its temporary name linked at a host file
    "shebang-tmp-link": f"""
os.makedirs("{BIN}", exist_ok=True)
with open("{BIN}/tool", "w") as f:
    f.write("#!/usr/local/bin/python3.11\\nprint(1)\\n")
os.symlink("@SECRET@", "{BIN}/.tool.tmp")
""",
    # the scripts directory itself a link to a host directory holding a root's script
    "bin-dir-link": """
import shutil
shutil.rmtree(".shellwego/python/bin", ignore_errors=True)
os.symlink("@ROOT@", ".shellwego/python/bin")
""",
    # links to host files and directories, devices and FIFOs, dangling links, loops
    "links-devices-fifos-loops": f"""
os.makedirs("{BIN}", exist_ok=True)
os.mkfifo("{BIN}/fifo-tool"); os.mkfifo("root.fifo")
os.symlink("@FIFO@", "{BIN}/host-fifo"); os.symlink("@FIFO@", "host.fifo")
os.symlink("/dev/zero", "{BIN}/zero"); os.symlink("/dev/urandom", "random")
os.symlink("@SECRET@", "secret-link"); os.symlink("@PRIVATE@", "private-link")
os.symlink("@SECRET@", "{BIN}/secret-tool")
os.symlink("@ROOT@/missing", "dangling"); os.symlink("loop", "{BIN}/loop")
os.symlink("b-link", "a-link"); os.symlink("a-link", "b-link")
os.symlink(".", ".shellwego/python/self"); os.symlink("../..", "{BIN}/up")
for name in ("null", "{BIN}/null"):
    try:
        os.mknod(name, 0o666 | 0o020000, os.makedev(1, 3))
    except OSError:
        pass
""",
}


def _code(attack: str, s: Sentinels) -> str:
    for token, path in (
        ("@SECRET@", s.secret),
        ("@SHARED@", s.shared),
        ("@PRIVATE@", s.private),
        ("@FIFO@", s.fifo),
        ("@ROOT@", s.root),
    ):
        attack = attack.replace(token, str(path))
    return attack


def _no_devices(result: BuildResult | BuildFailed) -> None:
    if isinstance(result, BuildResult):
        with tarfile.open(result.slug_path) as tar:
            kinds = {m.name: m.type for m in tar}
        assert not [n for n, k in kinds.items() if k in (tarfile.CHRTYPE, tarfile.BLKTYPE)]
        assert not [n for n, k in kinds.items() if k == tarfile.FIFOTYPE]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_hostile_build_output_never_reaches_the_host(
    sentinels: Sentinels, work: Path, attack: str
) -> None:
    need_root_builder()
    src = hostile_python_app(work / "src", _code(ATTACKS[attack], sentinels))
    log, result = await run_build(Builder(work / "cache"), src, work / "out", app_uid())
    assert isinstance(result, BuildResult), f"{result}\n{log.text}"
    slug = slug_bytes(result)
    assert SECRET not in slug and b"SENTINEL-SCRIPT" not in slug
    _no_devices(result)
    if attack == "shebang-tmp-link":  # the app's own script was still made relocatable
        with tarfile.open(result.slug_path) as tar:
            script = tar.extractfile(f"{BIN}/tool")
            assert script is not None and script.read() == RELOCATABLE_SHEBANG + b"print(1)\n"


@pytest.mark.timeout(120)
async def test_a_fifo_where_the_platform_writes_fails_the_build_at_once(
    sentinels: Sentinels, work: Path
) -> None:
    """``.profile.d/python.sh`` is the platform's to write: a FIFO there must not block it."""
    need_root_builder()
    attack = 'os.makedirs(".profile.d", exist_ok=True); os.mkfifo(".profile.d/python.sh")'
    src = hostile_python_app(work / "src", attack)
    log, result = await run_build(Builder(work / "cache"), src, work / "out", app_uid())
    assert isinstance(result, BuildFailed), log.text
    assert str(result) == ".profile.d/python.sh is reserved for the platform"


async def test_paths_too_long_for_the_host_fail_the_build_clearly(
    sentinels: Sentinels, work: Path
) -> None:
    """255-byte names nested past PATH_MAX: refused with a reason, never an OS error."""
    attack = """
d = ".shellwego/python/deep"
os.makedirs(d, exist_ok=True)
fd = os.open(d, os.O_RDONLY)
for i in range(17):
    name = str(i).zfill(3) * 85
    os.mkdir(name, dir_fd=fd)
    inner = os.open(name, os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = inner
os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
"""
    need_root_builder()
    src = hostile_python_app(work / "src", attack)
    log, result = await run_build(Builder(work / "cache"), src, work / "out", app_uid())
    assert isinstance(result, BuildFailed), log.text
    assert "is a path longer than 3072 bytes" in str(result)


# ---- hard links: the kernel allows them within one mount, so these run unsandboxed ------


async def test_a_hard_link_in_the_profile_is_replaced_not_written_through(
    sentinels: Sentinels, work: Path
) -> None:
    need_root_builder(sandboxed=False)
    attack = f'os.makedirs(".profile.d"); os.link("{sentinels.shared}", ".profile.d/python.sh")'
    src = hostile_python_app(work / "src", attack)
    builder = Builder(work / "cache", sandbox=False)
    log, result = await run_build(builder, src, work / "out", app_uid())
    assert isinstance(result, BuildResult), f"{result}\n{log.text}"
    assert SHARED not in slug_bytes(result)


async def test_a_hard_link_to_a_file_outside_the_build_is_not_packed(
    sentinels: Sentinels, work: Path
) -> None:
    need_root_builder(sandboxed=False)
    attack = f'os.link("{sentinels.shared}", "stolen.txt")'
    src = hostile_python_app(work / "src", attack)
    builder = Builder(work / "cache", sandbox=False)
    log, result = await run_build(builder, src, work / "out", app_uid())
    assert SHARED not in slug_bytes(result)
    assert isinstance(result, BuildFailed), log.text
    assert str(result) == (
        "stolen.txt is a file the build's user does not own (a hard link to a file outside "
        "the build?)"
    )


# ---- the stored dependency tree -----------------------------------------------------------


async def test_node_modules_linked_at_a_host_directory_is_never_stored_or_reused(
    sentinels: Sentinels, work: Path
) -> None:
    """An npm script swaps node_modules for a link to a root-only directory: the platform
    must neither copy that directory into the cache nor hand it to the next build."""
    need_root_builder()
    package = {
        "name": "hostile",
        "version": "1.0.0",
        "private": True,
        "scripts": {
            "postinstall": f"rm -rf node_modules && ln -s {sentinels.private} node_modules",
            "start": "node index.js",
        },
    }
    builder = Builder(work / "cache")
    uid = app_uid()
    results = []
    for n in (1, 2):
        src = write_app(work / f"src{n}", {"package.json": json.dumps(package), "index.js": ""})
        log, result = await run_build(builder, src, work / f"out{n}", uid)
        assert isinstance(result, BuildResult), f"{result}\n{log.text}"
        results.append((log, result))
    assert "Reusing cached node_modules" in results[1][0].text
    for _, result in results:
        assert SECRET not in slug_bytes(result)


# ---- the upload ---------------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info


HOSTILE_UPLOADS = {
    "link-to-host-file": [(_member("app.py", tarfile.SYMTYPE, "@SECRET@"), None)],
    "link-to-host-dir": [
        (_member("lib", tarfile.SYMTYPE, "@PRIVATE@"), None),
        (_member("lib/planted"), b"x"),
    ],
    "relative-escape": [(_member("up", tarfile.SYMTYPE, "../" * 12 + "var/tmp"), None)],
    "hard-link-to-host": [(_member("stolen", tarfile.LNKTYPE, "@SHARED@"), None)],
    "fifo": [(_member("pipe", tarfile.FIFOTYPE), None)],
    "char-device": [(_member("null", tarfile.CHRTYPE), None)],
    "name-over-255-bytes": [(_member("a" * 256), b"x")],
    "path-over-path-max": [(_member("/".join(["d" * 250] * 17) + "/f"), b"x")],
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_UPLOADS))
def test_hostile_upload_is_refused_before_anything_is_written(
    sentinels: Sentinels, work: Path, attack: str
) -> None:
    members = []
    for info, data in HOSTILE_UPLOADS[attack]:
        info.linkname = _code(info.linkname, sentinels)
        if data is not None:
            info.size = len(data)
        members.append((info, data))
    dest = work / "src"
    with pytest.raises(InvalidInput):
        safe_extract(tar_of(members), dest, max_bytes=10**6)
    assert not dest.exists()
    assert os.listdir(work) == []


async def test_an_upload_with_odd_but_harmless_links_and_names_builds(
    sentinels: Sentinels, work: Path
) -> None:
    """Dangling links, link loops and 255-byte names stay inside the app: they build."""
    need_root_builder()
    long = "n" * 255
    members = [
        (_member("index.html"), b"<h1>ok</h1>"),
        (_member("dangling", tarfile.SYMTYPE, "missing/file"), None),
        (_member("a", tarfile.SYMTYPE, "b"), None),
        (_member("b", tarfile.SYMTYPE, "a"), None),
        (_member("self", tarfile.SYMTYPE, "."), None),
        (_member(f"{long}/{long}"), b"deep"),
    ]
    for info, data in members:
        info.size = len(data or b"")
    src = work / "src"
    safe_extract(tar_of(members), src, max_bytes=10**6)
    log, result = await run_build(Builder(work / "cache"), src, work / "out", app_uid())
    assert isinstance(result, BuildResult), f"{result}\n{log.text}"
    with tarfile.open(result.slug_path) as tar:
        names = {m.name: m for m in tar}
    assert names["self"].linkname == "." and names["a"].linkname == "b"
    assert f"{long}/{long}" in names


async def test_a_requirements_include_outside_the_app_is_refused_unread(
    sentinels: Sentinels, work: Path
) -> None:
    """``-r /a/host/file``: the platform (root) must not read it, not even for a cache key."""
    need_root_builder()
    os.utime(sentinels.secret, (1, sentinels.secret.stat().st_mtime))  # any read moves it
    src = write_app(work / "src", {"requirements.txt": f"-r {sentinels.secret}\n", "app.py": ""})
    log, result = await run_build(Builder(work / "cache"), src, work / "out", app_uid())
    assert isinstance(result, BuildFailed), log.text
    assert str(result) == (
        f"requirements.txt includes {sentinels.secret}, which is outside the app's source"
    )
    assert sentinels.secret.stat().st_atime == 1
