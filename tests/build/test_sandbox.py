"""Build steps run the app's own install code: under bubblewrap they cannot see the
platform's data (hidden paths), while the build itself still works."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shellwego.build.builder import Builder
from shellwego.runtime.process import Sandbox

from .helpers import Lines, run_in_slug, write

SETUP = '''
from pathlib import Path
from setuptools import setup

marker = Path({marker!r})
try:
    seen = marker.read_text().strip()
except OSError as exc:
    seen = "hidden: " + type(exc).__name__
Path("peek").mkdir(exist_ok=True)
Path("peek/__init__.py").write_text("SEEN = " + repr(seen) + "\\n")
setup(name="peek", version="1.0", packages=["peek"])
'''


def _app(root: Path, marker: Path) -> Path:
    return write(
        root,
        {
            "requirements.txt": "./pkg\n",
            "pkg/setup.py": SETUP.format(marker=str(marker)),
            "Procfile": "web: python3 -c 'import peek'\n",
        },
    )


async def _build(tmp_path: Path, name: str, sandbox: bool | None) -> tuple[str, Lines]:
    secrets = tmp_path / "platform-data"
    secrets.mkdir(exist_ok=True)
    marker = secrets / "master.key"
    marker.write_text("TOP-SECRET")
    app = _app(tmp_path / name / "src", marker)
    builder = Builder(tmp_path / "cache", hidden_paths=[secrets], sandbox=sandbox)
    log = Lines()
    result = await builder.build(app, tmp_path / name / "out", log)
    slug = tmp_path / name / "slug"
    slug.mkdir()
    shutil.unpack_archive(result.slug_path, slug, format="gztar")
    done = run_in_slug(slug, "python3 -c 'import peek; print(peek.SEEN)'")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), log


async def test_install_code_cannot_read_hidden_platform_data(tmp_path: Path) -> None:
    if Sandbox.detect().binary is None:
        pytest.skip("bubblewrap cannot create a sandbox on this host")
    seen, log = await _build(tmp_path, "sandboxed", sandbox=None)
    assert seen.startswith("hidden:"), seen
    assert "TOP-SECRET" not in log.text
    assert "sandbox unavailable" not in log.text


async def test_without_the_sandbox_the_same_build_would_see_it(tmp_path: Path) -> None:
    seen, log = await _build(tmp_path, "open", sandbox=False)
    assert seen == "TOP-SECRET"  # what the sandbox prevents
    assert "-----> Build sandbox unavailable: disabled" in log.text
