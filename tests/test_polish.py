"""Command-line polish: exit codes, one red error line, --verbose tracebacks, --version, progress output on and off a
terminal, and library noise filtered."""

from __future__ import annotations

import logging
import os
import pty
import subprocess
import sys
import types
import warnings

import pytest

from tests.conftest import XLLM, run_xllm
from xllm_cli import console
from xllm_cli.cli import console as terminal
from xllm_cli.cli.app import main
from xllm_cli.errors import DataError


def xllm(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code, out, err


def in_terminal(command: list[str], env: dict | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run ``command`` with stdout and stderr on a pseudo-terminal, as in a user's terminal; (exit code, output)."""
    leader, follower = pty.openpty()
    full_env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", **(env or {})}
    full_env.pop("NO_COLOR", None)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=full_env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")


# --- errors and exit codes ------------------------------------------------------------------------------------------


def test_config_error_is_one_line_and_exit_2():
    done = run_xllm("train", "--load-in-4bit", "--load-in-8bit")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "--load-in-4bit" in lines[0] and "--load-in-8bit" in lines[0]
    assert len(lines) <= 2 and "Traceback" not in done.stderr


def test_usage_error_exit_2_with_a_hint():
    done = run_xllm("train", "--learning-rate", "fast")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "--learning-rate" in done.stderr
    assert "hint: see 'xllm train --help'" in done.stderr


def test_bare_xllm_shows_help_without_an_empty_error_line():
    done = run_xllm()
    assert done.returncode == 2
    assert "download" in done.stdout and "quantize" in done.stdout
    assert "error:" not in done.stderr


def test_error_line_is_red_on_a_terminal():
    code, output = in_terminal([XLLM, "train", "--load-in-4bit", "--load-in-8bit"])
    assert code == 2
    error_line = next(line for line in output.splitlines() if "error:" in line)
    assert "\x1b[1;31m" in error_line or "\x1b[31m" in error_line, repr(error_line)


@pytest.fixture
def failing_fuse(monkeypatch):
    """Replace the fuse library function (imported lazily by the command) by one that fails as told."""
    failure: dict[str, BaseException] = {}

    def fuse(config):
        raise failure["error"]

    monkeypatch.setitem(sys.modules, "xllm_cli.fuse", types.SimpleNamespace(fuse=fuse))
    return failure


def test_runtime_failure_is_one_line_exit_1_and_verbose_shows_the_traceback(capsys, failing_fuse):
    failing_fuse["error"] = RuntimeError("disk full\nsecond line of detail")
    code, _, err = xllm(capsys, "fuse", "--lora-model-local-path", "adapter")
    assert code == 1
    assert err.splitlines() == ["error: RuntimeError: disk full", "hint: run again with --verbose for the traceback"]

    code, _, err = xllm(capsys, "fuse", "--lora-model-local-path", "adapter", "--verbose")
    assert code == 1
    assert "Traceback (most recent call last)" in err and 'raise failure["error"]' in err
    assert err.strip().splitlines()[-1] == "error: RuntimeError: disk full"


def test_data_error_keeps_its_hint_and_exit_1(capsys, failing_fuse):
    failing_fuse["error"] = DataError("adapter.json:3: not valid JSON", hint="re-save the adapter")
    code, _, err = xllm(capsys, "fuse", "--lora-model-local-path", "adapter")
    assert (code, err.splitlines()) == (1, ["error: adapter.json:3: not valid JSON", "hint: re-save the adapter"])


def test_ctrl_c_exits_130_without_a_traceback(capsys, failing_fuse):
    failing_fuse["error"] = KeyboardInterrupt()  # Typer turns it into exit 130; the shell has already echoed ^C
    code, _, err = xllm(capsys, "fuse", "--lora-model-local-path", "adapter")
    assert code == 130 and "Traceback" not in err


# --- --version ------------------------------------------------------------------------------------------------------


def test_version_lists_libraries_and_devices():
    done = run_xllm("--version")
    assert done.returncode == 0, done.stderr
    from xllm_cli import __version__

    lines = done.stdout.splitlines()
    assert lines[0] == f"xllm {__version__}"
    listed = {line.split()[0]: line for line in lines[1:]}
    for library in ("torch", "transformers", "peft", "deepspeed", "bitsandbytes", "gptqmodel"):
        assert library in listed
    assert "GPTQ backend" in listed["gptqmodel"]
    assert listed["devices"].split(None, 1)[1].startswith(("cpu only", "cuda x", "mps"))


# --- progress -------------------------------------------------------------------------------------------------------

PROGRESS_SCRIPT = """
import sys
from xllm_cli import console
from xllm_cli.cli import console as terminal
if "--library-only" not in sys.argv:
    terminal.install()  # what the command line does before any work
console.configure(quiet="--quiet" in sys.argv)
console.step("tokenizing")
with console.progress("tokenize", total=20, unit="samples") as advance:
    for i in range(20):
        advance(loss=1.0 / (i + 1))
print("finished", file=sys.stderr)
"""


def test_progress_is_plain_lines_when_not_a_terminal():
    done = subprocess.run([sys.executable, "-c", PROGRESS_SCRIPT], capture_output=True, text=True)
    lines = done.stderr.splitlines()
    assert lines[:2] == ["==> tokenizing", "tokenize: started (20 samples)"]
    assert "tokenize: 10/20 samples (50%) loss=0.1" in lines
    assert lines[-2].startswith("tokenize: 20/20 samples (100%) loss=0.05 done in ")
    assert len(lines) == 2 + 10 + 1  # a line per tenth, not per step: CI logs stay short
    assert "\x1b[" not in done.stderr


def test_progress_is_a_rich_bar_on_a_terminal_and_plain_under_quiet():
    code, output = in_terminal([sys.executable, "-c", PROGRESS_SCRIPT])
    assert code == 0
    assert "━" in output and "20/20" in output and "\x1b[" in output
    assert "tokenize: started" not in output

    code, output = in_terminal([sys.executable, "-c", PROGRESS_SCRIPT, "--quiet"])
    assert code == 0
    assert "tokenize: started (20 samples)" in output and "━" not in output


def test_the_library_alone_writes_plain_lines_even_on_a_terminal():
    """Without the command line's terminal output installed (a script using the library), no rich is involved."""
    code, output = in_terminal([sys.executable, "-c", PROGRESS_SCRIPT, "--library-only"])
    assert code == 0
    assert "tokenize: started (20 samples)" in output and "━" not in output and "\x1b[" not in output


NESTED_SCRIPT = """
from xllm_cli import console
from xllm_cli.cli import console as terminal
from xllm_cli.console import progress
terminal.install()
with progress("train", total=2, unit="steps") as advance:
    for _ in range(2):
        with progress("tokenize [batch]", total=3) as inner:  # markup-like text is shown as is
            for _ in range(3):
                inner()
        console.info("between steps")
        advance(loss=0.5)
print("finished")
"""


def test_nested_progress_shares_one_live_display_on_a_terminal():
    # rich allows a single live display; a second Progress would raise LiveError only on a terminal
    code, output = in_terminal([sys.executable, "-c", NESTED_SCRIPT])
    assert code == 0, output
    assert "tokenize [batch]" in output and "between steps" in output and "finished" in output
    assert "2/2" in output and "loss=0.5" in output


def test_progress_is_silent_on_other_ranks():
    done = subprocess.run(
        [sys.executable, "-c", PROGRESS_SCRIPT], capture_output=True, text=True, env={**os.environ, "RANK": "1"}
    )
    assert done.stderr.splitlines() == ["finished"]


def test_progress_line_is_not_claimed_done_after_a_failure(capsys):
    from xllm_cli.console import progress

    console.configure()
    with pytest.raises(ValueError), progress("fuse", total=4, unit="shards") as advance:
        advance()
        raise ValueError("shard 2 is corrupt")
    assert "done" not in capsys.readouterr().err


# --- library noise --------------------------------------------------------------------------------------------------


@pytest.fixture
def noise_filters():
    """Apply the CLI's filters for one test and take the logging ones off again afterwards."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        terminal.filter_library_noise()
        yield caught
    for name in terminal.NOISY_LOG_MESSAGES:
        logger = logging.getLogger(name)
        for log_filter in [f for f in logger.filters if isinstance(f, terminal._DropMessages)]:
            logger.removeFilter(log_filter)


def test_library_deprecations_are_filtered_but_ours_are_not(noise_filters):
    warnings.warn_explicit("old internals", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
    warnings.warn_explicit("old api", DeprecationWarning, "ops.py", 1, module="bitsandbytes.functional")
    warnings.warn_explicit("a real problem", UserWarning, "trainer.py", 1, module="transformers.trainer")
    warnings.warn_explicit("environment: XLLM_FOO ignored", UserWarning, "sources.py", 1, module="xllm_cli.sources")
    assert [str(w.message) for w in noise_filters] == ["a real problem", "environment: XLLM_FOO ignored"]


def test_known_library_log_lines_are_dropped(noise_filters):
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("DeepSpeed")
    logger.addHandler(handler)
    try:
        logger.warning("Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.")
        logger.warning("ZeRO stage 3 initialised")
    finally:
        logger.removeHandler(handler)
    assert seen == ["ZeRO stage 3 initialised"]
