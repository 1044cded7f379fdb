"""Builders shared by the agent tests."""

from __future__ import annotations

from typing import Any

from shellwego.models.agentprotocol import Assignment

DIGEST = "a" * 64


def assignment_dict(iid: str, **over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "instance_id": iid,
        "app_id": "APP1",
        "app_name": "blog",
        "process_type": "web",
        "release_id": "REL1",
        "release_version": 1,
        "slug_digest": DIGEST,
        "command": "python -m http.server",
        "env": {"SECRET_KEY": "hunter2-do-not-print"},
        "port": 20001,
        "memory_bytes": 256 * 1024 * 1024,
        "cpu_millis": 250,
        "health_check": {"type": "process", "timeout_seconds": 30},
        "desired_state": "running",
    }
    raw.update(over)
    return raw


def assignment(iid: str, **over: Any) -> Assignment:
    return Assignment.model_validate(assignment_dict(iid, **over))
