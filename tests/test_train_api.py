"""Training from a user's own script (config subclass, in-memory data, launcher-style argv), Hub pushes and W&B."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap

from tests.fake_hub import fake_hub  # noqa: F401 (fixture)
from tests.test_train import logged_losses, lora_model, run_train  # noqa: F401 (fixture)

SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    from xllm_cli import XllmConfig, register
    from xllm_cli.api import cli_run_train
    from xllm_cli.data.base import Dataset


    class MyConfig(XllmConfig):
        answer_prefix: str = "Answer:"


    class QADataset(Dataset):
        def get_sample(self, raw):
            return {"text_parts": [raw["q"], f"{self.config.answer_prefix} {raw['a']}"]}


    register("datasets", "qa", QADataset)
    samples = [{"q": f"What is {a} plus {b}?", "a": str(a + b)} for a in range(4) for b in range(4)]

    if __name__ == "__main__":
        output = cli_run_train(config_cls=MyConfig, train_dataset=samples)
        print(json.dumps({"output": str(output), "wandb_imported": "wandb" in sys.modules}))
    """
)


def run_script(tmp_path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "my_train.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )


def test_own_script_with_config_subclass_and_in_memory_data_takes_launcher_arguments(lora_model, tmp_path):  # noqa: F811
    # The original spelling and --local_rank=0, as `deepspeed my_train.py ...` passes them.
    result = run_script(
        tmp_path,
        "--model_name_or_path", str(lora_model), "--dataset_key", "qa", "--answer_prefix", "A:",
        "--apply_lora", "True", "--stabilize", "False", "--max_steps", "6", "--output_dir", "out",
        "--per_device_train_batch_size", "4", "--logging_steps", "1", "--local_rank=0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    output = tmp_path / "out"
    assert report["output"] == "out" and (output / "adapter_model.safetensors").is_file()
    saved = json.loads((output / "xllm_config.json").read_text())
    assert saved["answer_prefix"] == "A:" and saved["apply_lora"] is True
    assert report["wandb_imported"] is False  # no --report-to-wandb: W&B is never even imported


def test_own_script_bad_argument_is_one_line(tmp_path):
    result = run_script(tmp_path, "--max_stepz", "3")
    assert result.returncode == 2
    assert "no such option --max-stepz; did you mean '--max-steps'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_own_script_answers_help_and_show_config_like_xllm_train(tmp_path):
    shown = run_script(tmp_path, "--help")
    assert shown.returncode == 0 and "Your settings:" in shown.stdout and "--answer-prefix TEXT" in shown.stdout
    assert "--apply-lora / --no-apply-lora" in shown.stdout
    shown = run_script(tmp_path, "--answer-prefix", "A:", "--quiet", "--show-config")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "answer_prefix" in line)
    assert "'A:'" in row and "flag" in row and "Your settings" in row


def test_config_from_argv_takes_the_run_options_its_docstring_names(capsys, monkeypatch):
    from xllm_cli import XllmConfig
    from xllm_cli.api import config_from_argv

    class MyConfig(XllmConfig):
        answer_prefix: str = "Answer:"

    config = config_from_argv(MyConfig, ["--answer-prefix", "A:", "--quiet", "--lora_rank", "4"])
    assert isinstance(config, MyConfig) and (config.answer_prefix, config.lora_rank) == ("A:", 4)
    assert config_from_argv(MyConfig, ["--help"]) is None
    assert "--answer-prefix" in capsys.readouterr().out
    assert config_from_argv(MyConfig, ["--show-config"]) is None
    assert "answer_prefix" in capsys.readouterr().out


def test_push_to_hub_sends_every_checkpoint_adapter_only_to_a_private_repo(
    lora_model,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
    fake_hub,  # noqa: F811
):
    monkeypatch.setenv("XLLM_HUGGINGFACE_HUB_TOKEN", "hf_push_token_value")
    output = tmp_path / "pushed"
    code = run_train(
        lora_model, output, "--apply-lora", "--max-steps", "4", "--save-steps", "2",
        "--push-to-hub", "--hub-model-id", "me/tiny-lora", "--report-to-wandb",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert fake_hub.repos["me/tiny-lora"]["private"] is True
    files = fake_hub.files["me/tiny-lora"]
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= set(files)
    assert "model.safetensors" not in files
    assert not any(name.startswith("checkpoint-") for name in files)
    assert (output / "_wandb" / "wandb").is_dir() and not any("wandb" in name for name in files)
    assert json.loads(files["xllm_config.json"])["huggingface_hub_token"] == "**********"
    assert len(fake_hub.commits) >= 2  # the checkpoints and the final model
    assert any("hf_push_token_value" in header for header in fake_hub.authorizations)
    assert "hf_push_token_value" not in err


def wandb_history(run_file) -> list[dict]:
    """The history rows of an offline W&B run file (a LevelDB-style log of protobuf records; offline runs write no
    summary JSON, and this wandb reads the file only from its Go core)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, rows = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # no room for a chunk header: the block's tail is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
    return rows


def test_wandb_offline_run_folder_has_the_metrics(tiny_model, tmp_path, capsys):
    output = tmp_path / "logged"
    code = run_train(tiny_model, output, "--max-steps", "4", "--report-to-wandb", "--wandb-project", "xllm-tests")
    assert code == 0, capsys.readouterr().err
    runs = list((output / "_wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history = wandb_history(next(runs[0].glob("run-*.wandb")))
    logged = [round(float(row["train/loss"]), 4) for row in history if "train/loss" in row]
    assert logged == [round(loss, 4) for loss in logged_losses(output)] and len(logged) == 4
