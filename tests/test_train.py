"""``xllm train`` on the tiny model: full fine-tuning, LoRA, QLoRA, the final save, and bad input.

Training runs go through ``xllm_cli.cli.app.main`` in-process (the same code path as the binary, without paying the
library imports again for every run). Each run repeats a few short samples with a high learning rate, so a working
training loop must bring the loss well down within a few dozen steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from xml.etree import ElementTree

import pytest

from tests.conftest import user_cache
from xllm_cli.cli.app import main
from xllm_cli.data.demo import demo_records

SECRET = "hf_do_not_print_this_token"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def lora_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with its output head scaled up, for adapter training.

    LoRA leaves the head frozen, and a randomly initialised head (std 0.02 over 64 dims) caps every logit near +-1, so
    no adapter could make confident predictions: the loss could hardly fall whatever the training loop did.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("models") / "tiny-wide-head"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(25)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return path


def write_training_data(path: Path, samples: int = 8, repeats: int = 4) -> Path:
    rows = demo_records()[:samples] * repeats
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_train(tiny_model: Path, output: Path, *args: str, data: Path | None = None) -> int:
    """``xllm train`` in-process on the demo records; returns the exit code."""
    data = data or write_training_data(output.parent / "train.jsonl")
    base = [
        "train",
        "--model-name-or-path", str(tiny_model),
        "--dataset-key", "general",
        "--train-local-path-to-data", str(data),
        "--output-dir", str(output),
        "--per-device-train-batch-size", "4",
        "--warmup-steps", "0",
        "--logging-steps", "1",
        "--save-steps", "1000",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main([*base, *args])
    return exit_info.value.code


def logged_losses(output: Path, key: str = "loss") -> list[float]:
    return [entry[key] for entry in json.loads((output / "training_log.json").read_text()) if key in entry]


def assert_loss_falls(output: Path, factor: float) -> None:
    losses = logged_losses(output)
    assert len(losses) >= 8, losses
    first, last = mean(losses[:3]), mean(losses[-3:])
    assert last < factor * first, f"loss did not fall enough: first {first:.3f}, last {last:.3f} ({losses})"


def test_full_finetuning_falls_and_saves_model_tokenizer_config_and_curve(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    output = tmp_path / "full"
    code = run_train(tiny_model, output, "--max-steps", "24", "--learning-rate", "3e-3")
    err = capsys.readouterr().err
    assert code == 0, err
    assert_loss_falls(output, 0.75)
    # The final model (the original tool never saved it), loadable as is, with its tokenizer.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (output / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(output)
    assert AutoTokenizer.from_pretrained(output).eos_token == "</s>"
    saved = json.loads((output / "xllm_config.json").read_text())
    assert saved["max_steps"] == 24 and saved["huggingface_hub_token"] == "**********"
    curve = ElementTree.parse(output / "loss_curve.svg").getroot()
    logged = [entry for entry in json.loads((output / "training_log.json").read_text()) if "loss" in entry]
    (train_line,) = [line for line in curve.iter(f"{SVG}polyline") if line.get("data-name") == "train loss"]
    assert len(train_line.get("points").split()) == len(logged)
    # Progress with loss, lr and tokens/s (plain lines: stderr is not a terminal here), then the summary.
    assert "train: 24/24 steps" in err and "loss=" in err and "lr=" in err and "tokens_per_s=" in err
    assert "done: trained 24 steps" in err and f"model: {output}" in err
    for path in output.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in err


def test_lora_with_completion_collator_packing_checkpointing_and_eval(lora_model, tmp_path, capsys):
    output = tmp_path / "lora"
    eval_data = write_training_data(tmp_path / "eval.jsonl", samples=4, repeats=1)
    code = run_train(
        lora_model, output,
        "--apply-lora", "--lora-rank", "16", "--learning-rate", "1e-2", "--max-steps", "24",
        "--collator-key", "completion", "--packing", "--max-length", "128",
        "--use-gradient-checkpointing",
        "--eval-local-path-to-data", str(eval_data), "--do-eval", "--eval-steps", "12",
        "--save-steps", "8", "--save-total-limit", "1",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert_loss_falls(output, 0.5)
    assert len(logged_losses(output, "eval_loss")) == 2
    # Adapter only, with the tokenizer; checkpoints every save_steps, only the newest kept.
    assert (output / "adapter_model.safetensors").is_file() and (output / "adapter_config.json").is_file()
    assert (output / "tokenizer.json").is_file()
    assert not (output / "model.safetensors").exists()
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-24"]
    assert f"adapter: {output}" in err


@pytest.mark.parametrize(
    "flags",
    [
        ("--load-in-4bit", "--use-gradient-checkpointing"),
        ("--load-in-8bit",),
        ("--load-in-4bit", "--bnb-quantize-after-model-init"),
    ],
    ids=["4bit", "8bit", "4bit-after-init"],
)
def test_qlora_trains_with_falling_loss(lora_model, tmp_path, capsys, flags):
    import bitsandbytes as bnb
    import torch

    from xllm_cli import registry
    from xllm_cli.training.experiment import Experiment

    seen: dict[str, set] = {}

    class RecordingExperiment(Experiment):  # an after-hook, as a plugin would write one
        def after_model(self) -> None:
            seen["types"] = {type(m) for m in self.model.modules() if isinstance(m, torch.nn.Linear)}

    registry.register("experiments", "test-recording", RecordingExperiment)
    output = tmp_path / "qlora"
    code = run_train(
        lora_model, output, *flags, "--apply-lora", "--lora-rank", "16", "--learning-rate", "1e-2",
        "--max-steps", "20", "--experiment-key", "test-recording",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert_loss_falls(output, 0.5)
    expected = bnb.nn.Linear4bit if "--load-in-4bit" in flags else bnb.nn.Linear8bitLt
    assert expected in seen["types"]
    assert (output / "adapter_model.safetensors").is_file()


def test_do_eval_without_eval_data_is_one_clear_error(tiny_model, tmp_path, capsys):
    code = run_train(tiny_model, tmp_path / "out", "--do-eval", "--max-steps", "2")
    err = capsys.readouterr().err
    assert code == 2
    assert "error: --do-eval needs eval data" in err and "Traceback" not in err


def test_missing_prepared_data_tells_to_run_download(tiny_model, tmp_path, capsys):
    code = run_train(tiny_model, tmp_path / "out", "--max-steps", "2", data=tmp_path / "nowhere.jsonl")
    err = capsys.readouterr().err
    assert code == 1
    assert "prepared data not found" in err and "xllm download" in err and "Traceback" not in err


def test_unknown_lora_target_lists_the_model_linear_layers(tiny_model, tmp_path, capsys):
    code = run_train(tiny_model, tmp_path / "out", "--apply-lora", "--raw-lora-target-modules", "q_proj,q_prj")
    err = capsys.readouterr().err
    assert code == 2
    assert "no module named 'q_prj'" in err and "did you mean 'q_proj'" in err and "v_proj" in err


def test_flash_attention_without_cuda_is_a_clear_error(tiny_model, tmp_path, capsys):
    code = run_train(tiny_model, tmp_path / "out", "--use-flash-attention-2")
    err = capsys.readouterr().err
    assert code == 2 and "--use-flash-attention-2 needs a CUDA GPU" in err


def test_stabilize_keeps_norms_in_fp32_and_casts_both_lora_matrices_embeddings_and_head(lora_model):
    import torch
    from transformers import AutoModelForCausalLM

    from xllm_cli.settings import XllmConfig
    from xllm_cli.training.lora import apply_lora, stabilize

    config = XllmConfig(model_name_or_path=str(lora_model), apply_lora=True)
    model = stabilize(apply_lora(AutoModelForCausalLM.from_pretrained(lora_model), config), torch.bfloat16)
    dtypes = {name: param.dtype for name, param in model.named_parameters()}
    assert all(dtypes[n] == torch.float32 for n in dtypes if "norm" in n)
    assert any("lora_B" in n for n in dtypes)
    assert all(dtypes[n] == torch.bfloat16 for n in dtypes if "lora_A" in n or "lora_B" in n)
    assert all(dtypes[n] == torch.bfloat16 for n in dtypes if "embed_tokens" in n or "lm_head" in n)


def test_fuse_after_training_writes_a_merged_model_that_loads_without_peft(lora_model, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    fused = tmp_path / "fused"
    code = run_train(
        lora_model, tmp_path / "adapter", "--apply-lora", "--max-steps", "3", "--learning-rate", "1e-2",
        "--fuse-after-training", "--fused-model-local-path", str(fused),
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    model = AutoModelForCausalLM.from_pretrained(fused)
    assert not any("lora" in name for name, _ in model.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(lora_model)
    changed = [
        name
        for (name, weight), (_, base_weight) in zip(model.named_parameters(), base.named_parameters(), strict=True)
        if not weight.data.equal(base_weight.data)
    ]
    assert any("q_proj" in name for name in changed)  # the trained adapter is in the weights


def test_plugin_collator_without_encode_batch_trains_on_the_fly(lora_model, tmp_path, capsys):
    pytest.importorskip("xllm_example_plugin")  # installed by `make install` from plugins/
    output = tmp_path / "plugin"
    code = run_train(
        lora_model, output, "--collator-key", "example-lm", "--apply-lora", "--learning-rate", "1e-2",
        "--max-steps", "16",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert_loss_falls(output, 0.5)
    assert not (user_cache(tmp_path) / "tokenized").exists()  # nothing to cache: the plugin tokenizes per batch


def test_gradient_accumulation_weighs_every_token_like_one_big_batch(tiny_model, tmp_path, capsys):
    """Two micro-batches of 2 must give the update of one batch of 4: the loss is normalised over the target tokens
    of the whole accumulated batch (``num_items_in_batch``), not averaged per micro-batch."""
    from safetensors.torch import load_file

    data = write_training_data(tmp_path / "train.jsonl", samples=8, repeats=1)
    weights = {}
    for name, batch, accumulation in (("big", "4", "1"), ("accumulated", "2", "2")):
        output = tmp_path / name
        code = run_train(
            tiny_model, output, "--per-device-train-batch-size", batch, "--gradient-accumulation-steps", accumulation,
            "--max-steps", "1", "--optim", "sgd", "--learning-rate", "1.0", "--weight-decay", "0",
            "--max-grad-norm", "1000", data=data,
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        weights[name] = load_file(output / "model.safetensors")
    before = load_file(tiny_model / "model.safetensors")
    moved = weights["big"]["lm_head.weight"] - before["lm_head.weight"]
    assert moved.abs().max() > 1e-3  # the step did something measurable
    for key, value in weights["big"].items():
        assert torch_allclose(value, weights["accumulated"][key]), key


def torch_allclose(a, b) -> bool:
    import torch

    return torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_a_model_with_no_linear_layer_but_its_head_gets_one_line_instead_of_an_empty_target_list():
    import torch

    from xllm_cli.errors import ConfigError
    from xllm_cli.training.lora import target_modules

    class HeadOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.norm, self.head = torch.nn.Embedding(16, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 16)

        def get_input_embeddings(self):
            return self.embed

        def get_output_embeddings(self):
            return self.head

    with pytest.raises(ConfigError) as refused:
        target_modules(HeadOnly(), "all")
    assert "HeadOnly has no linear layer LoRA can adapt besides its output head" in str(refused.value)
    assert "Embedding, LayerNorm, Linear" in str(refused.value) and "--raw-lora-target-modules" in refused.value.hint


def test_use_flash_attention_2_and_another_attention_contradict(tiny_model, tmp_path, capsys):
    code = run_train(tiny_model, tmp_path / "out", "--use-flash-attention-2", "--attn-implementation", "eager")
    err = capsys.readouterr().err
    assert code == 2 and "--use-flash-attention-2 contradicts --attn-implementation eager: pick one" in err
