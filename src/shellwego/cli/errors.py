"""Usage errors as one line: ``Error: <what> (see: shellwego <command> --help)``.

Click and Typer print usage, a hint and a boxed message over several lines; the root
command runs them in non-standalone mode instead and reports every error the same way the
API's errors are reported: one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

try:  # Typer 0.26+ carries its own copy of click
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover - older Typer runs on click itself
    from click import exceptions as click  # type: ignore[no-redef]

USAGE_EXIT = 2


def usage(message: str) -> NoReturn:
    """End the command for a usage mistake (a malformed argument, a missing flag): one
    line ``Error: <message> (see: shellwego <command> --help)`` and exit 2. Failed
    operations exit 1 (``output.fail``)."""
    raise click.UsageError(message)


def one_line(text: str) -> str:
    """Collapse whitespace and newlines; drop the trailing full stop click adds."""
    return " ".join(text.split()).rstrip(".")


def usage_message(error: click.UsageError) -> str:
    message = one_line(error.format_message())
    ctx = error.ctx
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message += f" (see: {ctx.command_path} --help)"
    return message


def report(error: BaseException) -> int:
    """Print ``error`` as one line on stderr; returns the exit code."""
    if isinstance(error, click.NoArgsIsHelpError):
        # the help was printed while the error was made; a group without a command
        text = error.format_message().strip()
        if text:
            typer.echo(text)
        return USAGE_EXIT
    if isinstance(error, click.UsageError):
        typer.echo(f"Error: {usage_message(error)}", err=True)
        return error.exit_code or USAGE_EXIT
    if isinstance(error, click.ClickException):
        typer.echo(f"Error: {one_line(error.format_message())}", err=True)
        return error.exit_code or 1
    typer.echo("Error: aborted", err=True)
    return 1


class RootGroup(TyperGroup):
    """The ``shellwego`` command: always non-standalone, so errors are reported here."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> NoReturn:
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except (click.ClickException, typer.Abort) as error:
            sys.exit(report(error))
        # non-standalone click returns the code of an Exit, else the command's value
        sys.exit(result if isinstance(result, int) else 0)
