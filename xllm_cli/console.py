"""What the library tells its user: progress lines, warnings and progress, from the main process only.

Under several processes a message about the whole run comes from global rank 0 alone; a message only one process
can give (it tokenized, it received a signal, it failed) comes from that process, prefixed ``[rank N]`` on any rank but
0 (``rank_prefix``).

The library writes through an ``Output``: plain lines on stderr by default (a script using the Python API, a CI log),
or whatever the command line installs (``cli/console.py``: colours and live progress bars on a terminal). Nothing here
imports a terminal library.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

PLAIN_INTERVAL_S = 30.0  # plain progress with an unknown total: at most one line per this many seconds
PLAIN_STEPS = 10  # plain progress with a known total: one line per tenth


class Advance(Protocol):
    def __call__(self, n: float = 1, **fields: Any) -> None: ...


class Output(Protocol):
    """Where messages go. ``kind`` is ``info``, ``warn`` or ``step`` (a stage of a step starts)."""

    live: bool  # progress is drawn live (a terminal); library code may then leave other libraries' bars on

    def line(self, kind: str, message: str) -> None: ...

    def progress(self, description: str, total: float | None, unit: str) -> AbstractContextManager[Advance]: ...


_state: dict[str, Any] = {"verbose": False, "quiet": False}


def configure(verbose: bool = False, quiet: bool = False) -> None:
    _state["verbose"] = verbose
    _state["quiet"] = quiet


def verbose() -> bool:
    return _state["verbose"]


def quiet() -> bool:
    return _state["quiet"]


def is_main_process() -> bool:
    """Global rank 0 (or a single process): the one that prints, writes shared files and pushes.

    Launchers (torchrun, deepspeed, accelerate) set ``RANK`` before the process starts, so this is right before and
    after torch.distributed is initialised."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("0", "")


def is_local_main_process() -> bool:
    """Rank 0 on this node: the one that prepares node-local files (a cache on a disk other nodes do not see)."""
    return os.environ.get("LOCAL_RANK", "0") in ("0", "")


def rank_prefix() -> str:
    """``[rank N] `` before a line from a process other than global rank 0 (whose lines stand for the whole run)."""
    return "" if is_main_process() else f"[rank {os.environ.get('RANK', os.environ.get('LOCAL_RANK'))}] "


def format_fields(fields: dict[str, Any]) -> str:
    return " ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}" for name, value in fields.items()
    )


def format_count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class PlainOutput:
    """Plain lines on stderr: one per message, progress at each tenth of its total and once when done."""

    live = False

    def line(self, kind: str, message: str) -> None:
        prefix = {"warn": "warning: ", "step": "==> "}.get(kind, "")
        print(rank_prefix() + prefix + message, file=sys.stderr, flush=True)

    @contextmanager
    def progress(self, description: str, total: float | None, unit: str) -> Iterator[Advance]:
        start = time.monotonic()
        state: dict[str, Any] = {"done": 0.0, "fields": {}, "next_step": 1, "last_line": start}

        def text() -> str:
            count = format_count(state["done"])
            if total:
                count = f"{count}/{format_count(total)} {unit} ({100 * state['done'] / total:.0f}%)"
            else:
                count = f"{count} {unit}"
            extra = format_fields(state["fields"])
            return f"{description}: {count}" + (f" {extra}" if extra else "")

        def advance(n: float = 1, **fields: Any) -> None:
            state["done"] += n
            state["fields"].update(fields)
            now = time.monotonic()
            if total:
                reached = int(PLAIN_STEPS * state["done"] / total)
                if reached < state["next_step"] or state["done"] >= total:
                    return  # the final line comes after the work
                state["next_step"] = reached + 1
            elif now - state["last_line"] < PLAIN_INTERVAL_S:
                return
            state["last_line"] = now
            self.line("info", text())

        self.line("info", f"{description}: started" + (f" ({format_count(total)} {unit})" if total else ""))
        yield advance  # after a failure nothing more is printed: the work is not done
        self.line("info", text() + f" done in {time.monotonic() - start:.1f}s")


_output: list[Output] = [PlainOutput()]


def use(output: Output) -> None:
    """Send every message from now on to ``output`` (the command line installs its terminal output)."""
    _output[0] = output


def live() -> bool:
    """Progress is drawn live on a terminal (and not --quiet)."""
    return _output[0].live and not _state["quiet"]


def info(message: str, every_process: bool = False) -> None:
    """A progress or result line, from the main process only (or from any, for work not every process does),
    silenced by --quiet."""
    if not _state["quiet"] and (every_process or is_main_process()):
        _output[0].line("info", message)


def warn(message: str, every_process: bool = False) -> None:
    """A warning, from the main process only (or from any, for what only that process knows, e.g. a signal it got)."""
    if every_process or is_main_process():
        _output[0].line("warn", message)


def step(message: str) -> None:
    """Announce a stage of a step (``==> message`` in plain output), main process only."""
    if is_main_process():
        _output[0].line("step", message)


def _ignore(n: float = 1, **fields: Any) -> None:
    return None


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "it") -> Iterator[Advance]:
    """Show progress of ``description`` (``total`` units if known); yields ``advance(n=1, **fields)``.

    On a terminal a live bar; otherwise (CI logs, pipes, ``--quiet``) a plain line at each tenth of ``total`` (or every
    ``PLAIN_INTERVAL_S`` seconds when the total is unknown) and a final ``done`` line with the elapsed time. Other
    ranks get a silent no-op."""
    if not is_main_process():
        yield _ignore
        return
    output = _output[0] if not _state["quiet"] else PlainOutput()
    with output.progress(description, total, unit) as advance:
        yield advance
