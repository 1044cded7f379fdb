"""Node.js apps: whether the host's ``node`` satisfies ``engines.node``, and which package
manager installs the app (the one its lockfile belongs to).

``engines.node`` is an npm semver range (``>=18``, ``^20.1``, ``18.x || 20.x``,
``16 - 20``); the build host's node must satisfy it, as no other node is fetched. A
lockfile decides the package manager: ``package-lock.json`` (or ``npm-shrinkwrap.json``)
npm, ``yarn.lock`` yarn, ``pnpm-lock.yaml`` pnpm, none npm; the package manager must be on
the build host. Two lockfiles of different managers are an error, as on Heroku.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shellwego.errors import BuildFailed

Semver = tuple[int, int, int]

_PARTIAL = re.compile(r"^v?=?\s*(\d+|[xX*])?(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:[-+].*)?$")
_COMPARATOR = re.compile(r"^(\^|~>?|>=|<=|>|<|=)?\s*(.*)$")

LOCKFILES = {
    "package-lock.json": "npm",
    "npm-shrinkwrap.json": "npm",
    "yarn.lock": "yarn",
    "pnpm-lock.yaml": "pnpm",
}


def parse_version(text: str) -> Semver:
    """``v20.11.1`` → (20, 11, 1)."""
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text.strip())
    if match is None:
        raise BuildFailed(f"cannot read the Node.js version {text.strip()[:40]!r}")
    return int(match[1]), int(match[2]), int(match[3])


def _partial(text: str) -> list[int]:
    """The numbers given before the first wildcard: ``18.x`` → [18]."""
    match = _PARTIAL.match(text.strip())
    if match is None:
        raise ValueError(text)
    parts: list[int] = []
    for group in match.groups():
        if group is None or group in ("x", "X", "*"):
            break
        parts.append(int(group))
    return parts


def _fill(parts: list[int]) -> Semver:
    padded = [*parts, 0, 0, 0][:3]
    return padded[0], padded[1], padded[2]


def _bump(parts: list[int], at: int) -> Semver:
    """The first version past ``parts`` at position ``at`` (``[1, 2]``, 0 → 2.0.0)."""
    bumped = [*parts[:at], parts[at] + 1]
    return _fill(bumped)


def _comparators(text: str) -> list[tuple[str, Semver]]:
    """One comparator of a range as ``(op, version)`` pairs, wildcards and sugar removed."""
    match = _COMPARATOR.match(text)
    assert match is not None
    op, rest = match.group(1) or "", match.group(2)
    parts = _partial(rest)
    if not parts:  # *, x, or an empty version: anything (but "<*": nothing)
        return [("<", (0, 0, 0))] if op in ("<", ">") else []
    if op == "^":
        first = next((i for i, n in enumerate(parts) if n != 0), len(parts) - 1)
        return [(">=", _fill(parts)), ("<", _bump(parts, first))]
    if op in ("~", "~>"):
        at = 1 if len(parts) >= 2 else 0
        return [(">=", _fill(parts)), ("<", _bump(parts, at))]
    if op in ("", "="):
        if len(parts) == 3:
            return [("=", _fill(parts))]
        return [(">=", _fill(parts)), ("<", _bump(parts, len(parts) - 1))]
    if op == ">":
        return [(">=", _bump(parts, len(parts) - 1))] if len(parts) < 3 else [(">", _fill(parts))]
    if op == "<=":
        return [("<", _bump(parts, len(parts) - 1))] if len(parts) < 3 else [("<=", _fill(parts))]
    return [(op, _fill(parts))]  # >= and <


def _holds(version: Semver, op: str, bound: Semver) -> bool:
    return {
        "=": version == bound,
        ">=": version >= bound,
        ">": version > bound,
        "<": version < bound,
        "<=": version <= bound,
    }[op]


def satisfies(version: Semver, spec: str) -> bool:
    """Whether ``version`` is in the npm semver range ``spec``; ValueError if unreadable."""
    for alternative in spec.split("||"):
        text = re.sub(r"(\^|~>?|>=|<=|>|<|=)\s+", r"\1", alternative.strip())
        hyphen = re.match(r"^(\S+)\s+-\s+(\S+)$", text)
        if hyphen is not None:
            low, high = _partial(hyphen[1]), _partial(hyphen[2])
            pairs = [(">=", _fill(low))]
            if high:
                pairs.append(
                    ("<=", _fill(high)) if len(high) == 3 else ("<", _bump(high, len(high) - 1))
                )
        else:
            pairs = [pair for word in text.split() for pair in _comparators(word)]
        if all(_holds(version, op, bound) for op, bound in pairs):
            return True
    return False


def check_engine(version: Semver, spec: object) -> None:
    """Raise BuildFailed when the host's node does not satisfy ``engines.node``."""
    if spec is None:
        return
    have = ".".join(map(str, version))
    if not isinstance(spec, str):
        raise BuildFailed("package.json: engines.node must be a string (a semver range)")
    try:
        fits = satisfies(version, spec)
    except ValueError:
        raise BuildFailed(
            f"package.json: engines.node {spec[:80]!r} is not a semver range"
        ) from None
    if not fits:
        raise BuildFailed(
            f"package.json asks for Node.js {spec[:80]} (engines.node) but the build host has "
            f"Node.js {have}: change engines.node, or install a matching node on the build host"
        )


@dataclass(frozen=True, slots=True)
class Manager:
    name: str  # npm, yarn or pnpm
    lockfile: str | None


def manager(present: set[str]) -> Manager:
    """The package manager the app's lockfile belongs to (npm without one)."""
    found = sorted({LOCKFILES[name] for name in present if name in LOCKFILES})
    if len(found) > 1:
        names = ", ".join(sorted(n for n in present if n in LOCKFILES))
        raise BuildFailed(
            f"lockfiles of different package managers ({names}): keep the one of the "
            "package manager the app uses and delete the others"
        )
    if not found:
        return Manager("npm", None)
    lock = min(n for n in present if LOCKFILES.get(n) == found[0])
    return Manager(found[0], lock)


def install_argv(
    tool: str, binary: str, version: str, lockfile: str | None, cache: str
) -> list[str]:
    """The install command of ``tool`` (production dependencies, the lockfile followed)."""
    if tool == "yarn":
        if version.startswith("1."):
            return [binary, "install", "--frozen-lockfile", "--production=true",
                    "--non-interactive", "--cache-folder", f"{cache}/yarn"]  # fmt: skip
        return [binary, "install", "--immutable"]
    if tool == "pnpm":
        return [binary, "install", "--frozen-lockfile", "--prod", "--store-dir", f"{cache}/pnpm"]
    command = "ci" if lockfile is not None else "install"
    return [binary, command, "--omit=dev", "--cache", f"{cache}/npm", "--no-audit", "--no-fund",
            "--no-progress", "--no-update-notifier"]  # fmt: skip
