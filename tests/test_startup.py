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
# Runs in the subprocess: atexit hooks run after main()'s sys.exit, so this sees everything the command imported. A
# watched name matches the module itself and its submodules.
PROBE = """
import atexit, json, os, sys
def report():
    watched = os.environ["WATCHED_MODULES"].split(",")
    loaded = sorted(name for name in sys.modules if any(name == w or name.startswith(w + ".") for w in watched))
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


def heavy_imports(
    tmp_path, *args: str, env: dict | None = None, watched: tuple[str, ...] = (*HEAVY, "xllm_cli.versions")
) -> tuple[list[str], subprocess.CompletedProcess]:
    """(the ``watched`` modules ``xllm *args`` imported, the finished process)."""
    report = tmp_path / "heavy.json"
    full_env = {**os.environ, **(env or {}), "HEAVY_IMPORTS_REPORT": str(report), "WATCHED_MODULES": ",".join(watched)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=full_env, capture_output=True, text=True, timeout=600
    )
    assert report.is_file(), done.stderr
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
    # Not even pydantic: the help reads the settings catalog (settings/catalog.json), not the settings model.
    loaded, done = heavy_imports(tmp_path, step, "--help", watched=(*HEAVY, "pydantic"))
    assert done.returncode == 0, done.stderr
    assert step in done.stdout
    assert loaded == [], f"xllm {step} --help imported {loaded}"


def test_completion_request_imports_nothing_heavy(tmp_path):
    env = {"_XLLM_COMPLETE": "complete_bash", "COMP_WORDS": "xllm train --optim adam", "COMP_CWORD": "3"}
    loaded, done = heavy_imports(tmp_path, env=env, watched=(*HEAVY, "pydantic"))
    assert done.returncode == 0, done.stderr
    assert "adamw_torch" in done.stdout.split()
    assert loaded == []


def test_the_catalog_of_fields_is_the_settings_model():
    """--help and TAB read settings/catalog.json instead of building the settings model; it must say the same."""
    from xllm_cli.settings.catalog import CATALOG_FILE
    from xllm_cli.settings.reference import catalog_text

    assert CATALOG_FILE.read_text() == catalog_text(), "stale: run python -m xllm_cli.settings.reference"


def test_the_probe_sees_heavy_imports(tmp_path):
    # The guard against a probe that could never fail: --version does import torch (for the devices).
    loaded, done = heavy_imports(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert "torch" in loaded and "xllm_cli.versions" in loaded


# Imported only when an option asks for them: W&B (--report-to-wandb), GPTQ (--from-gptq, quantize), Liger
# (--use-liger-kernel), flash-attn (--attn-implementation flash_attention_2), matplotlib (never: the loss curve is
# drawn by xllm), and quantize's modules (they bring GPTQ). xllm's own light modules that train reaches by design
# (fuse for --fuse-after-training, data preparation for an unprepared file) are imported at the top of the files that
# use them, as every library module is. (datasets, bitsandbytes and deepspeed are not on the list: the Trainer, peft
# and accelerate import them whenever they are installed, in a plain transformers script as well.)
OPTIONAL_FOR_A_LORA_RUN = (
    "wandb",
    "gptqmodel",
    "optimum",
    "matplotlib",
    "liger_kernel",
    "flash_attn",
    "xllm_cli.quantize",
    "xllm_cli.gptq_support",
)


@pytest.mark.slow
def test_a_plain_lora_run_imports_no_optional_library(tmp_path, tiny_model):
    from xllm_cli.data.demo import demo_records

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in demo_records()[:16]))
    output = tmp_path / "adapter"
    args = ["train", "--model-name-or-path", str(tiny_model), "--dataset-key", "general"]
    args += ["--train-local-path-to-data", str(data), "--apply-lora", "--max-steps", "2", "--warmup-steps", "0"]
    args += ["--logging-steps", "1", "--output-dir", str(output)]
    watched = (*OPTIONAL_FOR_A_LORA_RUN, "torch", "peft")
    loaded, done = heavy_imports(tmp_path, *args, watched=watched)
    assert done.returncode == 0, done.stderr
    assert (output / "adapter_model.safetensors").is_file() and (output / "loss_curve.svg").is_file()
    assert "torch" in loaded and "peft" in loaded  # the probe sees what the run did import
    optional = [w for w in OPTIONAL_FOR_A_LORA_RUN if any(n == w or n.startswith(w + ".") for n in loaded)]
    assert optional == [], f"a plain LoRA run imported {optional}"
