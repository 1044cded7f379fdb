"""The bubblewrap command line, checked without running it."""

from __future__ import annotations

from pathlib import Path

from shellwego.runtime.sandbox import Sandbox


def _pairs(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_argv_masks_hidden_paths_and_binds_only_the_app_writable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = data / "agent" / "instances" / "i-1" / "app"
    app.mkdir(parents=True)
    (data / "master.key").write_text("k")
    key_file = tmp_path / "key"
    key_file.write_text("k")
    cache = data / "cache"
    cache.mkdir()
    argv = Sandbox("/usr/bin/bwrap", ("--unshare-user",)).argv(
        app,
        [data, data / "agent", key_file, tmp_path / "missing"],
        ["/bin/sh", "-c", "true"],
        binds=[cache],
        keep_caps=["CAP_SETUID"],
    )
    # the host's top-level entries read-only (links as links), then private /dev /proc /tmp
    assert argv[argv.index("/usr") - 1 :][:3] == ["--ro-bind", "/usr", "/usr"]
    assert argv[argv.index("/etc") - 1 :][:3] == ["--ro-bind", "/etc", "/etc"]
    if Path("/bin").is_symlink():
        assert argv[argv.index("/bin") - 2 : argv.index("/bin") + 1] == [
            "--symlink", str(Path("/bin").readlink()), "/bin",
        ]  # fmt: skip
    assert not {"/proc", "/dev", "/tmp"} & set(_pairs(argv, "--ro-bind"))
    start = argv.index("--dev")
    assert argv[start : start + 7] == [
        "--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs",
    ]  # fmt: skip
    assert argv[argv.index("--remount-ro") + 1] == "/"  # the root itself is read-only too
    assert _pairs(argv, "--tmpfs") == ["/tmp", str(data)]  # data/agent is inside data
    assert argv[argv.index(str(key_file)) - 2 :][:3] == ["--ro-bind", "/dev/null", str(key_file)]
    # the way to the app inside the mask: search-only directories, then the bind
    dirs = _pairs(argv, "--dir")
    assert dirs == [str(data / "agent"), str(data / "agent" / "instances"), str(app.parent)]
    for d in dirs:
        assert argv[argv.index(d) - 3 : argv.index(d)] == ["--perms", "0711", "--dir"]
    binds = [argv[i + 1 : i + 3] for i, arg in enumerate(argv) if arg == "--bind"]
    assert binds == [[str(app), str(app)], [str(cache), str(cache)]]
    assert argv.index(str(data)) < argv.index("--bind")  # masks first, then what shows through
    assert argv[argv.index("--chdir") + 1] == str(app)
    assert argv[argv.index("--cap-drop") : argv.index("--cap-drop") + 4] == [
        "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
    ]  # fmt: skip
    assert "--unshare-pid" in argv and "--unshare-user" in argv
    assert argv[-4:] == ["--", "/bin/sh", "-c", "true"]


def test_a_hidden_path_inside_the_app_is_masked_on_top_of_its_bind(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "secrets").mkdir(parents=True)
    argv = Sandbox("/usr/bin/bwrap").argv(app, [app / "secrets"], ["true"])
    assert argv.index("--bind") < argv.index(str(app / "secrets"))


def test_the_way_into_the_private_tmp_is_search_only() -> None:
    app = Path("/tmp/builds/b-1/src")
    argv = Sandbox("/usr/bin/bwrap").argv(app, [], ["true"])
    assert _pairs(argv, "--dir") == ["/tmp/builds", "/tmp/builds/b-1"]
    assert argv.index("/tmp/builds/b-1") < argv.index("--bind")


def test_the_app_can_be_mounted_at_slash_app(tmp_path: Path) -> None:
    app = tmp_path / "state" / "i-1" / "app"
    (app / "secrets").mkdir(parents=True)
    argv = Sandbox("/usr/bin/bwrap").argv(
        app, [tmp_path / "state", app / "secrets"], ["true"], at=Path("/app")
    )
    binds = [argv[i + 1 : i + 3] for i, arg in enumerate(argv) if arg == "--bind"]
    assert binds == [[str(app), "/app"]]
    assert argv[argv.index("--chdir") + 1] == "/app"
    assert "/app" not in _pairs(argv, "--ro-bind")  # nothing of the host's is in the way
    assert _pairs(argv, "--dir") == []  # no way in to the host path needed
    # a hidden path inside the app is masked where the sandbox sees it
    assert _pairs(argv, "--tmpfs")[-1] == "/app/secrets"
    assert argv.index("--bind") < argv.index("/app/secrets") < argv.index("--remount-ro")
