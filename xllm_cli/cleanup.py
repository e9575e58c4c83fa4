"""Temporary files that never outlive the work that made them.

- ``sigterm_unwinds``: SIGTERM (a scheduler's stop, ``kill``, torchrun stopping its workers) raises ``Terminated``
  instead of ending the process on the spot, so ``try``/``finally`` blocks remove what they made, as they do on
  Ctrl-C (``KeyboardInterrupt``).
- ``built_atomically``: a folder written under a partial name, ``<name>.tmp-<host>-<pid>``, renamed into place only
  when complete and removed on any failure. A process killed outright (SIGKILL, out of memory, power) cannot clean
  up, so the next writer clears partial folders whose process no longer runs (``clear_stale``). The host is part of
  the name because a shared filesystem is seen by several machines: a process id means something on its own machine
  only, so partial folders of other machines are never judged.

Nothing heavy is imported here: ``xllm cache`` uses it on the fast command-line path.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = re.compile(r"^(?P<final>.+)\.tmp-(?P<host>[A-Za-z0-9_.-]+)-(?P<pid>\d+)$")


class Terminated(SystemExit):
    """SIGTERM arrived during work that cleans up after itself. A ``SystemExit`` (not an ``Exception``, which the
    code catches to turn into messages) with the status a shell reports for a command ended by SIGTERM (143)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _raise_terminated(number: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` (the handler before it is restored after the block).

    Only where SIGTERM would otherwise kill the process at once (its default action): a handler someone installed
    (training's checkpoint-on-SIGTERM) is left alone. Python runs handlers in the main thread only, so elsewhere this
    is a plain block.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def this_host() -> str:
    """This machine's name as it appears in partial folder names (no character outside ``[A-Za-z0-9_.-]``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "localhost"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs. When in doubt, yes: a live process's files are kept."""
    if pid <= 0 or os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def partial_path(final: Path) -> Path:
    """Where this process writes ``final`` before renaming it into place."""
    return final.with_name(f"{final.name}.tmp-{this_host()}-{os.getpid()}")


def partial_owner(path: Path) -> tuple[str, int] | None:
    """(host, pid) of the process writing the partial folder ``path``; None for any other name."""
    match = PARTIAL.match(path.name)
    return (match["host"], int(match["pid"])) if match else None


def is_stale(path: Path) -> bool:
    """A partial folder of a process of this machine that no longer runs."""
    owner = partial_owner(path)
    return owner is not None and owner[0] == this_host() and not pid_alive(owner[1])


def clear_stale(folder: Path) -> list[Path]:
    """Remove the stale partial folders in ``folder``; returns them."""
    cleared = []
    for child in sorted(folder.iterdir()) if folder.is_dir() else ():
        if child.is_dir() and not child.is_symlink() and is_stale(child):
            shutil.rmtree(child, ignore_errors=True)
            cleared.append(child)
    return cleared


@contextmanager
def built_atomically(final: Path) -> Iterator[Path]:
    """Yield an empty partial folder for ``final``; it becomes ``final`` when the block succeeds and is removed
    whatever else happens (an error, Ctrl-C, SIGTERM). If ``final`` appeared meanwhile (another process wrote the
    same thing first), the copy made here is dropped and ``final`` is left as it is."""
    partial = partial_path(final)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with sigterm_unwinds():
            yield partial
        try:
            partial.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # nothing left to remove after the rename
