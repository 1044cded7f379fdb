"""Shared helpers for the build tests: writing apps, collecting logs, running slugs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


class Lines:
    """A build log sink that keeps every line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run_in_slug(app_dir: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` the way the runtime runs a process: sh, HOME=slug, .profile.d sourced."""
    script = 'for f in "$HOME"/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; ' + command
    return subprocess.run(
        ["/bin/sh", "-c", script],
        cwd=app_dir,
        env={"HOME": str(app_dir), "PATH": os.environ.get("PATH", os.defpath), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
