"""Fast start: help, --show-config, validation errors, plugin and cache listings and completion import nothing heavy.

Each case runs ``xllm_cli.cli.app.main`` in a fresh interpreter that reports, at exit, which heavy modules got imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "datasets", "deepspeed", "bitsandbytes", "wandb", "accelerate", "gptqmodel")
# Runs in the subprocess: atexit hooks run after main()'s sys.exit, so this sees everything the command imported.
PROBE = f"""
import atexit, json, os, sys
def report():
    heavy = {HEAVY!r}
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in heavy or name == "xllm_cli.versions")
    with open(os.environ["HEAVY_IMPORTS_REPORT"], "w") as out:
        json.dump(loaded, out)
atexit.register(report)
from xllm_cli.cli.app import main
main(sys.argv[1:])
"""


def steps() -> list[str]:
    import typer

    from xllm_cli.cli.app import app

    return sorted(typer.main.get_command(app).commands)


def heavy_imports(tmp_path, *args: str, env: dict | None = None) -> tuple[list[str], subprocess.CompletedProcess]:
    report = tmp_path / "heavy.json"
    full_env = {**os.environ, **(env or {}), "HEAVY_IMPORTS_REPORT": str(report)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=full_env, capture_output=True, text=True, timeout=60
    )
    return json.loads(report.read_text()), done


CASES = {
    "--help": (["--help"], 0),
    "no arguments": ([], 2),
    "train --show-config": (["train", "--show-config"], 0),
    "quantize --show-config": (["quantize", "--show-config", "--gptq-bits", "8"], 0),
    "fuse --show-config": (["fuse", "--show-config", "--lora-model-local-path", "adapter"], 0),
    "validation error": (["train", "--load-in-4bit", "--load-in-8bit"], 2),
    "unknown flag": (["train", "--no-such-flag", "1"], 2),
    "original spelling": (["train", "--deepspeed_stage", "2", "--apply_lora", "True", "--show-config"], 0),
    "plugin listing": (["plugins"], 0),
    "cache listing": (["cache"], 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cheap_paths_import_nothing_heavy(tmp_path, case):
    args, exit_code = CASES[case]
    loaded, done = heavy_imports(tmp_path, *args)
    assert done.returncode == exit_code, done.stderr
    assert loaded == [], f"xllm {' '.join(args)} imported {loaded}"


@pytest.mark.parametrize("step", steps())
def test_step_help_imports_nothing_heavy(tmp_path, step):
    loaded, done = heavy_imports(tmp_path, step, "--help")
    assert done.returncode == 0, done.stderr
    assert step in done.stdout
    assert loaded == [], f"xllm {step} --help imported {loaded}"


def test_completion_request_imports_nothing_heavy(tmp_path):
    env = {"_XLLM_COMPLETE": "complete_bash", "COMP_WORDS": "xllm train --optim adam", "COMP_CWORD": "3"}
    loaded, done = heavy_imports(tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "adamw_torch" in done.stdout.split()
    assert loaded == []


def test_the_probe_sees_heavy_imports(tmp_path):
    # The guard against a probe that could never fail: --version does import torch (for the devices).
    loaded, done = heavy_imports(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert "torch" in loaded and "xllm_cli.versions" in loaded
