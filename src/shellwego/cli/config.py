"""Where the CLI keeps its login: ``config.json`` with ``api_url`` and ``token`` (mode 0600)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE_NAME = "config.json"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$SHELLWEGO_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/shellwego``, else ``~/.config/shellwego``.

    The environment is read when asked, never at import.
    """
    env = os.environ if env is None else env
    explicit = env.get("SHELLWEGO_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg).expanduser() / "shellwego"
    return Path.home() / ".config" / "shellwego"


def config_path(config_dir_: Path | None = None) -> Path:
    return (config_dir_ or config_dir()) / FILE_NAME


def load(config_dir_: Path | None = None) -> dict[str, Any]:
    """The saved settings, or an empty dict when there are none (or the file is unreadable)."""
    path = config_path(config_dir_)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(data), handle, indent=2)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def save_login(api_url: str, token: str, config_dir: Path | None = None) -> Path:
    """Remember the API URL and token; returns the file written."""
    path = config_path(config_dir)
    data = load(config_dir)
    data.update({"api_url": api_url.rstrip("/"), "token": token})
    _write(path, data)
    return path


def clear_token(config_dir: Path | None = None) -> Path | None:
    """Forget the token (the API URL stays); returns the file changed, or None."""
    path = config_path(config_dir)
    data = load(config_dir)
    if "token" not in data:
        return None
    data.pop("token")
    with contextlib.suppress(OSError):
        _write(path, data)
    return path
