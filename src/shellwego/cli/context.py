"""What every command shares: global options, the API client, and which app is meant."""

from __future__ import annotations

import os
import re
import subprocess
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from shellwego.cli import config
from shellwego.cli.client import DEFAULT_API_URL, Client
from shellwego.cli.errors import usage
from shellwego.models.values import MAX_SURGE

APP_FILE = ".shellwego"
GIT_REMOTE = "shellwego"

AppOption = Annotated[
    str | None,
    typer.Option("--app", "-a", help="App name (default: $SHELLWEGO_APP, .shellwego, git remote)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NoWaitOption = Annotated[
    bool,
    typer.Option("--no-wait", help="Return once the release is made, without following it."),
]
SurgeOption = Annotated[
    int | None,
    typer.Option(
        "--surge",
        min=1,
        max=MAX_SURGE,
        help="New instances a rolling deploy starts at once beyond the formation.",
    ),
]
MaxUnavailableOption = Annotated[
    int | None,
    typer.Option(
        "--max-unavailable",
        min=0,
        max=MAX_SURGE,
        help="How far below the formation serving instances may drop during a deploy.",
    ),
]


def rollout_settings(surge: int | None, max_unavailable: int | None) -> dict[str, int]:
    """The deploy settings given on the command line (``surge``, ``max_unavailable``)."""
    given = {"surge": surge, "max_unavailable": max_unavailable}
    return {key: value for key, value in given.items() if value is not None}


@dataclass
class Globals:
    """Options given before the command (or through the environment)."""

    api_url: str | None = None
    token: str | None = None
    app: str | None = None
    json: bool = False


_GLOBALS: ContextVar[Globals | None] = ContextVar("shellwego_cli_globals", default=None)


def set_globals(values: Globals) -> None:
    """Called by the root callback on every invocation."""
    _GLOBALS.set(values)


def globals_() -> Globals:
    return _GLOBALS.get() or Globals()


def wants_json(flag: bool) -> bool:
    return flag or globals_().json


def api_url() -> str:
    g = globals_()
    return (g.api_url or config.load().get("api_url") or DEFAULT_API_URL).rstrip("/")


def client(*, anonymous: bool = False) -> Client:
    g = globals_()
    token = None if anonymous else (g.token or config.load().get("token"))
    return Client(api_url(), token)


def path_of(app: str) -> str:
    return f"/v1/apps/{quote(app, safe='')}"


def resolve_app(option: str | None) -> str:
    """--app, else $SHELLWEGO_APP, else .shellwego here or above, else the git remote."""
    name = option or globals_().app or os.environ.get("SHELLWEGO_APP")
    if name:
        return name
    cwd = Path.cwd()
    found = app_from_file(cwd) or app_from_git(cwd)
    if found:
        return found
    usage("no app given: pass --app NAME or run inside an app directory")


def app_from_file(start: Path) -> str | None:
    for folder in (start, *start.parents):
        path = folder / APP_FILE
        if path.is_file():
            return parse_app_file(path.read_text())
    return None


def parse_app_file(text: str) -> str | None:
    """``app = NAME`` (comments with ``#`` allowed) or just the name."""
    for raw in text.splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        if sep:
            if key.strip() == "app" and value.strip():
                return value.strip().strip("\"'")
            continue
        return entry
    return None


def app_from_git(cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "remote", "get-url", GIT_REMOTE],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    match = re.search(r"/git/([^/]+?)\.git/?$", done.stdout.strip())
    return match.group(1) if match else None


# what an app's directory holds: its Procfile, dependencies, image recipe, site or repo
APP_MARKERS = (
    "Procfile",
    "requirements.txt",
    "pyproject.toml",
    "package.json",
    "Dockerfile",
    "index.html",
    "app.py",
    ".git",
)


def is_platform_checkout(folder: Path) -> bool:
    """ShellWeGo's own source tree (where the quickstart runs ``apps create``)."""
    return (folder / "src" / "shellwego" / "__init__.py").is_file()


def looks_like_app(folder: Path) -> bool:
    """An empty directory (an app about to be written) or one with an app's files, and
    not ShellWeGo's own checkout."""
    try:
        empty = next(folder.iterdir(), None) is None
    except OSError:
        return False
    has_marker = any((folder / marker).exists() for marker in APP_MARKERS)
    return (empty or has_marker) and not is_platform_checkout(folder)


def write_app_file(folder: Path, app: str) -> Path | None:
    """Write ``.shellwego`` naming the app when the folder looks like an app's
    (:func:`looks_like_app`) and has none yet; where it wrote it."""
    path = folder / APP_FILE
    if path.exists() or not looks_like_app(folder):
        return None
    path.write_text(f"app = {app}\n")
    return path
