"""The command line as a user meets it: help panels, --show-config, the original spelling, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import run_xllm
from xllm_cli.cli.app import main

SECRET = "hf_SUPERSECRET_987"


def xllm(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``xllm`` in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code, out, err


def test_top_level_help_lists_every_step(capsys):
    code, out, _ = xllm(capsys, "--help")
    assert code == 0
    for step in ("download", "train", "fuse", "quantize", "plugins", "tiny", "cache"):
        assert step in out


@pytest.mark.parametrize(
    ("step", "panels", "absent"),
    [
        ("download", ["Main options", "Model", "Tokenizer", "Data", "Run"], ["LoRA", "Training", "Distributed"]),
        ("train", ["Model", "Data", "Collator", "LoRA", "Quantized base", "Training", "Distributed", "W&B"], ["GPTQ"]),
        ("fuse", ["Fuse", "Model", "Tokenizer", "Saving", "Hub"], ["LoRA", "Quantized base", "Distributed"]),
        ("quantize", ["GPTQ", "Data", "Model", "Collator"], ["LoRA", "Training", "Fuse"]),
    ],
)
def test_step_help_shows_the_sections_the_step_reads_and_no_other(capsys, step, panels, absent):
    code, out, _ = xllm(capsys, step, "--help")
    assert code == 0
    headings = [line.rstrip(":") for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings[0] == "Main options" and headings[-1] == "Run"
    for panel in panels:
        assert any(h.startswith(panel) for h in headings), panel
    for panel in absent:
        assert not any(h.startswith(panel) for h in headings), panel
    assert "[default:" in out and "--show-config" in out and "--config" in out


@pytest.mark.parametrize("step", ["download", "train", "fuse", "quantize"])
def test_step_help_reads_well_in_80_columns(capsys, monkeypatch, step):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = xllm(capsys, step, "--help")
    assert code == 0
    assert [line for line in out.splitlines() if len(line) > 80] == []
    for noise in ("<bool>", "<str>", "('", "--install-completion", "--show-completion", "╭"):
        assert noise not in out, noise
    assert "--apply-lora / --no-apply-lora" in out if step == "train" else True


def test_a_flag_of_another_step_names_the_step_that_takes_it(capsys):
    code, _, err = xllm(capsys, "download", "--deepspeed-stage", "2")
    assert code == 2 and "error: --deepspeed-stage is a setting of xllm train, not of xllm download" in err
    code, _, err = xllm(capsys, "fuse", "--load-in-4bit", "--lora-model-local-path", "x")
    assert code == 2 and "error: --load-in-4bit is a setting of xllm train, not of xllm fuse" in err


def test_the_options_of_a_plugin_appear_once_it_is_selected_in_the_same_process(capsys):
    """Commands are built per (step, selected plugins): an earlier --help must not hide a plugin's options."""
    code, out, _ = xllm(capsys, "download", "--help")
    assert code == 0 and "--counting-samples" not in out
    code, out, _ = xllm(capsys, "download", "--dataset-key", "counting", "--help")
    assert code == 0 and "Plugin counting:" in out and "--counting-samples" in out
    code, out, _ = xllm(capsys, "download", "--help")
    assert code == 0 and "--counting-samples" not in out


def test_a_plugin_selected_in_the_environment_adds_its_options_too(capsys, monkeypatch):
    monkeypatch.setenv("XLLM_DATASET_KEY", "counting")
    code, out, _ = xllm(capsys, "download", "--counting-samples", "7", "--show-config")
    assert code == 0
    row = next(line for line in out.splitlines() if "counting_samples" in line)
    assert "7" in row and "flag" in row


def test_show_config_reports_sources_and_masks_secrets(capsys, tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"XLLM_LORA_ALPHA=64\nHF_TOKEN={SECRET}\n")
    (tmp_path / "c.yaml").write_text("seed: 7\n")
    monkeypatch.setenv("XLLM_LORA_DROPOUT", "0.2")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    code, out, err = xllm(capsys, "train", "--config", "c.yaml", "--lora-rank", "4", "--show-config")
    assert code == 0
    rows = {line.split("│")[2].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert "4" in rows["lora_rank"] and "flag" in rows["lora_rank"]
    assert "0.2" in rows["lora_dropout"] and "env" in rows["lora_dropout"]
    assert "64" in rows["lora_alpha"] and ".env" in rows["lora_alpha"]
    assert "7" in rows["seed"] and "config file" in rows["seed"]
    assert "default" in rows["max_length"]
    assert "********" in rows["huggingface_hub_token"] and "********" in rows["wandb_api_key"]
    assert SECRET not in out + err


def test_original_spelling_through_the_cli(capsys):
    code, out, _ = xllm(
        capsys, "train", "--deepspeed_stage", "2", "--apply_lora", "True", "--stabilize", "False",
        "--local_rank=3", "--show-config",
    )  # fmt: skip
    assert code == 0
    rows = {line.split("│")[2].strip(): line.split("│")[3].strip() for line in out.splitlines() if line.count("│") >= 4}
    assert rows["deepspeed_stage"] == "2" and rows["apply_lora"] == "True"
    assert rows["stabilize"] == "False" and rows["local_rank"] == "3"


def test_local_rank_from_torchrun_environment(capsys, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    code, out, _ = xllm(capsys, "train", "--show-config")
    row = next(line for line in out.splitlines() if "local_rank" in line)
    assert code == 0 and "│ 1 " in row and "env" in row


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--load-in-4bit", "--load-in-8bit"], "--load-in-4bit and --load-in-8bit cannot be used together"),
        (["train", "--deepspeed-stage", "7"], "--deepspeed-stage must be 0, 1, 2 or 3, got 7"),
        (["train", "--lora-rnk", "3"], "no such option --lora-rnk; did you mean '--lora-rank'?"),
        (["fuse"], "fuse needs an adapter: give --lora-model-local-path or --lora-hub-model-id"),
        (["fuse", "--lora-rank", "3", "--lora-model-local-path", "x"], "--lora-rank is a setting of xllm train"),
        (["train", "--max-length", "many"], "Invalid value for '--max-length': Input should be a valid integer"),
        (["trian"], "No such command 'trian'. Did you mean 'train'"),
        (["train", "--apply_lora", "perhaps"], "perhaps"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, args, message):
    code, out, err = xllm(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out
    assert err.startswith("error: ") and len([line for line in err.splitlines() if line.startswith("error")]) == 1


def test_secret_in_a_failing_run_stays_hidden(capsys, monkeypatch):
    monkeypatch.setenv("XLLM_WANDB_API_KEY", SECRET)
    code, out, err = xllm(capsys, "train", "--lora-rank", "x", "--hub-model-id", SECRET)
    assert code == 2
    assert SECRET not in err.replace(f"--hub-model-id {SECRET}", "")


def test_installed_binary_and_module_entry_points_agree(tmp_path):
    as_script = run_xllm("train", "--push-to-hub")
    as_module = subprocess.run(
        [sys.executable, "-m", "xllm_cli", "train", "--push-to-hub"], capture_output=True, text=True, cwd=tmp_path
    )
    for result in (as_script, as_module):
        assert result.returncode == 2
        assert (
            result.stderr.splitlines()[0]
            == "error: --push-to-hub needs --hub-model-id (e.g. --hub-model-id me/my-model)"
        )


@pytest.mark.parametrize(
    ("step", "extra"),
    [
        ("download", []),
        ("train", ["--dataset-key", "general"]),
        ("fuse", ["--lora-model-local-path", "."]),
        ("quantize", []),
    ],
)
@pytest.mark.parametrize("path", ["./no-such-model", "~/no-such-model-xllm", "../no-such-model"])
def test_a_local_looking_model_path_that_does_not_exist_is_no_such_folder_not_a_hub_lookup(capsys, step, extra, path):
    code, _, err = xllm(capsys, step, "--model-name-or-path", path, *extra)
    assert code == 2, err
    assert f"--model-name-or-path {path}: no such folder" in err
    assert "Hub" not in err and "Traceback" not in err


def test_a_local_looking_tokenizer_path_that_does_not_exist_is_no_such_folder(capsys, tiny_model):
    code, _, err = xllm(capsys, "train", "--model-name-or-path", str(tiny_model), "--tokenizer-name-or-path", "./tok")
    assert code == 2 and "--tokenizer-name-or-path ./tok: no such folder" in err
