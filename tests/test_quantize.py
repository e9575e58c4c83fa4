"""``xllm quantize``: a real GPTQ checkpoint that plain transformers loads and generates with, its quality reported."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_xllm
from xllm_cli.cli.app import main

SECRET = "hf_QUANTIZE_SECRET_777"
# The tiny model's layers are 64 and 128 wide: groups of 32 fit both.
SMALL_GPTQ = ["--gptq-group-size", "32", "--max-length", "64", "--quantization-max-samples", "16"]


def xllm(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code, out + err


def assert_real_gptq_checkpoint(folder: Path, bits: int = 4, group_size: int = 32) -> None:
    """config.json carries the quantization config and the linear weights are packed int32, not floats."""
    from safetensors import safe_open

    quantization = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert quantization["quant_method"] == "gptq"
    assert quantization["bits"] == bits and quantization["group_size"] == group_size
    with safe_open(folder / "model.safetensors", "pt") as weights:
        names = set(weights.keys())  # noqa: SIM118
        qweight = weights.get_tensor("model.layers.0.self_attn.q_proj.qweight")
    assert "model.layers.0.self_attn.q_proj.weight" not in names
    assert {"model.layers.0.mlp.down_proj.qweight", "model.layers.0.mlp.down_proj.scales"} <= names
    assert str(qweight.dtype) == "torch.int32"
    assert qweight.shape == (64 * bits // 32, 64)  # 64 input columns packed 8 per int32 at 4 bits


def load_and_generate(folder: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert not isinstance(model.model.layers[0].self_attn.q_proj, torch.nn.Linear)  # a GPTQ kernel module
    inputs = tokenizer("Question: What do bees make?\nAnswer:", return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert generated.shape[1] == inputs.input_ids.shape[1] + 6
    return tokenizer.decode(generated[0][inputs.input_ids.shape[1] :])


def assert_quality_report(folder: Path, output: str) -> None:
    quality = json.loads((folder / "quality.json").read_text())
    for key in ("perplexity_unquantized", "perplexity_quantized"):
        assert math.isfinite(quality[key]) and quality[key] > 1
    assert quality["held_out_samples"] >= 1 and quality["tokens"] > 0
    assert f"{quality['perplexity_quantized']:.3f} quantized" in output


@pytest.mark.slow
def test_quantize_the_train_data_through_the_cli_then_load_with_plain_transformers(tiny_model, tmp_path):
    args = ["quantize", "--model-name-or-path", str(tiny_model), "--dataset-key", "demo", *SMALL_GPTQ]
    result = run_xllm(*args, "--quantized-model-path", "gptq", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # No prepared data yet: quantize prepared it (--prepare-dataset is on by default), then calibrated on it.
    assert "preparing dataset 'demo'" in result.stderr and (tmp_path / "train.jsonl").is_file()
    assert "quantize: 2/2 layers" in result.stderr  # progress per decoder layer
    assert "GPT-QModel" not in result.stdout + result.stderr  # the backend's banners stay in its log
    assert not (tmp_path / "logs").exists()  # nor does the backend litter the user's folder with its statistics
    folder = tmp_path / "gptq"
    assert_real_gptq_checkpoint(folder)
    assert_quality_report(folder, result.stderr)
    assert isinstance(load_and_generate(folder), str)


def write_chat_calibration(path: Path, count: int = 24) -> Path:
    from xllm_cli.data.demo import demo_pairs

    with path.open("w") as handle:
        for question, answer in demo_pairs()[:count]:
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.mark.slow
def test_quantized_model_pushed_to_the_hub_arrives_complete(capsys, tiny_model, tmp_path, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    calibration = write_chat_calibration(tmp_path / "chat.jsonl")
    code, output = xllm(
        capsys,
        "quantize",
        "--model-name-or-path",
        str(tiny_model),
        "--quantization-dataset-id",
        str(calibration),
        "--quantized-model-path",
        "gptq",
        "--quantized-hub-model-id",
        "me/tiny-gptq",
        "--no-quantized-hub-private-repo",
        *SMALL_GPTQ,
    )
    assert code == 0, output
    assert SECRET not in output
    assert f"Bearer {SECRET}" in fake_hub.authorizations
    assert fake_hub.repos["me/tiny-gptq"]["private"] is False
    local = tmp_path / "gptq"
    arrived = fake_hub.files["me/tiny-gptq"]
    assert set(arrived) == {p.name for p in local.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "quality.json"} <= set(
        arrived
    )
    assert "quantization_config" in json.loads(arrived["config.json"])
    downloaded = tmp_path / "from-hub"
    downloaded.mkdir()
    for name, content in arrived.items():
        (downloaded / name).write_bytes(content)
    assert_real_gptq_checkpoint(downloaded)
    assert load_and_generate(downloaded) == load_and_generate(local)


def test_without_the_gptq_backend_quantize_says_what_to_install(tiny_model, tmp_path):
    hide_and_run = (
        "import sys; sys.modules['gptqmodel'] = None\n"
        "from xllm_cli.cli.app import main\n"
        f"main(['quantize', '--model-name-or-path', {str(tiny_model)!r}])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide_and_run], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [lines[0]] and "pip install 'xllm-cli[gptq]'" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "quantized_model").exists()


def test_a_group_size_that_does_not_fit_the_model_is_refused_before_quantizing(capsys, tiny_model):
    code, output = xllm(capsys, "quantize", "--model-name-or-path", str(tiny_model), "--gptq-group-size", "128")
    assert code == 2
    assert "--gptq-group-size 128" in output and "32" in output


def test_missing_calibration_file_names_the_flag(capsys, tiny_model):
    code, output = xllm(
        capsys, "quantize", "--model-name-or-path", str(tiny_model), "--gptq-group-size", "32",
        "--quantization-dataset-id", "./nowhere.jsonl",
    )  # fmt: skip
    assert code == 2
    assert "--quantization-dataset-id" in output and "nowhere.jsonl" in output


def test_missing_train_data_without_prepare_says_what_to_run(capsys, tiny_model):
    code, output = xllm(
        capsys, "quantize", "--model-name-or-path", str(tiny_model), "--gptq-group-size", "32",
        "--dataset-key", "demo", "--no-prepare-dataset",
    )  # fmt: skip
    assert code == 1
    assert "prepared data not found: train.jsonl" in output and "xllm download" in output


def test_a_written_folder_that_does_not_load_back_is_exit_1_and_never_put_in_place(capsys, tmp_path, monkeypatch):
    from xllm_cli.tiny import create_tiny_model

    phi3 = create_tiny_model(tmp_path / "phi3", architecture="phi3")
    # Skip the step that writes Phi-3's split gate/up projections as the gate_up_proj transformers has: the folder is
    # then exactly what gptqmodel writes, which plain transformers loads with those weights missing.
    monkeypatch.setattr("xllm_cli.quantize.fuse_split_pairs", lambda *args: None)
    code, output = xllm(
        capsys, "quantize", "--model-name-or-path", str(phi3), "--quantized-model-path", "gptq",
        "--quantization-dataset-id", str(write_chat_calibration(tmp_path / "chat.jsonl")), *SMALL_GPTQ,
    )  # fmt: skip
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "phi3: transformers loads the quantized model wrongly" in errors[0]
    assert "weights missing (e.g. model.layers.0.mlp.gate_up_proj" in errors[0] and "weights unused" in errors[0]
    assert not (tmp_path / "gptq").exists() and not list(tmp_path.glob(".gptq*"))


def test_a_perplexity_rise_past_the_limit_is_exit_1_with_the_result_kept_aside(capsys, tmp_path):
    import torch

    from xllm_cli.tiny import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(25)  # confident predictions, which 2-bit weights make worse
    model.save_pretrained(tmp_path / "wide")
    tokenizer.save_pretrained(tmp_path / "wide")
    code, output = xllm(
        capsys, "quantize", "--model-name-or-path", str(tmp_path / "wide"), "--quantized-model-path", "gptq",
        "--quantization-dataset-id", str(write_chat_calibration(tmp_path / "chat.jsonl")), *SMALL_GPTQ,
        "--gptq-bits", "2", "--quantization-max-perplexity-increase", "0.001",
    )  # fmt: skip
    assert code == 1, output
    assert "quantize: llama: perplexity rose +" in output and "--quantization-max-perplexity-increase 0.001" in output
    assert not (tmp_path / "gptq").exists()
    kept = tmp_path / "gptq.rejected"
    assert json.loads((kept / "quality.json").read_text())["relative_increase"] > 0.001
    assert_real_gptq_checkpoint(kept, bits=2)


def test_the_group_size_must_divide_the_real_layer_widths_not_only_the_configs_usual_keys(capsys, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from xllm_cli.tiny import build_tokenizer

    # OPT names its MLP width ffn_dim: 96 here, which groups of 64 do not divide (hidden_size 64 alone would pass).
    tokenizer = build_tokenizer()
    config = AutoConfig.for_model(
        "opt", vocab_size=len(tokenizer), hidden_size=64, ffn_dim=96, num_hidden_layers=1, num_attention_heads=4,
        word_embed_proj_dim=64,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "opt")
    tokenizer.save_pretrained(tmp_path / "opt")
    code, output = xllm(capsys, "quantize", "--model-name-or-path", str(tmp_path / "opt"), "--gptq-group-size", "64")
    assert code == 2
    assert "--gptq-group-size 64 does not divide the model's layer width 96; use 32 or -1" in output
