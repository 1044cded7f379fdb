"""Python apps: which interpreter they ask for, which the build host has, and what their
lockfiles pin.

The interpreter comes from ``.python-version``, else ``runtime.txt`` (``python-3.12.4``),
else ``requires-python`` in ``pyproject.toml``; with none of them, the host's ``python3``.
Interpreters are looked for as ``pythonX.Y`` on ``PATH`` and in the usual install places
(``/usr/bin``, ``/usr/local/bin``, ``/opt/python*``, pyenv's and uv's version
directories). An interpreter the app's processes cannot reach (a directory on its way
that their uid may not enter, such as root's home) is not used: the error says where it
is and why.

Lockfiles become requirement lists for one installer (uv, else pip): ``poetry.lock`` the
app's main dependencies as requirements with every locked version as a constraint (so the
resolver installs exactly the locked set that applies to this interpreter and platform),
``Pipfile.lock`` its ``default`` section as pinned requirements. As on Heroku, the app
itself is not installed as a package from a lockfile: its code runs from ``/app``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from shellwego.errors import BuildFailed

_FILE_NAME = re.compile(r"^python(\d+)\.(\d+)$")
_REQUEST = re.compile(r"^(?:python-?|cpython-?)?(\d+)(?:\.(\d+))?(?:\.(\d+))?$")

# where Python installations usually live, besides PATH
COMMON_DIRS = (
    "/usr/local/bin",
    "/usr/bin",
    "/opt/python*/bin",
    "/opt/python/*/bin",
    "/usr/local/python*/bin",
)
USER_DIRS = (  # relative to a home directory (or PYENV_ROOT for the first)
    ".pyenv/versions/*/bin",
    ".local/share/uv/python/*/bin",
)


@dataclass(frozen=True, slots=True)
class Request:
    """What an app asks for: ``version`` (``3.12`` or ``3.12.4``) or ``specifier``
    (``>=3.10,<3.13``), and the file that said so."""

    source: str
    version: str | None = None
    specifier: str | None = None

    def describe(self) -> str:
        wanted = f"Python {self.version}" if self.version else f"Python {self.specifier}"
        return f"{wanted} ({self.source})"

    def accepts(self, version: Version) -> bool:
        if self.version is not None:
            parts = self.version.split(".")
            return [str(p) for p in version.release[: len(parts)]] == parts
        assert self.specifier is not None
        return SpecifierSet(self.specifier).contains(version, prereleases=False)


@dataclass(frozen=True, slots=True)
class Interpreter:
    path: str
    version: Version
    blocked: Path | None = None  # a directory the app's processes cannot enter on its way

    @property
    def label(self) -> str:
        return f"{self.version} ({self.path})"


def parse_version_request(name: str, text: str) -> Request | None:
    """``.python-version`` (first line that is not a comment) or ``runtime.txt``."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _REQUEST.match(line)
        if match is None:
            raise BuildFailed(
                f"{name}: {line[:60]!r} is not a Python version (expected e.g. 3.12 or 3.12.4)"
            )
        version = ".".join(p for p in match.groups() if p is not None)
        if "." not in version:
            raise BuildFailed(f"{name}: give at least a major and minor version (e.g. 3.12)")
        return Request(name, version=version)
    return None


def requires_python(pyproject: bytes | None) -> Request | None:
    if pyproject is None:
        return None
    data = load_toml("pyproject.toml", pyproject)
    project = data.get("project")
    spec = project.get("requires-python") if isinstance(project, dict) else None
    if not isinstance(spec, str) or not spec.strip():
        return None
    try:
        SpecifierSet(spec)
    except InvalidSpecifier:
        raise BuildFailed(f"pyproject.toml: requires-python {spec[:80]!r} is not valid") from None
    return Request("requires-python in pyproject.toml", specifier=spec.strip())


def load_toml(name: str, data: bytes) -> dict[str, object]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildFailed(f"{name} is not valid TOML: {exc}") from None


def candidates(search_path: str, homes: Iterable[str]) -> list[str]:
    """Paths of ``pythonX.Y`` programs on ``search_path`` and in the common places, each
    real file once (the first name found for it)."""
    dirs = [d for d in search_path.split(os.pathsep) if d]
    for pattern in COMMON_DIRS:
        dirs += sorted(glob.glob(pattern))
    for home in homes:
        for pattern in USER_DIRS:
            dirs += sorted(glob.glob(os.path.join(home, pattern)))
    found: list[str] = []
    seen: set[str] = set()
    for directory in dirs:
        if "/shims" in directory:  # pyenv's shims choose by the caller's environment
            continue
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if _FILE_NAME.match(name) is None:
                continue
            path = os.path.join(directory, name)
            real = os.path.realpath(path)
            if real in seen or not (os.path.isfile(real) and os.access(real, os.X_OK)):
                continue
            seen.add(real)
            found.append(path)
    return found


def full_version(path: str) -> Version | None:
    try:
        done = subprocess.run(
            [path, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            env={"PATH": os.defpath},
        )
        return Version(done.stdout.strip()) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, InvalidVersion):
        return None


def choose(
    request: Request,
    found: Iterable[str],
    blocked_at: Callable[[Path], Path | None],
) -> Interpreter:
    """The newest interpreter that satisfies ``request`` and the app can reach; else a
    BuildFailed naming the versions the host has."""
    usable: list[Interpreter] = []
    unreachable: list[Interpreter] = []
    for path in found:
        match = _FILE_NAME.match(os.path.basename(path))
        assert match is not None
        if request.version is not None and request.version.split(".")[:2] != [match[1], match[2]]:
            continue  # not worth starting
        version = full_version(path)
        if version is None or not request.accepts(version):
            continue
        blocked = blocked_at(Path(os.path.realpath(path)))
        (usable if blocked is None else unreachable).append(Interpreter(path, version, blocked))
    if usable:
        return max(usable, key=lambda i: i.version)
    has = _host_versions(candidates_names(found))
    message = f"{request.describe()} is not installed on the build host; it has {has}"
    if unreachable:
        where = ", ".join(f"{i.label}, behind {i.blocked}" for i in unreachable)
        message += f" (found but out of reach of the app's processes: {where})"
    raise BuildFailed(message)


def candidates_names(found: Iterable[str]) -> list[str]:
    return sorted({os.path.basename(p) for p in found})


def _host_versions(names: list[str]) -> str:
    versions = sorted(
        {n.removeprefix("python") for n in names},
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    return "Python " + ", ".join(versions) if versions else "no pythonX.Y at all"


def current_homes() -> list[str]:
    homes = [os.path.expanduser("~")]
    root = os.environ.get("PYENV_ROOT")
    if root:
        homes.append(os.path.dirname(root.rstrip("/")) if root.endswith(".pyenv") else root)
    return homes


def platform_prefix() -> Path | None:
    """The platform's own virtualenv (never an app's interpreter), if it runs in one."""
    return Path(sys.prefix).resolve() if sys.prefix != sys.base_prefix else None


# ---- lockfiles ---------------------------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def poetry_requirements(pyproject: bytes, lock: bytes) -> tuple[list[str], list[str]]:
    """``(requirements, constraints)`` for the main dependencies of a Poetry project."""
    project = load_toml("pyproject.toml", pyproject)
    locked = load_toml("poetry.lock", lock)
    requirements: list[str] = []
    tool = project.get("tool")
    poetry = tool.get("poetry") if isinstance(tool, dict) else None
    table = poetry.get("dependencies") if isinstance(poetry, dict) else None
    if isinstance(table, dict):
        for name, spec in table.items():
            if _norm(name) == "python":
                continue
            extras = spec.get("extras") if isinstance(spec, dict) else None
            if isinstance(spec, dict) and spec.get("optional"):
                continue
            suffix = f"[{','.join(extras)}]" if isinstance(extras, list) and extras else ""
            requirements.append(f"{name}{suffix}")
    pep621 = project.get("project")
    deps = pep621.get("dependencies") if isinstance(pep621, dict) else None
    if isinstance(deps, list):
        requirements += [d for d in deps if isinstance(d, str)]
    constraints: list[str] = []
    packages = locked.get("package")
    for package in packages if isinstance(packages, list) else []:
        if not isinstance(package, dict):
            continue
        name, version = package.get("name"), package.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            continue
        source = package.get("source")
        kind = source.get("type") if isinstance(source, dict) else None
        if kind in (None, "legacy"):
            constraints.append(f"{name}=={version}")
        elif kind == "git" and isinstance(source, dict):
            ref = source.get("resolved_reference") or source.get("reference")
            url = f"git+{source.get('url')}@{ref}"
            requirements = [r for r in requirements if _norm(_name_of(r)) != _norm(name)]
            requirements.append(f"{name} @ {url}")
        else:
            raise BuildFailed(f"poetry.lock: {name} comes from a {kind} source, not supported")
    return requirements, constraints


def _name_of(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1) if match else requirement


def pipfile_requirements(lock: bytes) -> list[str]:
    """The ``default`` section of ``Pipfile.lock`` as pinned requirements."""
    try:
        data = json.loads(lock)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BuildFailed(f"Pipfile.lock is not valid JSON: {exc}") from None
    default = data.get("default") if isinstance(data, dict) else None
    if not isinstance(default, dict):
        raise BuildFailed("Pipfile.lock has no 'default' section")
    out: list[str] = []
    for name, entry in sorted(default.items()):
        if not isinstance(entry, dict):
            continue
        extras = entry.get("extras")
        suffix = f"[{','.join(extras)}]" if isinstance(extras, list) and extras else ""
        if isinstance(entry.get("version"), str):
            line = f"{name}{suffix}{entry['version']}"
        elif isinstance(entry.get("git"), str):
            ref = entry.get("ref")
            line = f"{name}{suffix} @ git+{entry['git']}" + (f"@{ref}" if ref else "")
        elif isinstance(entry.get("file"), str) and "://" in entry["file"]:
            line = f"{name}{suffix} @ {entry['file']}"
        else:
            raise BuildFailed(f"Pipfile.lock: {name} is neither a version nor a git or URL source")
        markers = entry.get("markers")
        if isinstance(markers, str) and markers.strip():
            line += f" ; {markers}"
        out.append(line)
    return out
