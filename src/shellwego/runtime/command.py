"""An instance's command line and environment.

Each instance runs ``/bin/sh -c``: it joins its cgroups, mounts its app layer, enters the
sandbox (where its app directory is ``/app``, as on Heroku), becomes the instance user,
changes to the app directory, sources
``$HOME/.profile.d/*.sh`` and then replaces itself with the command when that is one
plain program invocation (so signals reach the app directly). Each step ``exec``s the
next, so the instance keeps the pid it was started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shellwego.errors import RuntimeFailure

from .cgroups import Cgroups
from .driver import InstanceSpec
from .procfs import group_members
from .sandbox import APP_MOUNT, Sandbox
from .user import SWITCH_CAPS, RunUser

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
MiB = 1024 * 1024
# Heroku's default: one worker per 256 MiB of the dyno's memory (512 MiB: 2)
WORKER_MEMORY = 256 * MiB
MAX_WEB_CONCURRENCY = 32

# Words that cannot follow ``exec`` (shell keywords and builtins); commands starting with
# them, and compound commands, run under the shell instead of replacing it.
_SHELL_WORDS = frozenset(
    {
        "!", "{", "(", "[[", ".", ":", "alias", "case", "cd", "eval", "exec", "exit", "export",
        "for", "if", "local", "read", "readonly", "return", "set", "shift", "source", "trap",
        "ulimit", "umask", "unset", "until", "wait", "while",
    }
)  # fmt: skip
_COMPOUND_TOKENS = frozenset({";", "&", "&&", "|", "||", "(", ")", ";;", "|&"})


def exec_form(command: str) -> str:
    """``exec <command>`` when the command is one plain program invocation, else as is."""
    if "\n" in command:
        return command
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return command
    if not tokens or any(t in _COMPOUND_TOKENS for t in tokens):
        return command
    first = tokens[0]
    if first in _SHELL_WORDS or "=" in first.split("/")[0]:
        return command
    return f"exec {command}"


def instance_argv(
    app_dir: Path,
    command: str | None,
    args: Sequence[str],
    *,
    cgroups: Mapping[str, str],
    sandbox: Sandbox,
    hidden: Iterable[Path],
    user: RunUser | None = None,
    prefix: Sequence[str] = (),
    setup: str = "",
    nofile: int | None = None,
) -> list[str]:
    """``/bin/sh -c`` joining the cgroups, limiting open files to ``nofile`` (soft and
    hard), running ``setup`` (as root), entering the sandbox, switching to ``user``, then
    sourcing .profile.d in ``app_dir``.

    ``command`` runs as the instance's process; without one, ``args`` are run as given.
    ``prefix`` is what the launcher itself runs under (e.g. ``unshare --mount``). In the
    sandbox the app directory is :data:`APP_MOUNT` (see :func:`home_dir`).
    """
    quoted = shlex.quote(str(home_dir(app_dir, sandbox)))
    run = exec_form(command) if command is not None else 'exec "$@"'
    inner = (
        f"cd -- {quoted} || exit 126\nunset OLDPWD\n"
        'for f in "$HOME"/.profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done\n'
        f"{run}\n"
    )
    join = Cgroups.join_script(cgroups)
    if nofile is not None:
        join += f"ulimit -n {int(nofile)} || exit 125\n"
    join += setup
    if sandbox.binary is None and user is None and not prefix:
        return ["/bin/sh", "-c", join + inner, "sh", *args]
    program = [*(user.argv() if user else ()), "/bin/sh", "-c", inner, "sh", *args]
    if sandbox.binary is not None:
        keep = SWITCH_CAPS if user is not None else ()
        program = sandbox.argv(app_dir, hidden, program, keep_caps=keep, at=APP_MOUNT)
    return [*prefix, "/bin/sh", "-c", join + 'exec "$@"\n', "sh", *program]


def home_dir(app_dir: Path, sandbox: Sandbox) -> Path:
    """Where an instance sees its app directory (its HOME and working directory):
    ``/app`` in the sandbox, else its host path."""
    return APP_MOUNT if sandbox.binary is not None else app_dir


def web_concurrency(memory_bytes: int) -> int:
    """Heroku's ``WEB_CONCURRENCY`` for an instance of ``memory_bytes``: one worker per
    256 MiB (512 MiB: 2, 1 GiB: 4), at least 1."""
    return max(1, min(MAX_WEB_CONCURRENCY, memory_bytes // WORKER_MEMORY))


def instance_environment(spec: InstanceSpec, home: Path | None = None) -> dict[str, str]:
    """A clean environment: the release's config plus ``PORT``, ``HOME`` (the app
    directory the instance sees), ``PATH``, ``LANG``, and Heroku's ``DYNO`` (``web.1``:
    the process type and the instance's number within it) and ``WEB_CONCURRENCY`` (from
    its memory, unless its config sets it)."""
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
    env["WEB_CONCURRENCY"] = str(web_concurrency(spec.memory_bytes))
    env.update(spec.env)
    if spec.index is not None:
        env["DYNO"] = f"{spec.process_type}.{spec.index}"
    env["PORT"] = str(spec.port)
    env["HOME"] = str(home or spec.directory)
    return env


async def run_collected(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    cgroups: Mapping[str, str],
    timeout: float,
    limit: int,
    instance_id: str,
) -> tuple[int | None, str]:
    """Run a one-off command in a session of its own and collect up to ``limit`` bytes of
    its output: ``(returncode, output)``, returncode None when it ran past ``timeout``.

    Whatever the command left running (its process group, its cgroups) is killed.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise RuntimeFailure(f"cannot run a command for {instance_id}: {exc.strerror}") from exc
    output = bytearray()
    reader = asyncio.create_task(_drain(proc.stdout, output, limit))
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None or group_members(proc.pid):  # leftovers only
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        Cgroups.kill(cgroups)
        await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), 2.0)
        reader.cancel()
    text = bytes(output).decode(errors="replace")
    if timed_out:
        return None, text
    return (proc.returncode if proc.returncode is not None else 1), text


async def _drain(stream: asyncio.StreamReader | None, into: bytearray, limit: int) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        if len(into) < limit:
            into += chunk[: limit - len(into)]
