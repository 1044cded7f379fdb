"""Node.js builds: engines.node against the host's node, the package manager a lockfile
asks for (real npm, yarn and pnpm), ``npm start`` as the default web process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shellwego.build.archive import safe_extract
from shellwego.build.builder import Builder, BuildResult
from shellwego.build.node import check_engine, manager, parse_version, satisfies
from shellwego.errors import BuildFailed

from .helpers import Lines, run_in_slug, write


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        (">=18", ["18.0.0", "20.20.2", "22.1.0"], ["16.20.2", "17.9.9"]),
        ("^20.1", ["20.1.0", "20.20.2"], ["20.0.9", "21.0.0"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
        ("~20.1.2", ["20.1.2", "20.1.9"], ["20.2.0", "20.1.1"]),
        ("20.x", ["20.0.0", "20.99.1"], ["19.9.9", "21.0.0"]),
        ("20", ["20.3.1"], ["21.0.0"]),
        ("18.x || 20.x", ["18.1.0", "20.2.0"], ["19.0.0", "22.0.0"]),
        ("16 - 20", ["16.0.0", "20.9.9"], ["15.9.9", "21.0.0"]),
        (">= 18.0.0 < 21", ["18.0.0", "20.20.2"], ["21.0.0", "17.0.0"]),
        ("*", ["0.0.1", "22.0.0"], []),
        ("", ["20.0.0"], []),
        ("=20.20.2", ["20.20.2"], ["20.20.1"]),
        ("<=20.1", ["20.1.5", "19.0.0"], ["20.2.0"]),
        (">20", ["21.0.0"], ["20.9.9"]),
    ],
)
def test_engines_ranges(spec: str, inside: list[str], outside: list[str]) -> None:
    for version in inside:
        assert satisfies(parse_version(version), spec), (version, spec)
    for version in outside:
        assert not satisfies(parse_version(version), spec), (version, spec)


def test_an_engine_the_host_lacks_is_a_clear_error() -> None:
    with pytest.raises(BuildFailed) as raised:
        check_engine((20, 20, 2), ">=22")
    assert str(raised.value) == (
        "package.json asks for Node.js >=22 (engines.node) but the build host has Node.js "
        "20.20.2: change engines.node, or install a matching node on the build host"
    )
    with pytest.raises(BuildFailed, match="is not a semver range"):
        check_engine((20, 20, 2), ">=abc")
    check_engine((20, 20, 2), None)


def test_the_lockfile_decides_the_package_manager() -> None:
    assert manager(set()).name == "npm"
    assert manager({"package.json", "package-lock.json"}) == manager({"package-lock.json"})
    assert manager({"yarn.lock"}).name == "yarn"
    assert manager({"pnpm-lock.yaml"}).lockfile == "pnpm-lock.yaml"
    with pytest.raises(BuildFailed) as raised:
        manager({"yarn.lock", "package-lock.json"})
    assert str(raised.value).startswith(
        "lockfiles of different package managers (package-lock.json, yarn.lock)"
    )


def _node_major() -> int:
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return parse_version(done.stdout)[0]


def _app(engines: str | None = None) -> dict[str, str]:
    package: dict[str, object] = {
        "name": "node-app",
        "version": "1.0.0",
        "private": True,
        "scripts": {"start": "node server.js"},
        "dependencies": {"is-number": "7.0.0"},
        "devDependencies": {"is-odd": "3.0.1"},
    }
    if engines is not None:
        package["engines"] = {"node": engines}
    server = "const n = require('is-number'); console.log('is-number', n(5));\n"
    return {"package.json": json.dumps(package), "server.js": server}


async def _build(tmp_path: Path, files: dict[str, str], name: str = "b") -> tuple[Lines, Path]:
    src = write(tmp_path / name / "src", files)
    log = Lines()
    result = await Builder(tmp_path / "cache").build(src, tmp_path / name / "out", log)
    assert isinstance(result, BuildResult)
    assert result.process_types == {"web": "npm start"}
    app = tmp_path / name / "slug"
    with result.slug_path.open("rb") as stream:
        safe_extract(stream, app, max_bytes=10**8)
    return log, app


def _lock_with(tool: str, files: dict[str, str], where: Path) -> dict[str, str]:
    """The app with the lockfile ``tool`` writes for it (as its developer would commit)."""
    binary = shutil.which(tool)
    if binary is None:
        pytest.skip(f"{tool} is not installed on this host")
    write(where, files)
    argv = {
        "npm": [binary, "install", "--package-lock-only", "--no-audit", "--no-fund"],
        "yarn": [binary, "install", "--ignore-scripts", "--non-interactive"],
        "pnpm": [binary, "install", "--lockfile-only"],
    }[tool]
    subprocess.run(argv, cwd=where, check=True, capture_output=True, timeout=300)
    lock = {"npm": "package-lock.json", "yarn": "yarn.lock", "pnpm": "pnpm-lock.yaml"}[tool]
    return {**files, lock: (where / lock).read_text()}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("tool", ["npm", "yarn", "pnpm"])
async def test_a_lockfile_installs_production_dependencies_with_its_manager(
    tmp_path: Path, tool: str
) -> None:
    files = _lock_with(tool, _app(engines=f">={_node_major()}"), tmp_path / "dev")
    log, app = await _build(tmp_path, files)
    lock = {"npm": "package-lock.json", "yarn": "yarn.lock", "pnpm": "pnpm-lock.yaml"}[tool]
    assert any(
        line.startswith(f"-----> Installing dependencies from {lock} with {tool} ")
        for line in log.lines
    ), log.text
    assert any(line.startswith("-----> Using Node.js v") for line in log.lines)
    assert (app / "node_modules" / "is-number").is_dir()
    assert not (app / "node_modules" / "is-odd").exists()  # a dev dependency
    ran = run_in_slug(app, "node server.js")
    assert ran.stdout.strip() == "is-number true", ran.stderr


async def test_an_engine_the_host_does_not_have_fails_the_build(tmp_path: Path) -> None:
    files = _app(engines=f">={_node_major() + 1}")
    src = write(tmp_path / "src", files)
    with pytest.raises(BuildFailed) as raised:
        await Builder(tmp_path / "cache").build(src, tmp_path / "out", Lines())
    assert str(raised.value).startswith(
        f"package.json asks for Node.js >={_node_major() + 1} (engines.node) but the build "
        "host has Node.js "
    )


async def test_two_lockfiles_fail_the_build(tmp_path: Path) -> None:
    files = {**_app(), "yarn.lock": "", "package-lock.json": "{}"}
    src = write(tmp_path / "src", files)
    with pytest.raises(BuildFailed, match="lockfiles of different package managers"):
        await Builder(tmp_path / "cache").build(src, tmp_path / "out", Lines())
