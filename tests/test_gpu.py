"""The GPU path on a CPU machine: each option is refused in one line where it cannot run, its Trainer wiring is
checked, and the parts that are plain code (the loss the model computes for Liger, packed rows flattened for flash
attention) are compared with xllm's own loss on the tiny model. ``bench/gpu.py --dry-run`` runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from xllm_cli.cli.app import main
from xllm_cli.errors import ConfigError
from xllm_cli.settings import XllmConfig


def refusal(capsys, tiny_model, *flags: str) -> str:
    """The one error line of ``xllm train`` on the tiny model with ``flags`` (exit 2, before any work)."""
    args = ["train", "--model-name-or-path", str(tiny_model), "--dataset-key", "general", "--apply-lora", *flags]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "tokenizing" not in err
    return err.strip().splitlines()[0]


def test_liger_is_refused_without_cuda(tiny_model, capsys):
    line = refusal(capsys, tiny_model, "--use-liger-kernel")
    assert line == (
        "error: --use-liger-kernel needs CUDA: Liger's kernels are Triton GPU kernels, and this machine has no CUDA "
        "device"
    )


def test_torch_compile_is_refused_without_cuda(tiny_model, capsys):
    line = refusal(capsys, tiny_model, "--torch-compile")
    assert line.startswith("error: --torch-compile needs CUDA")


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA as the checks see it (nothing runs on it)."""
    import xllm_cli.training.gpu as gpu

    monkeypatch.setattr(gpu, "has_cuda", lambda: True)
    return gpu


def test_liger_with_cuda_but_no_package_says_how_to_install_it(fake_cuda, tiny_model):
    config = XllmConfig(model_name_or_path=str(tiny_model), use_liger_kernel=True)
    with pytest.raises(ConfigError) as refused:
        fake_cuda.check_gpu_options(config)
    assert str(refused.value) == "--use-liger-kernel needs the liger-kernel package, which is not installed"
    assert refused.value.hint == "pip install 'xllm-cli[gpu]' (or pip install liger-kernel)"


def test_liger_refuses_label_smoothing_and_model_types_it_has_no_kernels_for(fake_cuda, tiny_model, monkeypatch):
    monkeypatch.setattr(fake_cuda.importlib.util, "find_spec", lambda name: object())  # "installed"
    monkeypatch.setattr(fake_cuda, "liger_model_types", lambda: {"mistral", "qwen2"})
    config = XllmConfig(model_name_or_path=str(tiny_model), use_liger_kernel=True)
    with pytest.raises(ConfigError, match="no kernels for model type 'llama' \\(it has: mistral, qwen2\\)"):
        fake_cuda.check_gpu_options(config)
    monkeypatch.setattr(fake_cuda, "liger_model_types", lambda: {"llama"})
    fake_cuda.check_gpu_options(config)  # a supported type passes
    smoothing = config.model_copy(update={"label_smoothing_factor": 0.1})
    with pytest.raises(ConfigError, match="no label smoothing"):
        fake_cuda.check_gpu_options(smoothing)


def test_the_options_reach_the_trainer(tmp_path):
    from xllm_cli.training.arguments import training_arguments

    config = XllmConfig(output_dir=str(tmp_path), use_liger_kernel=True, torch_compile=True, optim="adamw_torch")
    arguments = training_arguments(config)
    assert arguments.use_liger_kernel is True and arguments.torch_compile is True
    plain = training_arguments(XllmConfig(output_dir=str(tmp_path), optim="adamw_torch"))
    assert plain.use_liger_kernel is False and plain.torch_compile is False


# --- the code the GPU path runs, on CPU -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batches(tiny_model):
    """A padded batch and a packed batch of two rows (the second padded), as the collator makes them."""
    from transformers import AutoTokenizer

    from xllm_cli.collators.lm import LMCollator
    from xllm_cli.collators.packing import pack_features

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.pad_token = tokenizer.eos_token
    collator = LMCollator(tokenizer, XllmConfig(max_length=64))
    texts = ["What is ice? Ice is frozen water.", "A spider has eight legs.", "Bees make honey and wax, yes."]
    encoded = collator.encode_batch([{"text_parts": [text]} for text in texts])
    return {
        "padded": collator(encoded),
        "packed": collator([pack_features(encoded[:2]), pack_features(encoded[2:])]),
    }


@pytest.mark.parametrize("kind", ["padded", "packed"])
@pytest.mark.parametrize("num_items", [None, 7])
def test_the_loss_the_model_computes_is_xllms_loss(tiny_model, batches, kind, num_items):
    """--use-liger-kernel hands the labels to the model (Liger's fused cross-entropy lives in its forward); the
    model's own loss must equal the one LMTrainer computes from the logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from xllm_cli.training.trainer import model_inputs, model_loss, token_loss_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_model).train()  # dropout is 0: train mode is deterministic
    batch = batches[kind]
    with torch.no_grad():
        total, count = token_loss_sum(model(**model_inputs(batch)).logits, batch["labels"])
        expected = total / (num_items if num_items is not None else count)
        items = None if num_items is None else torch.tensor(num_items)
        loss, _ = model_loss(model, batch, items)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_lm_trainer_with_liger_lets_the_model_compute_the_same_loss(tiny_model, batches, tmp_path):
    """The dispatch in LMTrainer.compute_loss: training, and evaluation when the Trainer asks for the loss only (it
    adds skip_logits, which Liger's forward accepts with labels only), go through the model's own loss."""
    import torch
    from transformers import AutoModelForCausalLM, TrainingArguments

    from xllm_cli.training.trainer import LMTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    trainers = {
        liger: LMTrainer(
            model=model,
            args=TrainingArguments(
                output_dir=str(tmp_path / str(liger)), use_liger_kernel=liger, use_cpu=True, report_to="none"
            ),
        )
        for liger in (False, True)
    }
    batch = batches["packed"]
    seen: list[dict] = []
    forward = model.forward

    def recording_forward(*args, **kwargs):
        seen.append(kwargs)
        return forward(*args, **kwargs)

    model.forward = recording_forward
    with torch.no_grad():
        model.train()
        own = trainers[False].compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(9))
        assert "labels" not in seen[-1]
        fused = trainers[True].compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(9))
        assert seen[-1]["labels"] is batch["labels"] and seen[-1]["num_items_in_batch"] == 9
        model.eval()
        trainers[True].compute_loss(model, dict(batch))  # evaluation with logits: xllm's own loss
        assert "labels" not in seen[-1]
        trainers[True].compute_loss(model, {**batch, "skip_logits": True})
        assert seen[-1]["labels"] is batch["labels"] and seen[-1]["skip_logits"] is True
    assert torch.allclose(own, fused, atol=1e-5)


def test_packed_rows_flattened_for_flash_attention_keep_the_loss_and_the_boundaries(tiny_model, batches):
    import torch
    from transformers import AutoModelForCausalLM

    from xllm_cli.training.trainer import flatten_packed_batch, model_inputs, token_loss_sum

    packed = batches["packed"]
    rows, length = packed["input_ids"].shape
    flat = flatten_packed_batch(packed)
    assert flat["input_ids"].shape == flat["labels"].shape == flat["position_ids"].shape == (1, rows * length)
    # Boundaries: a sample starts wherever its positions restart at 0 (the second row's padding is a sequence too).
    starts = [i for i, p in enumerate(packed["position_ids"].reshape(-1).tolist()) if p == 0]
    assert flat["cu_seq_lens_q"].tolist() == [*starts, rows * length] == flat["cu_seq_lens_k"].tolist()
    assert flat["max_length_q"] == max(b - a for a, b in zip(starts, [*starts[1:], rows * length], strict=True))
    # The same loss as the rows fed separately: kernels that read boundaries from position_ids keep samples apart.
    for implementation in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=implementation).eval()
        with torch.no_grad():
            rows_loss, rows_count = token_loss_sum(model(**model_inputs(packed)).logits, packed["labels"])
            unvarlen = {k: v for k, v in flat.items() if not k.startswith(("cu_seq", "max_length"))}
            flat_loss, flat_count = token_loss_sum(model(**model_inputs(unvarlen)).logits, flat["labels"])
        assert flat_count == rows_count
        assert torch.allclose(flat_loss / flat_count, rows_loss / rows_count, atol=1e-5), implementation


def test_the_packing_start_up_line_names_the_kernel_path(tiny_model):
    from transformers import AutoModelForCausalLM

    from xllm_cli.training.trainer import describe_packing_kernel

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    assert describe_packing_kernel(model) == (
        "packing: sdpa attention with a block-diagonal mask from the restarting position_ids"
    )
    model.config._attn_implementation = "flash_attention_2"  # what the line says on a GPU with flash-attn
    assert describe_packing_kernel(model) == (
        "packing: flash_attention_2 varlen, each batch flattened into one row (with the sample boundaries precomputed)"
    )


# --- bench/gpu.py ------------------------------------------------------------------------------------------------------
def test_the_gpu_bench_dry_run_trains_every_variant_it_can_on_cpu(tmp_path):
    report_path = tmp_path / "gpu.json"
    results = REPO / "bench" / "results.json"
    recorded = results.read_bytes() if results.is_file() else None
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--dry-run", "--json", str(report_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    runs = report["runs"]
    assert report["dry_run"] is True and report["device"] == "cpu (dry run)"
    for name in ("plain HF QLoRA", "xllm padded", "xllm packed"):
        assert runs[name]["tokens_per_s"] > 0 and runs[name]["peak_memory_gib"] > 0, (name, runs[name])
    assert "needs CUDA" in runs["xllm packed + Liger"]["skipped"]
    assert set(report["ratios"]) == {
        f"{name} / plain HF QLoRA {what}"
        for name in ("xllm padded", "xllm packed")
        for what in ("tokens/s", "peak memory")
    }
    assert any("Liger" in reason for reason in report["skipped_on_cpu"])
    assert (results.read_bytes() if results.is_file() else None) == recorded  # a dry run is no measurement
