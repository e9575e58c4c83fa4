"""What the user sees: one rich console on stderr for messages, plain lines when not on a terminal or --quiet."""

from __future__ import annotations

import logging
import os
import sys
import warnings
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


def info(message: str, every_process: bool = False) -> None:
    """A progress or result line, from the main process only (or from any, for work not every process does),
    silenced by --quiet."""
    if _state["quiet"] or not (every_process or is_main_process()):
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


# Library output a user cannot act on, hidden by the CLI unless --verbose. Logger name -> start of the message.
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
    """Hide library deprecation warnings and the known log lines above (the CLI calls this unless --verbose)."""
    for category in DEPRECATIONS:
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)
    for name, prefix in NOISY_LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropMessages(prefix))
