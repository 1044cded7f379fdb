"""One app's build against another app's build cache: its installers' cache and the
dependency tree stored for it. Neither may be written (poisoned) or read across apps."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

from shellwego.build.builder import Builder, BuildResult
from support.hostile_build import app_uid, hostile_python_app, need_root_builder, run_build

B_MODULE = "STATE = 'B-PRIVATE-SAFE'\n"

# A's build backend: poison and read what it is given of B's cache, report what it did
ATTACK = """
import json
report = {}
for path in STORED:
    try:
        with open(path, "a") as f:
            f.write("STATE = 'POISONED-BY-A'\\n")
        report["append " + path] = "done"
    except OSError as exc:
        report["append " + path] = type(exc).__name__
    try:
        with open(path) as f:
            report["read " + path] = f.read()
    except OSError as exc:
        report["read " + path] = type(exc).__name__
for directory in CACHES:
    try:
        with open(os.path.join(directory, "poison"), "w") as f:
            f.write("POISONED-BY-A")
        report["plant " + directory] = "done"
    except OSError as exc:
        report["plant " + directory] = type(exc).__name__
    try:
        report["list " + directory] = sorted(os.listdir(directory))
    except OSError as exc:
        report["list " + directory] = type(exc).__name__
with open("report.json", "w") as f:
    json.dump(report, f)
"""


SITE_PACKAGES = (
    f".shellwego/python/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
)


def _member(slug: Path, name: str) -> str:
    with tarfile.open(slug) as tar:
        data = tar.extractfile(name)
        assert data is not None
        return data.read().decode()


async def test_an_apps_build_can_neither_poison_nor_read_another_apps_cache(work: Path) -> None:
    need_root_builder()
    builder = Builder(work / "cache")
    uid_a, uid_b = app_uid(), app_uid()
    while uid_b == uid_a:
        uid_b = app_uid()

    # B builds: its installed dependency tree is stored for its next build
    b_src = hostile_python_app(work / "b1", "", module=B_MODULE)
    log, first = await run_build(builder, b_src, work / "b1-out", uid_b)
    assert isinstance(first, BuildResult), f"{first}\n{log.text}"
    # wherever the builder keeps them: B's stored files, and the installers' caches
    stored = sorted(str(p) for p in (work / "cache").rglob("hostile_mod.py"))
    caches = sorted(
        str(p)
        for p in (work / "cache").rglob("*")
        if p.is_dir() and not p.is_symlink() and p.name in ("pip", "npm", "installers")
    )
    assert stored and caches

    # A's install code goes after them
    attack = f"STORED = {stored!r}\nCACHES = {caches!r}\n{ATTACK}"
    a_src = hostile_python_app(work / "a", attack)
    log, theirs = await run_build(builder, a_src, work / "a-out", uid_a)
    assert isinstance(theirs, BuildResult), f"{theirs}\n{log.text}"
    report = json.loads(_member(theirs.slug_path, "report.json"))
    assert "B-PRIVATE-SAFE" not in json.dumps(report), report  # nothing of B's was read
    assert "done" not in report.values(), report  # nothing of B's was written
    assert not [p for p in (work / "cache").rglob("poison")]

    # B's next build reuses its stored tree, as it was
    b_again = hostile_python_app(work / "b2", "", module=B_MODULE)
    log, second = await run_build(builder, b_again, work / "b2-out", uid_b)
    assert isinstance(second, BuildResult), f"{second}\n{log.text}"
    assert any(line.startswith("-----> Reusing cached Python dependencies") for line in log.lines)
    assert _member(second.slug_path, f"{SITE_PACKAGES}/hostile_mod.py") == B_MODULE
