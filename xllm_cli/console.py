"""What the user sees: one rich console on stderr for messages, plain lines when not on a terminal or --quiet."""

from __future__ import annotations

import os
import sys
from typing import Any

_state = {"verbose": False, "quiet": False}
_console: Any = None


def configure(verbose: bool = False, quiet: bool = False) -> None:
    _state["verbose"] = verbose
    _state["quiet"] = quiet


def verbose() -> bool:
    return _state["verbose"]


def quiet() -> bool:
    return _state["quiet"]


def is_main_process() -> bool:
    """Rank 0 of a distributed run (or a single process): the only one that prints and writes."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("0", "")


def fancy() -> bool:
    """Live progress bars only on a terminal and without --quiet; CI logs get plain lines."""
    return sys.stderr.isatty() and not _state["quiet"]


def console():
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _console


def info(message: str) -> None:
    """A progress or result line, from the main process only, silenced by --quiet."""
    if _state["quiet"] or not is_main_process():
        return
    console().print(message, markup=False) if not fancy() else console().print(message)


def warn(message: str) -> None:
    if not is_main_process():
        return
    console().print(f"[yellow]warning:[/yellow] {message}" if fancy() else f"warning: {message}", markup=fancy())


def error(message: str, hint: str | None = None) -> None:
    """The one red line of a failure (plus a hint line when one helps)."""
    from rich.markup import escape

    if sys.stderr.isatty():
        console().print(f"[bold red]error:[/bold red] {escape(message)}")
        if hint:
            console().print(f"[dim]hint: {escape(hint)}[/dim]")
    else:
        print(f"error: {message}", file=sys.stderr)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
