"""The terminal side of the library's output: colours and live progress bars on a terminal, plain lines elsewhere,
the one red line of a failure, and the library noise hidden unless --verbose.

``install`` is the one set-up function the command line (and ``cli_run_train``) calls before any work; it changes
warning and logging filters, nothing else does.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from xllm_cli import console as library

if TYPE_CHECKING:
    from xllm_cli.cli.errors import Failure

# Library output a user cannot act on, hidden unless --verbose. Logger name -> start of the message.
NOISY_LOG_MESSAGES = {
    "torchao": "Failed to load ",  # optional CUDA kernels (mxfp8, cutlass) absent from CPU or other-arch builds
    "torch.utils._pytree": "<enum ",  # torch telling torchao (not the user) a registration is deprecated
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward",  # optional `kernels` package missing
    "DeepSpeed": "Setting accelerator to CPU",  # a CPU machine has no GPU: not news to its user
}
# Deprecation notices raised inside these libraries are addressed to their developers (and to ours), not to users.
LIBRARY_MODULES = (
    r"(torch|torchao|transformers|peft|accelerate|datasets|deepspeed|bitsandbytes|gptqmodel|optimum|wandb)(\..*)?"
)
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def filter_library_noise() -> None:
    """Hide library deprecation warnings and the known log lines above."""
    for category in DEPRECATIONS:
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)
    for name, prefix in NOISY_LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropMessages(prefix))


class TerminalOutput(library.PlainOutput):
    """rich on a terminal (colour, one live display shared by nested progress), plain lines otherwise."""

    def __init__(self) -> None:
        self._console: Any = None
        self._bar: Any = None  # the one rich Progress on screen; nested progress() calls add rows to it

    @property
    def live(self) -> bool:  # type: ignore[override]
        return sys.stderr.isatty()

    def rich_console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._console

    def line(self, kind: str, message: str) -> None:
        if not self.live:
            super().line(kind, message)
            return
        from rich.markup import escape

        style = {"warn": "[yellow]warning:[/yellow] ", "step": "[bold cyan]==>[/bold cyan] "}.get(kind, "")
        self.rich_console().print(escape(library.rank_prefix()) + style + escape(message))

    @contextmanager
    def progress(self, description: str, total: float | None, unit: str) -> Iterator[library.Advance]:
        if not self.live:
            with super().progress(description, total, unit) as advance:
                yield advance
            return
        from rich.markup import escape

        outermost = self._bar is None
        if outermost:  # rich allows one live display at a time: an inner step (e.g. tokenize in train) adds a row
            self._bar = self._new_bar()
            self._bar.start()
        bar = self._bar
        task = bar.add_task(escape(description), total=total, unit=unit, extra="")
        shown: dict[str, Any] = {}

        def advance(n: float = 1, **fields: Any) -> None:
            shown.update(fields)
            bar.update(task, advance=n, extra=library.format_fields(shown))

        try:
            yield advance
        finally:
            if outermost:
                bar.stop()
                self._bar = None
            else:
                bar.remove_task(task)  # a finished inner step leaves the screen to its parent

    def _new_bar(self) -> Any:
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
            console=self.rich_console(),
        )


_terminal = TerminalOutput()


def install(verbose: bool = False) -> None:
    """Route the library's output to the terminal and, unless ``verbose``, hide library noise."""
    library.use(_terminal)
    library.configure(verbose=verbose)
    if not verbose:
        filter_library_noise()


def configure(verbose: bool = False, quiet: bool = False) -> None:
    library.configure(verbose=verbose, quiet=quiet)


def error(message: str, hint: str | None = None) -> None:
    """The one red line of a failure (plus a hint line when one helps), ``[rank N]`` first on a rank other than 0."""
    rank = library.rank_prefix()
    if sys.stderr.isatty():
        from rich.markup import escape

        _terminal.rich_console().print(f"{escape(rank)}[bold red]error:[/bold red] {escape(message)}")
        if hint:
            _terminal.rich_console().print(f"[dim]{escape(rank)}hint: {escape(hint)}[/dim]")
    else:
        print(f"{rank}error: {message}", file=sys.stderr)
        if hint:
            print(f"{rank}hint: {hint}", file=sys.stderr)


def printed_here(failure: Failure) -> bool:
    """Whether this process prints ``failure``: once for the processes that meet it alike.

    Global rank 0 prints whatever it meets. A failure every process meets ("run": the command line, the settings, a
    stop the processes agreed on) is left to it; one that comes from files ("node") is printed by each node's first
    process, since other nodes may have other disks, except before the processes connect, when a config error comes
    from the settings alone; any other failure is printed by each process that meets it.
    """
    from xllm_cli.training.distributed import processes_connected

    if library.is_main_process():
        return True
    if failure.shared_by == "run":
        return False
    if failure.shared_by == "node":
        return library.is_local_main_process() and processes_connected()
    return True


def report(failure: Failure, error_raised: BaseException) -> int:
    """Print ``failure`` (the traceback first under --verbose) where it is news, and return its exit code."""
    if failure.message is None and failure.output is None:
        return failure.exit_code  # nothing to print (a decided exit, e.g. after a TAB completion): ask nobody
    if not printed_here(failure):
        return failure.exit_code
    if failure.traceback and library.verbose():
        import traceback

        traceback.print_exception(error_raised)
    if failure.output is not None:
        print(failure.output)
    if failure.message is not None:
        error(failure.message, hint=failure.hint)
    return failure.exit_code
