"""The node's identity: written once at registration, read on every start.

``node.json`` in the state directory holds the node id, its token and the control plane
it belongs to (mode 0600, written atomically). A restarted agent loads it and is the
same node; it never registers a second time.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shellwego.errors import ConfigError

FILENAME = "node.json"


@dataclass(frozen=True, slots=True)
class Identity:
    node_id: str
    node_token: str
    server_url: str

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"Identity(node_id={self.node_id!r}, server_url={self.server_url!r})"


def path_of(state_dir: Path) -> Path:
    return state_dir / FILENAME


def load(state_dir: Path) -> Identity | None:
    """The saved identity, or None when this node has not registered yet."""
    path = path_of(state_dir)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the node identity {path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
        identity = Identity(
            node_id=str(data["node_id"]),
            node_token=str(data["node_token"]),
            server_url=str(data["server_url"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the node identity {path} is damaged; remove it and join again with a new join token"
        ) from exc
    if not identity.node_id or not identity.node_token:
        raise ConfigError(
            f"the node identity {path} is incomplete; remove it and join again "
            "with a new join token"
        )
    return identity


def save(state_dir: Path, identity: Identity) -> Path:
    """Write ``node.json`` atomically (temp file + rename), readable by its owner only."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = path_of(state_dir)
    body = json.dumps(
        {
            "node_id": identity.node_id,
            "node_token": identity.node_token,
            "server_url": identity.server_url,
        },
        indent=2,
    )
    fd, tmp = tempfile.mkstemp(prefix=".node-", suffix=".json", dir=state_dir)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
