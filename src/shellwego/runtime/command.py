"""An instance's command line and environment.

Each instance runs ``/bin/sh -c``: it joins its cgroups, enters the sandbox, changes to
the app directory, sources ``$HOME/.profile.d/*.sh`` and then replaces itself with the
command when that is one plain program invocation (so signals reach the app directly).
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
from .sandbox import Sandbox

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"

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
    spec: InstanceSpec,
    cgroups: Mapping[str, str],
    command: str | None,
    args: Sequence[str],
    sandbox: Sandbox,
    hidden: Iterable[Path],
) -> list[str]:
    """``/bin/sh -c`` joining the cgroups, entering the sandbox, sourcing .profile.d.

    ``command`` runs as the instance's process; without one, ``args`` are run as given.
    """
    app_dir = shlex.quote(str(spec.app_dir))
    run = exec_form(command) if command is not None else 'exec "$@"'
    inner = (
        f"cd -- {app_dir} || exit 126\nunset OLDPWD\n"
        'for f in "$HOME"/.profile.d/*.sh; do if [ -r "$f" ]; then . "$f"; fi; done\n'
        f"{run}\n"
    )
    join = "".join(
        f"echo $$ > {shlex.quote(procs)} || exit 125\n" for procs in Cgroups.procs_files(cgroups)
    )
    if sandbox.binary is None:
        return ["/bin/sh", "-c", join + inner, "sh", *args]
    sandboxed = sandbox.argv(spec.app_dir, hidden, ["/bin/sh", "-c", inner, "sh", *args])
    return ["/bin/sh", "-c", join + 'exec "$@"\n', "sh", *sandboxed]


def instance_environment(spec: InstanceSpec) -> dict[str, str]:
    """A clean environment: the release's config plus ``PORT``, ``HOME``, ``PATH``, ``LANG``."""
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
    env.update(spec.env)
    env["PORT"] = str(spec.port)
    env["HOME"] = str(spec.app_dir)
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
