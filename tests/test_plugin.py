"""The example plugin package (plugins/xllm-example-plugin), installed with pip like any third-party plugin: its
dataset through ``xllm download``, its setting from every source, and its collator against the collator contract."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_xllm
from xllm_cli.settings import XllmConfig

PLUGIN = REPO / "plugins" / "xllm-example-plugin"


@pytest.fixture(scope="module", autouse=True)
def example_plugin_installed() -> None:
    """``make install`` installs it; install it here too (editable, offline) when a bare environment lacks it."""
    try:
        importlib.metadata.distribution("xllm-example-plugin")
    except importlib.metadata.PackageNotFoundError:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN)]
        subprocess.run(command, check=True, capture_output=True)
        # The editable install's path hook is read at interpreter start: make this process see the package too.
        sys.path.append(str(PLUGIN / "src"))
        importlib.invalidate_caches()


def train_lines(folder) -> int:
    return len((folder / "train.jsonl").read_text().splitlines())


def download(*args: str, env: dict | None = None):
    return run_xllm("download", "--dataset-key", "counting", "--model-name-or-path", ".", *args, env=env)


def test_plugins_command_shows_the_plugin_keys_and_package():
    result = run_xllm("plugins")
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:2]) for line in result.stdout.splitlines() if line.startswith(" ")}
    assert ("counting", "xllm-example-plugin") in rows and ("example-lm", "xllm-example-plugin") in rows


def test_plugin_dataset_writes_its_samples_and_eval_split(tmp_path):
    result = download("--eval-local-path-to-data", "eval.jsonl")
    assert result.returncode == 0, result.stderr
    assert (train_lines(tmp_path), len((tmp_path / "eval.jsonl").read_text().splitlines())) == (200, 20)
    first = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"start", "stop"}


def test_plugin_setting_comes_from_flag_env_dotenv_and_config_file_in_that_order(tmp_path):
    (tmp_path / "settings.yaml").write_text("counting_samples: 4\n")
    assert download("--config", "settings.yaml").returncode == 0
    assert train_lines(tmp_path) == 4
    (tmp_path / ".env").write_text("XLLM_COUNTING_SAMPLES=5\n")
    assert download("--config", "settings.yaml").returncode == 0
    assert train_lines(tmp_path) == 5
    assert download("--config", "settings.yaml", env={"XLLM_COUNTING_SAMPLES": "6"}).returncode == 0
    assert train_lines(tmp_path) == 6
    result = download("--config", "settings.yaml", "--counting-samples", "7", env={"XLLM_COUNTING_SAMPLES": "6"})
    assert result.returncode == 0, result.stderr
    assert train_lines(tmp_path) == 7
    shown = download("--counting-samples", "7", "--show-config")
    row = next(line for line in shown.stdout.splitlines() if "counting_samples" in line)
    assert "Plugin counting" in row and "7" in row and "flag" in row


def test_a_plugin_selected_by_flag_shows_its_settings_in_help():
    shown = run_xllm("download", "--dataset-key", "counting", "--help")
    assert shown.returncode == 0, shown.stderr
    panel = shown.stdout.split("Plugin counting", 1)[1]
    assert "--counting-samples" in panel and "[default: 200]" in panel
    assert "Plugin counting" not in run_xllm("download", "--help").stdout  # no key, no plugin import


def test_plugin_setting_is_validated_like_a_builtin_one(tmp_path):
    invalid = download("--counting-samples", "0")
    assert invalid.returncode == 2 and "error: --counting-samples: Input should be greater than or equal to 1" in (
        invalid.stderr
    )
    misspelled = download("--counting-sample", "3")
    assert misspelled.returncode == 2 and "did you mean '--counting-samples'?" in misspelled.stderr
    assert not (tmp_path / "train.jsonl").exists()


def test_plugin_collator_meets_the_collator_contract(tiny_model):
    from transformers import AutoTokenizer

    from xllm_cli.registry import load

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    collator_cls, dataset_cls = load("collators", "example-lm"), load("datasets", "counting")
    config = XllmConfig(max_length=64)
    dataset = dataset_cls(config)
    samples = [dataset.get_sample({"start": 3, "stop": 5}), dataset.get_sample({"start": 10, "stop": 16})]
    samples.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    batch = collator_cls(tokenizer, config)(samples)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.dtype.is_floating_point is False and t.shape == batch["input_ids"].shape for t in batch.values())
    padding = batch["attention_mask"] == 0
    assert padding.any() and (batch["labels"][padding] == -100).all()
    assert (batch["labels"][~padding] == batch["input_ids"][~padding]).all()
    first_length = int(batch["attention_mask"][0].sum())
    assert batch["input_ids"][0, first_length - 1] == tokenizer.eos_token_id
    assert (
        tokenizer.decode(batch["input_ids"][0, :first_length], skip_special_tokens=True) == "Count from 3 to 5: 3 4 5"
    )


def test_plugins_command_shows_one_plugins_settings():
    result = run_xllm("plugins", "datasets", "counting")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "dataset 'counting': 1 setting(s)",
        "  --counting-samples           XLLM_COUNTING_SAMPLES            default 200",
        "      counting dataset: how many train samples to generate.",
    ]
    assert run_xllm("plugins", "datasets", "soda").stdout == "dataset 'soda': no settings of its own\n"
