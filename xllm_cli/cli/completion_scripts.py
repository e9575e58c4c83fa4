"""Writes (or checks) the ready-made shell completion scripts in ``completions/``.

``make completions`` runs ``python -m xllm_cli.cli.completion_scripts completions``; ``--check`` exits 1 when a file is
stale instead of writing it. The scripts come from the same Typer/click machinery as ``xllm --show-completion``: each
is a small shell function that asks ``xllm`` itself for candidates (``_XLLM_COMPLETE=complete_<shell> xllm ...``), so
new flags and plugin keys complete without regenerating anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG_NAME = "xllm"
COMPLETE_VAR = "_XLLM_COMPLETE"  # what Typer derives from the program name; main() must keep prog_name="xllm"
SHELLS = ("bash", "zsh", "fish")


def script(shell: str) -> str:
    """The completion script for ``shell``, exactly what ``xllm --show-completion <shell>`` prints, plus a newline."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETE_VAR, shell=shell) + "\n"


def script_path(folder: Path, shell: str) -> Path:
    return folder / f"{PROG_NAME}.{shell}"


def stale_scripts(folder: Path) -> list[Path]:
    """Scripts in ``folder`` that are missing or differ from what the app generates now."""
    stale = []
    for shell in SHELLS:
        path = script_path(folder, shell)
        if not path.is_file() or path.read_text() != script(shell):
            stale.append(path)
    return stale


def write_scripts(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for shell in SHELLS:
        path = script_path(folder, shell)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(script(shell))
        temporary.replace(path)  # never leave a half-written script behind
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xllm_cli.completion_scripts", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the scripts live (the repository's completions/)")
    parser.add_argument("--check", action="store_true", help="only report stale scripts (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_scripts(args.folder)
        for path in stale:
            print(f"stale: {path} (run `make completions`)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_scripts(args.folder):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
