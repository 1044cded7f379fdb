"""The unprivileged instance user: configuration, and what it can reach."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from shellwego.errors import ConfigError
from shellwego.runtime.user import RunUser, run_user
from shellwego.settings import Settings


def test_the_instance_user_is_nobody_unless_configured(tmp_path: Path) -> None:
    def user(value: str | None) -> tuple[int, int]:
        env = {} if value is None else {"SHELLWEGO_INSTANCE_USER": value}
        return Settings.from_env(env, data_dir=tmp_path).instance_user

    assert user(None) == (65534, 65534)
    assert user("1500:1600") == (1500, 1600)
    assert user("1500") == (1500, 1500)
    for bad in ("0:0", "0", "1500:0", "nobody", "1:2:3", ""):
        with pytest.raises(ConfigError, match="SHELLWEGO_INSTANCE_USER must be a non-root"):
            user(bad)


def test_only_a_root_agent_switches_user() -> None:
    found = run_user((65534, 65534))
    if os.geteuid() != 0:
        assert found is None
    else:
        assert found is not None and (found.uid, found.gid) == (65534, 65534)
        assert found.argv()[1:] == [
            "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--",
        ]  # fmt: skip
    assert run_user(None) is None


def test_what_the_user_can_reach() -> None:
    user = RunUser(os.getuid() + 1000, os.getgid() + 1000, "setpriv")
    base = Path(tempfile.mkdtemp(prefix="shellwego-test-", dir="/var/tmp"))
    try:
        (base / "open" / "deeper").mkdir(parents=True)
        (base / "closed").mkdir(mode=0o700)
        base.chmod(0o711)
        (base / "open").chmod(0o755)
        assert user.blocked_at(base / "open" / "deeper") is None
        assert user.blocked_at(base / "closed" / "anything") == base / "closed"
        assert user.blocked_at(base / "missing") == base / "missing"
        mine = RunUser(os.getuid(), os.getgid(), "setpriv")  # the owner's bit counts
        assert mine.blocked_at(base / "closed") is None
    finally:
        shutil.rmtree(base)
