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


def test_app_uids_come_from_a_range_above_the_system_users(tmp_path: Path) -> None:
    def uids(value: str | None) -> tuple[int, int]:
        env = {} if value is None else {"SHELLWEGO_APP_UIDS": value}
        return Settings.from_env(env, data_dir=tmp_path).app_uids

    assert uids(None) == (1000000, 1999999)
    assert uids("200000-200099") == (200000, 200099)
    for bad in ("0-100", "65535-70000", "300-200", "2000000", "a-b", "", "1-2-3", "200000-"):
        with pytest.raises(ConfigError, match="SHELLWEGO_APP_UIDS must be a range of uids"):
            uids(bad)


def test_process_and_open_file_limits_are_bounded(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"SHELLWEGO_PIDS_LIMIT": "64", "SHELLWEGO_NOFILE_LIMIT": "2048"}, data_dir=tmp_path
    )
    assert (settings.pids_limit, settings.nofile_limit) == (64, 2048)
    assert Settings.from_env({}, data_dir=tmp_path).pids_limit == 512
    for name, bad in (("SHELLWEGO_PIDS_LIMIT", "0"), ("SHELLWEGO_NOFILE_LIMIT", "99999999")):
        with pytest.raises(ConfigError, match=f"{name} must be between"):
            Settings.from_env({name: bad}, data_dir=tmp_path)


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
