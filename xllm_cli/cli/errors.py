"""The one table that turns what a command raised into the line a user reads and the exit code.

Exit codes: 2 for usage and settings (the user must change the input), 1 for a failure while working, 130/143 for
Ctrl-C/SIGTERM. Every failure is one line (and a hint line where one helps); ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xllm_cli import console
from xllm_cli.cleanup import Terminated
from xllm_cli.cli.click import Abort, Exit, NoArgsIsHelpError, NoSuchOption, UsageError
from xllm_cli.errors import XllmError, did_you_mean, first_line


@dataclass(frozen=True)
class Failure:
    message: str | None  # None: nothing to add (the command already printed what it had to say)
    exit_code: int
    hint: str | None = None
    traceback: bool = False  # worth a traceback under --verbose
    output: str | None = None  # printed on stdout instead of an error line (the help of a bare `xllm`)
    shared_by: str = "process"  # which processes of a run meet it alike: "process", "node" or "run" (XllmError)


def _lost_a_peer(error: BaseException) -> bool:
    """A collective that failed because another process is gone (torch's DistError family, or gloo's closed pair)."""
    text = str(error)
    peer_gone = "Connection closed by peer" in text or "Connection reset by peer" in text
    return type(error).__name__ in ("DistBackendError", "DistStoreError", "DistNetworkError") or (
        isinstance(error, RuntimeError) and peer_gone
    )


def _first_sentence(error: BaseException) -> str:
    """The first sentence of torch's message, without the source location it starts with."""
    line = re.sub(r"^\[[^\]]*\]\s*", "", first_line(error))
    return line.split(". ")[0].rstrip(".")


def _usage_failure(error: UsageError) -> Failure:
    step = error.ctx.command_path if error.ctx is not None else "xllm"
    hint = f"see '{step} --help'"
    if isinstance(error, NoSuchOption) and error.ctx is not None:
        other = _other_steps_option(error.option_name, error.ctx.command.name)
        if other:
            return Failure(other, 2, hint=hint, shared_by="run")
        options = [opt for param in error.ctx.command.params for opt in (*param.opts, *param.secondary_opts)]
        message = f"no such option {error.option_name}{did_you_mean(error.option_name, options)}"
        return Failure(message, 2, hint=hint, shared_by="run")
    # The command line is the same on every process of a run.
    return Failure(error.format_message(), 2, hint=hint, shared_by="run")


def _other_steps_option(option: str, step: str | None) -> str | None:
    """'--deepspeed-stage is a setting of xllm train, not of xllm download' for a flag another step takes."""
    from xllm_cli.settings.index import FIELD_SECTIONS, steps_reading  # only when a flag is wrong

    name = option.removeprefix("--").removeprefix("no-").replace("-", "_")
    if name not in FIELD_SECTIONS or step is None:
        return None
    steps = [s for s in steps_reading(name) if s != step]
    if not steps:
        return None
    takers = " and ".join(f"xllm {s}" for s in steps)
    return f"{option} is a setting of {takers}, not of xllm {step}"


def describe(error: BaseException) -> Failure:
    """The user-facing failure for ``error``; anything unknown is one line naming its type, traceback on --verbose."""
    if isinstance(error, Exit):
        return Failure(None, error.exit_code)
    if isinstance(error, NoArgsIsHelpError):  # bare `xllm`: the help is the answer, without an error line
        return Failure(None, 2, output=error.format_message())
    if isinstance(error, UsageError):
        return _usage_failure(error)
    if isinstance(error, Terminated):  # SIGTERM during work that removed its partial files first (cleanup.py)
        return Failure("terminated by SIGTERM", error.code)
    if isinstance(error, SystemExit):  # someone decided the exit code already (a plugin, a library)
        return Failure(None, error.code if isinstance(error.code, int) else 1)
    if isinstance(error, (Abort, KeyboardInterrupt)):
        return Failure("interrupted" if isinstance(error, KeyboardInterrupt) else "aborted", 130)
    if isinstance(error, XllmError):
        return Failure(str(error), error.exit_code, hint=error.hint, traceback=True, shared_by=error.shared_by)
    if _lost_a_peer(error):
        return Failure(
            f"lost contact with another process of the run ({_first_sentence(error)}): it failed or was stopped, and "
            f"its own error (with its [rank N] prefix) or the launcher's summary says why",
            1,
            traceback=True,
        )
    if type(error).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
        return Failure(
            f"out of memory: {first_line(error)}",
            1,
            hint="check the estimate: xllm train --estimate with the same flags",
            traceback=True,
        )
    hint = None if console.verbose() else "run again with --verbose for the traceback"
    return Failure(f"{type(error).__name__}: {first_line(error)}", 1, hint=hint, traceback=True)
