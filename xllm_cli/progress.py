"""Progress for long steps (download, prepare, tokenize, train, fuse, quantize), shared by every step.

Three calls, all main-process-only (other ranks get silent no-ops)::

    from xllm_cli.progress import progress, step, track

    step("tokenizing the training data")             # one line saying what starts now
    for sample in track(samples, "prepare", unit="samples"):  # or wrap an iterable
        ...
    with progress("tokenize", total=len(samples), unit="samples") as advance:
        for sample in samples:
            ...
            advance()                                 # one unit done
            advance(0, loss=0.42)                     # or: only update the fields shown after the counts

On a terminal (stderr is a tty, no ``--quiet``) this is a rich progress bar. Otherwise (CI logs, pipes, ``--quiet``)
it prints plain lines: one at each tenth of ``total`` (or every ``PLAIN_INTERVAL_S`` seconds when the total is
unknown) and a final ``done`` line with the elapsed time, so logs stay short and greppable.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from xllm_cli import console

PLAIN_INTERVAL_S = 30.0  # for unknown totals: at most one plain line per this many seconds
PLAIN_STEPS = 10  # for known totals: one plain line per tenth


class Advance(Protocol):
    def __call__(self, n: float = 1, **fields: Any) -> None: ...


def _format_fields(fields: dict[str, Any]) -> str:
    parts = []
    for name, value in fields.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{name}={shown}")
    return " ".join(parts)


def _format_count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def step(message: str) -> None:
    """Announce a stage of a step (``==> message`` in plain output), main process only."""
    if not console.is_main_process():
        return
    if console.fancy():
        from rich.markup import escape

        console.console().print(f"[bold cyan]==>[/bold cyan] {escape(message)}")
    else:
        console.console().print(f"==> {message}", markup=False, highlight=False)


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "it") -> Iterator[Advance]:
    """Show progress of ``description`` (``total`` units if known); yields ``advance(n=1, **fields)``."""
    if not console.is_main_process():
        yield _ignore
    elif console.fancy():
        with _rich_progress(description, total, unit) as advance:
            yield advance
    else:
        with _plain_progress(description, total, unit) as advance:
            yield advance


def _ignore(n: float = 1, **fields: Any) -> None:
    return None


_live: dict[str, Any] = {"bar": None}  # the one rich Progress on screen; nested progress() calls add rows to it


def _new_bar() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[extra]}"),
        console=console.console(),
    )


@contextmanager
def _rich_progress(description: str, total: float | None, unit: str) -> Iterator[Advance]:
    from rich.markup import escape

    outermost = _live["bar"] is None
    if outermost:  # rich allows one live display at a time: an inner step (e.g. tokenize in train) adds a row
        _live["bar"] = _new_bar()
        _live["bar"].start()
    bar = _live["bar"]
    task = bar.add_task(escape(description), total=total, unit=unit, extra="")
    shown: dict[str, Any] = {}

    def advance(n: float = 1, **fields: Any) -> None:
        shown.update(fields)
        bar.update(task, advance=n, extra=_format_fields(shown))

    try:
        yield advance
    finally:
        if outermost:
            bar.stop()
            _live["bar"] = None
        else:
            bar.remove_task(task)  # a finished inner step leaves the screen to its parent


@contextmanager
def _plain_progress(description: str, total: float | None, unit: str) -> Iterator[Advance]:
    def emit(text: str) -> None:
        console.console().print(text, markup=False, highlight=False)

    start = time.monotonic()
    state: dict[str, Any] = {"done": 0.0, "fields": {}, "next_step": 1, "last_line": start}

    def line(prefix: str) -> str:
        count = _format_count(state["done"])
        if total:
            count = f"{count}/{_format_count(total)} {unit} ({100 * state['done'] / total:.0f}%)"
        else:
            count = f"{count} {unit}"
        extra = _format_fields(state["fields"])
        return f"{prefix}{description}: {count}" + (f" {extra}" if extra else "")

    def advance(n: float = 1, **fields: Any) -> None:
        state["done"] += n
        state["fields"].update(fields)
        now = time.monotonic()
        if total:
            reached = int(PLAIN_STEPS * state["done"] / total)
            if reached < state["next_step"] or state["done"] >= total:
                return  # the final line comes from the exit below
            state["next_step"] = reached + 1
        elif now - state["last_line"] < PLAIN_INTERVAL_S:
            return
        state["last_line"] = now
        emit(line(""))

    emit(f"{description}: started" + (f" ({_format_count(total)} {unit})" if total else ""))
    yield advance
    emit(line("") + f" done in {time.monotonic() - start:.1f}s")


def track(items: Iterable[Any], description: str, total: float | None = None, unit: str = "it") -> Iterator[Any]:
    """Iterate ``items`` with progress shown; ``total`` defaults to ``len(items)`` when it has one."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with progress(description, total=total, unit=unit) as advance:
        for item in items:
            yield item
            advance()
