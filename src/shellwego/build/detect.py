"""What an app is (its stack) and what it runs (its process types)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from shellwego.errors import BuildFailed
from shellwego.models.values import PROCESS_TYPE

PYTHON = "python"
NODE = "node"
STATIC = "static"
GENERIC = "generic"  # a Procfile and nothing to install

LABELS = {PYTHON: "Python app", NODE: "Node.js app", STATIC: "Static site", GENERIC: "Procfile app"}

_LINE = re.compile(r"^([^:\s]+)\s*:\s*(.*?)\s*$")


@dataclass(frozen=True)
class BuildPlan:
    stack: str
    process_types: dict[str, str] = field(default_factory=dict)


def parse_procfile(text: str) -> dict[str, str]:
    """``type: command`` lines; blank lines and ``#`` comments are ignored."""
    types: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None or not match.group(2):
            raise BuildFailed(
                f"Procfile line {number}: expected 'type: command', got {line[:80]!r}"
            )
        ptype, command = match.group(1), match.group(2)
        if not PROCESS_TYPE.match(ptype):
            raise BuildFailed(
                f"Procfile line {number}: invalid process type {ptype[:40]!r} "
                "(lowercase letters, digits, '-' and '_', at most 30)"
            )
        if ptype in types:
            raise BuildFailed(f"Procfile line {number}: process type {ptype!r} is defined twice")
        types[ptype] = command
    if not types:
        raise BuildFailed("Procfile defines no process types")
    return types


def _static_root(src: Path) -> str | None:
    if (src / "index.html").is_file():
        return "."
    if (src / "public" / "index.html").is_file():
        return "public"
    return None


def static_command(directory: str) -> str:
    return f'python3 -m http.server "$PORT" --bind 0.0.0.0 --directory {directory}'


PYTHON_MARKERS = ("requirements.txt", "pyproject.toml", "Pipfile.lock", "Pipfile")


def node_command(src: Path) -> str:
    """The ``web`` command of a Node.js app without a Procfile: ``npm start`` when
    package.json has a start script (or npm's default, ``node server.js``, applies)."""
    try:
        package = json.loads((src / "package.json").read_bytes()[: 16 * 1024 * 1024])
    except (OSError, ValueError, UnicodeDecodeError):
        raise BuildFailed("package.json is not valid JSON") from None
    scripts = package.get("scripts") if isinstance(package, dict) else None
    if isinstance(scripts, dict) and isinstance(scripts.get("start"), str):
        return "npm start"
    if (src / "server.js").is_file():
        return "npm start"  # npm's default start script: node server.js
    raise BuildFailed(
        'Node.js app without a Procfile or a start script: add "start" to package.json\'s '
        "scripts, or a Procfile, e.g. 'web: node index.js'"
    )


def detect(src: Path) -> BuildPlan:
    """The stack and process types of the app in ``src``; BuildFailed when unsupported."""
    procfile = src / "Procfile"
    declared = parse_procfile(procfile.read_text(errors="replace")) if procfile.is_file() else None
    static_root = _static_root(src)
    if any((src / name).is_file() for name in PYTHON_MARKERS):
        stack = PYTHON
        if declared is None:
            if not (src / "app.py").is_file():
                raise BuildFailed(
                    "Python app without a Procfile or app.py: add a Procfile, e.g. "
                    "'web: gunicorn --bind 0.0.0.0:$PORT app:app'"
                )
            declared = {"web": "python app.py"}
    elif (src / "package.json").is_file():
        stack = NODE
        if declared is None:
            declared = {"web": node_command(src)}
    elif static_root is not None:
        stack = STATIC
        if declared is None:
            declared = {"web": static_command(static_root)}
    elif declared is not None:
        stack = GENERIC
    else:
        raise BuildFailed(
            "no supported app found: add a Procfile, requirements.txt, package.json or index.html"
        )
    return BuildPlan(stack=stack, process_types=declared)
