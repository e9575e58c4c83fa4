"""The two kinds of failure a user sees: a usage/config error (exit 2) and a runtime failure (exit 1)."""

from __future__ import annotations


class XllmError(Exception):
    """A failure with a one-line message meant for the user, and the exit code it maps to."""

    exit_code = 1
    # Which processes of a multi-process run meet the same failure, so that it is printed once for all of them:
    # "process" (only this one may: each failing process prints it), "node" (it comes from files, which every process
    # of a node sees alike: the node's first process prints it) or "run" (every process meets it, e.g. settings or a
    # decision the processes agreed on: global rank 0 prints it).
    shared_by = "process"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ConfigError(XllmError):
    """Bad settings, flags, files or combinations: the user must change the input (exit 2)."""

    exit_code = 2
    shared_by = "node"


class DataError(XllmError):
    """Bad data: a malformed file, a missing field, an empty dataset (exit 1: the command line was fine)."""


def closest(word: str, choices) -> str | None:
    import difflib

    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, choices) -> str:
    match = closest(word, choices)
    return f"; did you mean '{match}'?" if match else ""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty (``str(error)`` of a
    bare ``OSError()`` is empty: ``splitlines()[0]`` would raise)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
