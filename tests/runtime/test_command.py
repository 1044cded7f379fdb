"""How an instance's command line is built: no privileges needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from shellwego.runtime.command import (
    exec_form,
    instance_argv,
    instance_environment,
    web_concurrency,
)
from shellwego.runtime.driver import InstanceSpec
from shellwego.runtime.sandbox import Sandbox
from shellwego.runtime.user import RunUser


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("python3 web.py", "exec python3 web.py"),
        ("gunicorn app:app --bind 0.0.0.0:$PORT", "exec gunicorn app:app --bind 0.0.0.0:$PORT"),
        ("./bin/start 'with space'", "exec ./bin/start 'with space'"),
        ("FOO=1 python3 web.py", "FOO=1 python3 web.py"),  # assignments need the shell
        ("cd sub && ./run", "cd sub && ./run"),
        ("a; b", "a; b"),
        ("a | b", "a | b"),
        ("a &", "a &"),
        ("exit 3", "exit 3"),
        ("if true; then x; fi", "if true; then x; fi"),
        ("echo 'unbalanced", "echo 'unbalanced"),
        ("one\ntwo", "one\ntwo"),
        ("", ""),
    ],
)
def test_exec_form_replaces_the_shell_only_for_one_plain_program(
    command: str, expected: str
) -> None:
    assert exec_form(command) == expected


APP = Path("/srv/node/instances/i-1/app")
CGROUPS = {"memory": "/sys/fs/cgroup/memory/shellwego/i-1"}
INNER_START = f"cd -- {APP} || exit 126\n"


def test_plain_argv_is_one_shell_that_joins_its_cgroups_and_execs_the_command() -> None:
    argv = instance_argv(
        APP, "python3 web.py", (), cgroups=CGROUPS, sandbox=Sandbox(None), hidden=[]
    )
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3:] == ["sh"]
    script = argv[2]
    assert script.startswith(
        "echo $$ > /sys/fs/cgroup/memory/shellwego/i-1/cgroup.procs || exit 125\n" + INNER_START
    )
    assert script.endswith("exec python3 web.py\n")


def test_sandboxed_argv_layers_mount_namespace_bwrap_and_user_in_that_order() -> None:
    user = RunUser(65534, 65534, "/usr/bin/setpriv")
    argv = instance_argv(
        APP,
        None,
        ["id", "-u"],
        cgroups=CGROUPS,
        sandbox=Sandbox("/usr/bin/bwrap"),
        hidden=[Path("/srv/node")],
        user=user,
        prefix=["/usr/bin/unshare", "--mount", "--"],
        setup="mount overlay\n",
    )
    assert argv[:5] == ["/usr/bin/unshare", "--mount", "--", "/bin/sh", "-c"]
    assert argv[5].endswith('mount overlay\nexec "$@"\n')  # cgroups, then the overlay
    assert argv[6:8] == ["sh", "/usr/bin/bwrap"]
    inside = argv[argv.index("--", 8) + 1 :]
    assert inside[: len(user.argv())] == user.argv()
    assert inside[len(user.argv()) :][:2] == ["/bin/sh", "-c"]
    assert inside[-3:] == ["sh", "id", "-u"]
    bwrap = argv[7 : argv.index("--", 8)]
    for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_READ_SEARCH"):
        assert ["--cap-add", cap] == bwrap[bwrap.index(cap) - 1 : bwrap.index(cap) + 1]


def test_environment_is_the_release_config_with_port_and_home() -> None:
    spec = InstanceSpec(
        "i-1", "a", "web", "web", "r", "x", Path("/slug"), {"PORT": "1", "HOME": "/", "K": "v"}, 8
    )
    assert instance_environment(spec, APP) == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "WEB_CONCURRENCY": "2",  # 512 MiB, as on Heroku
        "PORT": "8",
        "HOME": str(APP),
        "K": "v",
    }


def test_environment_carries_dyno_and_web_concurrency_as_heroku_sets_them() -> None:
    spec = InstanceSpec(
        "i-1", "a", "web", "worker", "r", "x", Path("/slug"), {"DYNO": "mine"}, 8,
        memory_bytes=1024**3, index=3,
    )  # fmt: skip
    env = instance_environment(spec, APP)
    assert env["DYNO"] == "worker.3"  # the platform's, whatever the config says
    assert env["WEB_CONCURRENCY"] == "4"
    small = InstanceSpec(
        "i-2", "a", "web", "web", "r", "x", Path("/slug"), {"WEB_CONCURRENCY": "7"}, 8,
        memory_bytes=128 * 1024**2,
    )  # fmt: skip
    assert instance_environment(small, APP)["WEB_CONCURRENCY"] == "7"  # the app's config wins
    assert "DYNO" not in instance_environment(small, APP)  # no number from the control plane
    assert web_concurrency(128 * 1024**2) == 1
    assert web_concurrency(512 * 1024**2) == 2
    assert web_concurrency(64 * 1024**3) == 32
