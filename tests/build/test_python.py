"""Python builds as Heroku's: the interpreter an app asks for, each lockfile, Django's
collectstatic and the compile hooks; real builds with real interpreters and installers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shellwego.build.builder import Builder, BuildResult, host_python
from shellwego.build.python import Request, candidates, current_homes, full_version
from shellwego.errors import BuildFailed
from shellwego.runtime.sandbox import Sandbox

from .helpers import Lines, run_in_slug, write

INSTALLERS = pytest.mark.parametrize("installer", ["uv", "pip"])
HOST = full_version(host_python())
assert HOST is not None
HOST_MINOR = f"{HOST.major}.{HOST.minor}"


async def build(
    tmp_path: Path, files: dict[str, str], name: str = "b", **options: object
) -> tuple[Lines, BuildResult, Path]:
    """Build ``files`` and extract the slug; (log, result, slug directory)."""
    config = options.pop("config", None)
    src = write(tmp_path / name / "src", files)
    log = Lines()
    builder = Builder(tmp_path / "cache", **options)  # type: ignore[arg-type]
    try:
        result = await builder.build(
            src,
            tmp_path / name / "out",
            log,
            config=config,  # type: ignore[arg-type]
        )
    except BuildFailed as exc:
        raise AssertionError(f"{exc}\n{log.text}") from None
    app = tmp_path / name / "slug"
    shutil.unpack_archive(result.slug_path, app, format="gztar")
    return log, result, app


def python_of(app: Path) -> str:
    ran = run_in_slug(app, "python -c 'import platform, sys; print(platform.python_version())'")
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


def installed(app: Path) -> dict[str, str]:
    """What ``pip list`` says is installed in the slug's virtualenv."""
    ran = run_in_slug(app, "python -m pip list --format json --disable-pip-version-check")
    assert ran.returncode == 0, ran.stderr
    return {p["name"].lower(): p["version"] for p in json.loads(ran.stdout)}


# ---- the interpreter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [(".python-version", f"{HOST_MINOR}\n"), ("runtime.txt", f"python-{HOST}\n")],
)
async def test_the_interpreter_an_app_asks_for_is_used(
    tmp_path: Path, name: str, text: str
) -> None:
    files = {"requirements.txt": "six\n", "app.py": "", name: text}
    log, _, app = await build(tmp_path, files)
    wanted = text.strip().removeprefix("python-")
    assert f"as Python {wanted} ({name}) asks" in log.lines[1], log.lines[1]
    assert python_of(app) == str(HOST)


async def test_requires_python_picks_a_matching_interpreter(tmp_path: Path) -> None:
    pyproject = f"""
[project]
name = "app"
version = "0"
requires-python = ">={HOST_MINOR},<{HOST.major}.{HOST.minor + 1}"
dependencies = ["six==1.16.0"]
"""
    log, _, app = await build(tmp_path, {"pyproject.toml": pyproject, "app.py": ""})
    assert "(requires-python in pyproject.toml) asks" in log.lines[1]
    assert "-----> Installing dependencies from pyproject.toml with uv" in log.lines
    assert installed(app)["six"] == "1.16.0"  # the app itself is not a package: not built


def _other_interpreter() -> str | None:
    """An X.Y (3.8 or later) on this host other than the default python3's."""
    for path in candidates(os.environ.get("PATH", ""), current_homes()):
        version = full_version(path)
        if version is None or (version.major, version.minor) == (HOST.major, HOST.minor):
            continue
        if (version.major, version.minor) >= (3, 8):
            return f"{version.major}.{version.minor}"
    return None


@pytest.mark.timeout(300)
async def test_another_installed_version_is_found_in_the_usual_places(tmp_path: Path) -> None:
    other = _other_interpreter()
    if other is None:
        pytest.skip(f"this host has no Python besides {HOST_MINOR}")
    # steps as this process's user, which reaches every interpreter (root's pyenv too)
    files = {"requirements.txt": "six\n", "app.py": "", ".python-version": other}
    log, _, app = await build(tmp_path, files, run_as=None)
    assert f"as Python {other} (.python-version) asks" in log.lines[1]
    assert python_of(app).startswith(f"{other}.")


async def test_a_version_the_host_lacks_is_a_clear_error(tmp_path: Path) -> None:
    src = write(
        tmp_path / "src", {"requirements.txt": "", "app.py": "", ".python-version": "3.99\n"}
    )
    with pytest.raises(BuildFailed) as raised:
        await Builder(tmp_path / "cache").build(src, tmp_path / "out", Lines())
    message = str(raised.value)
    assert message.startswith(
        "Python 3.99 (.python-version) is not installed on the build host; it has Python "
    )
    assert HOST_MINOR in message  # the versions it has are named


async def test_an_interpreter_out_of_the_apps_reach_is_named_as_such(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root builder runs steps as another user")
    hidden = [
        p
        for p in candidates(os.environ.get("PATH", ""), current_homes())
        if "/root/" in p and not p.endswith(f"python{HOST_MINOR}")
    ]
    if not hidden:
        pytest.skip("no interpreter under root's home on this host")
    minor = Path(hidden[0]).name.removeprefix("python")
    src = write(tmp_path / "src", {"requirements.txt": "", "app.py": "", ".python-version": minor})
    with pytest.raises(BuildFailed) as raised:
        await Builder(tmp_path / "cache").build(src, tmp_path / "out", Lines())
    assert "found but out of reach of the app's processes:" in str(raised.value)
    assert "behind /root" in str(raised.value)


def test_version_requests_read_like_heroku() -> None:
    from shellwego.build.python import parse_version_request, requires_python

    assert parse_version_request("runtime.txt", "python-3.12.4\n") == Request(
        "runtime.txt", version="3.12.4"
    )
    assert parse_version_request(".python-version", "# pinned\n3.12\n") == Request(
        ".python-version", version="3.12"
    )
    with pytest.raises(BuildFailed, match="give at least a major and minor"):
        parse_version_request(".python-version", "3\n")
    with pytest.raises(BuildFailed, match="is not a Python version"):
        parse_version_request(".python-version", "pypy3.10\n")
    found = requires_python(b'[project]\nrequires-python = ">=3.10"\n')
    assert found is not None and found.specifier == ">=3.10"
    with pytest.raises(BuildFailed, match="requires-python"):
        requires_python(b'[project]\nrequires-python = "three"\n')


# ---- lockfiles ---------------------------------------------------------------------------

POETRY_PYPROJECT = """
[tool.poetry]
name = "app"
version = "0.1.0"
description = ""
authors = []
package-mode = false

[tool.poetry.dependencies]
python = ">=3.8"
six = "^1.15"

[tool.poetry.group.dev.dependencies]
pyflakes = "*"
"""
POETRY_LOCK = """
[[package]]
name = "pyflakes"
version = "3.2.0"
description = "passive checker of Python programs"
optional = false
python-versions = ">=3.8"
files = []

[[package]]
name = "six"
version = "1.16.0"
description = "Python 2 and 3 compatibility utilities"
optional = false
python-versions = ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*"
files = []

[metadata]
lock-version = "2.0"
python-versions = ">=3.8"
content-hash = "0"
"""
PIPFILE_LOCK = {
    "_meta": {"requires": {"python_version": HOST_MINOR}, "sources": []},
    "default": {
        "six": {"version": "==1.16.0", "markers": "python_version >= '2.7'"},
        "colorama": {"version": "==0.4.6", "markers": "sys_platform == 'win32'"},
    },
    "develop": {"pyflakes": {"version": "==3.2.0"}},
}


@INSTALLERS
async def test_poetry_lock_installs_the_locked_main_dependencies(
    tmp_path: Path, installer: str
) -> None:
    files = {"pyproject.toml": POETRY_PYPROJECT, "poetry.lock": POETRY_LOCK, "app.py": ""}
    log, _, app = await build(tmp_path, files, python_installer=installer)
    assert f"-----> Installing dependencies from poetry.lock with {installer}" in log.lines
    found = installed(app)
    assert found["six"] == "1.16.0"  # the locked version, not the newest
    assert "pyflakes" not in found  # a dev dependency
    assert not (app / ".shellwego" / "build").exists()  # the staged files are gone


@INSTALLERS
async def test_pipfile_lock_installs_its_default_section(tmp_path: Path, installer: str) -> None:
    files = {"Pipfile.lock": json.dumps(PIPFILE_LOCK), "Pipfile": "", "app.py": ""}
    log, _, app = await build(tmp_path, files, python_installer=installer)
    assert f"-----> Installing dependencies from Pipfile.lock with {installer}" in log.lines
    found = installed(app)
    assert found["six"] == "1.16.0"
    assert "colorama" not in found  # its markers exclude this platform
    assert "pyflakes" not in found


async def test_a_pipfile_without_its_lock_is_refused(tmp_path: Path) -> None:
    src = write(tmp_path / "src", {"Pipfile": "[packages]\nsix = '*'\n", "app.py": ""})
    with pytest.raises(BuildFailed) as raised:
        await Builder(tmp_path / "cache").build(src, tmp_path / "out", Lines())
    assert str(raised.value) == "Pipfile without Pipfile.lock: run 'pipenv lock' and commit it"


@pytest.mark.timeout(300)
async def test_uv_lock_installs_the_locked_set_without_dev_dependencies(tmp_path: Path) -> None:
    from shellwego.build.builder import _uv_binary

    uv = _uv_binary()
    assert uv is not None, "uv is a dependency of the platform"
    pyproject = f"""
[project]
name = "app"
version = "0.1.0"
requires-python = ">={HOST_MINOR}"
dependencies = ["six==1.16.0"]

[dependency-groups]
dev = ["pyflakes"]
"""
    dev = write(tmp_path / "dev", {"pyproject.toml": pyproject})
    subprocess.run([uv, "lock", "-q"], cwd=dev, check=True, timeout=240)
    files = {"pyproject.toml": pyproject, "uv.lock": (dev / "uv.lock").read_text(), "app.py": ""}
    log, _, app = await build(tmp_path, files)
    assert "-----> Installing dependencies from uv.lock with uv" in log.lines
    found = installed(app)
    assert found["six"] == "1.16.0"
    assert "pyflakes" not in found and "app" not in found
    # a lock that no longer matches pyproject.toml fails the build, as `uv sync --locked`
    stale = {**files, "pyproject.toml": pyproject.replace("six==1.16.0", "six==1.15.0")}
    src = write(tmp_path / "stale" / "src", stale)
    with pytest.raises(BuildFailed, match="uv sync failed"):
        await Builder(tmp_path / "cache").build(src, tmp_path / "stale" / "out", Lines())


# ---- Django and hooks --------------------------------------------------------------------

DJANGO = {
    "requirements.txt": "django>=4.2,<6\n",
    "Procfile": "web: python manage.py runserver 0.0.0.0:$PORT\n",
    "manage.py": """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
""",
    "site_settings.py": """
SECRET_KEY = "build-only"
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth",
                  "django.contrib.contenttypes", "django.contrib.staticfiles"]
STATIC_URL = "/static/"
STATIC_ROOT = "staticfiles"
""",
}


@pytest.mark.timeout(300)
async def test_django_apps_collect_static_files_unless_disabled(tmp_path: Path) -> None:
    log, _, app = await build(tmp_path, DJANGO)
    assert "-----> Running manage.py collectstatic --noinput" in log.lines
    assert (app / "staticfiles" / "admin" / "css" / "base.css").is_file()

    log, _, app = await build(tmp_path, DJANGO, "off", config={"DISABLE_COLLECTSTATIC": "1"})
    assert "-----> Skipping collectstatic (DISABLE_COLLECTSTATIC is set)" in log.lines
    assert not (app / "staticfiles").exists()


async def test_compile_hooks_run_as_the_apps_user_around_the_install(tmp_path: Path) -> None:
    if os.geteuid() != 0 or Sandbox.detect().binary is None:
        pytest.skip("the hooks' user and sandbox are a root builder's")
    files = {
        "requirements.txt": "six\n",
        "app.py": "",
        "bin/pre_compile": "echo pre $(id -u) $PWD > pre.txt\ntest ! -e .shellwego/python\n",
        "bin/post_compile": "#!/bin/sh\npython -c 'import six; print(six.__name__)' > post.txt\n",
    }
    src = write(tmp_path / "b" / "src", files)
    (src / "bin" / "post_compile").chmod(0o755)
    log = Lines()
    result = await Builder(tmp_path / "cache").build(
        src, tmp_path / "b" / "out", log, user=(3_200_123, 3_200_123)
    )
    assert log.lines.index("-----> Running pre_compile hook") < log.lines.index(
        "-----> Installing dependencies from requirements.txt with uv"
    )
    assert "-----> Running post_compile hook" in log.lines
    app = tmp_path / "slug"
    shutil.unpack_archive(result.slug_path, app, format="gztar")
    assert (app / "pre.txt").read_text() == "pre 3200123 /app\n"
    assert (app / "post.txt").read_text() == "six\n"  # the app's virtualenv on PATH


async def test_a_failing_hook_fails_the_build(tmp_path: Path) -> None:
    files = {"requirements.txt": "", "app.py": "", "bin/post_compile": "echo broken; exit 4\n"}
    src = write(tmp_path / "src", files)
    log = Lines()
    with pytest.raises(BuildFailed) as raised:
        await Builder(tmp_path / "cache").build(src, tmp_path / "out", log)
    assert str(raised.value) == "post_compile failed (exit 4)"
    assert "       broken" in log.lines
