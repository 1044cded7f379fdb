"""Terminal output: Rich tables for people, ``--json`` for scripts, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

UNBOUNDED = 1_000_000  # columns: how wide a table off a terminal may grow


def console() -> Console:
    """A console on the current stdout; wide when it is not a terminal, so rows never wrap."""
    is_tty = sys.stdout.isatty()
    return Console(
        file=sys.stdout,
        width=None if is_tty else 250,
        highlight=False,
        soft_wrap=not is_tty,
        color_system="auto" if is_tty else None,
    )


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: <message>`` on stderr and exit."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def line(text: str = "") -> None:
    typer.echo(text)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain table: a bold header and aligned columns, no borders."""
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name in columns:
        grid.add_column(name, overflow="fold")
    for row in rows:
        grid.add_row(*(cell(v) for v in row))
    show(grid)


def show(renderable: Any) -> None:
    """Print a Rich renderable; off a terminal, as wide as it needs (rows never fold) and
    without trailing blanks on each line."""
    out = console()
    if out.is_terminal:
        out.print(renderable)
        return
    needed = Measurement.get(out, out.options.update(max_width=UNBOUNDED), renderable)
    out.width = max(out.width, needed.maximum)
    with out.capture() as captured:
        out.print(renderable)
    for text in captured.get().splitlines():
        typer.echo(text.rstrip())


def pairs(title: str, items: Sequence[tuple[str, Any]]) -> None:
    """``=== title`` and then ``Key:  value`` lines."""
    typer.echo(f"=== {title}")
    width = max((len(k) for k, _ in items), default=0) + 1
    for key, value in items:
        typer.echo(f"{(key + ':').ljust(width)} {cell(value)}")


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def when(value: str | None) -> str:
    """An API timestamp as ``YYYY-MM-DD HH:MM:SSZ`` (UTC)."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
