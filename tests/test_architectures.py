"""The architecture matrix: every architecture of ``tests/architecture_matrix.py`` through the steps a user runs.

Per architecture, on a tiny random model built from transformers' own config class (``xllm_cli.tiny``): LoRA with the
default targets trains (the loss falls, packed rows where packing is allowed), fuse computes exactly what peft's
merge computes, GPTQ quantize writes a folder plain ``from_pretrained`` loads with every weight and whose logits
follow the fused model's, and packed samples stay isolated. Where xllm refuses a step for an architecture, the test
asserts the refusal instead, and that nothing was written. docs/architectures.md is generated from the same list.

The steps run in-process through the Python API (one process pays the library imports once); each is computed once
per architecture and shared by the tests of later steps. A few CLI cases at the end check the same refusals as a user
sees them.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from statistics import mean

import pytest

from tests.architecture_matrix import MATRIX, ArchitectureCase
from tests.conftest import run_xllm
from xllm_cli.cli.app import main
from xllm_cli.data.demo import demo_records, demo_texts
from xllm_cli.errors import ConfigError
from xllm_cli.settings import XllmConfig

CASES = [pytest.param(case, id=case.id) for case in MATRIX]
# GPTQ settings the tiny layers (64 to 256 wide) fit, and few samples: seconds per architecture on a CPU.
SMALL_GPTQ = {"gptq_group_size": 32, "max_length": 64, "quantization_max_samples": 16}


class ArchitectureRun:
    """One architecture through train -> fuse -> quantize, each step run once, on first use."""

    def __init__(self, case: ArchitectureCase, root: Path, data: Path):
        self.case, self.root, self.data = case, root, data

    @cached_property
    def base(self) -> Path:
        """The tiny model with its output head scaled up: LoRA leaves the head frozen, and a random head (std 0.02)
        caps every logit near +-1, so no adapter could bring the loss down much (see tests/test_train.py)."""
        import torch

        from xllm_cli.tiny import build_model, build_tokenizer

        tokenizer = build_tokenizer()
        model = build_model(
            tokenizer, architecture=self.case.architecture, tie_word_embeddings=self.case.tie_word_embeddings
        )
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(25)
        path = self.root / "base"
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        return path

    def train_config(self, output: Path, packing: bool) -> XllmConfig:
        return XllmConfig(
            model_name_or_path=str(self.base),
            dataset_key="general",
            train_local_path_to_data=str(self.data),
            output_dir=str(output),
            apply_lora=True,  # default targets: every linear layer but the head
            packing=packing,
            max_length=128,
            per_device_train_batch_size=4,
            learning_rate=1e-2,
            max_steps=16,
            warmup_steps=0,
            logging_steps=1,
            save_steps=1000,
        )

    @cached_property
    def adapter(self) -> Path:
        from xllm_cli.training.run import train

        output = self.root / "adapter"
        train(self.train_config(output, packing=self.case.packing_refused is None))
        return output

    @cached_property
    def fused(self) -> Path:
        from xllm_cli.fuse import fuse

        output = self.root / "fused"
        fuse(
            XllmConfig(
                model_name_or_path=str(self.base),
                lora_model_local_path=str(self.adapter),
                fused_model_local_path=str(output),
                force_fp32=True,
            )
        )
        return output

    def quantize_config(self) -> XllmConfig:
        return XllmConfig(
            model_name_or_path=str(self.fused),
            quantization_dataset_id=str(self.data),
            quantized_model_path=str(self.root / "gptq"),
            **SMALL_GPTQ,
        )

    @cached_property
    def quantized(self) -> Path:
        from xllm_cli.quantize import quantize

        return quantize(self.quantize_config())


@pytest.fixture(scope="session")
def matrix_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("matrix") / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in demo_records()[:8] * 4))
    return path


@pytest.fixture(scope="session")
def runs() -> dict[str, ArchitectureRun]:
    return {}


@pytest.fixture
def run(request, runs, matrix_data, tmp_path_factory) -> ArchitectureRun:
    case = request.param
    if case.id not in runs:
        runs[case.id] = ArchitectureRun(case, tmp_path_factory.mktemp(case.id), matrix_data)
    return runs[case.id]


def logits(model_or_folder, tokenizer_folder: Path):
    """Next-token logits (float32) of a few demo texts, as one tensor."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = model_or_folder
    if isinstance(model, (str, Path)):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    with torch.no_grad():
        return torch.cat([model(**tokenizer(text, return_tensors="pt")).logits[0].float() for text in demo_texts()[:4]])


@pytest.mark.parametrize("run", CASES, indirect=True)
def test_lora_with_default_targets_trains(run):
    losses = [row["loss"] for row in json.loads((run.adapter / "training_log.json").read_text()) if "loss" in row]
    assert len(losses) == 16
    first, last = mean(losses[:3]), mean(losses[-3:])
    assert last < 0.7 * first, f"{run.case.id}: loss did not fall: {losses}"
    targets = json.loads((run.adapter / "adapter_config.json").read_text())["target_modules"]
    head = run.case.architecture == "gpt_neox" and "embed_out" or "lm_head"
    assert targets and head not in targets


@pytest.mark.parametrize("run", CASES, indirect=True)
def test_fused_model_computes_what_peft_merge_computes(run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(run.base, dtype=torch.float32)
    base_logits = logits(base, run.base)
    merged = PeftModel.from_pretrained(base, run.adapter).merge_and_unload()
    expected = logits(merged, run.base)
    fused = logits(run.fused, run.fused)
    assert (expected - base_logits).abs().max() > 1e-2  # the adapter changes the model: the comparison means something
    assert (fused - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("run", CASES, indirect=True)
def test_gptq_quantized_model_loads_in_plain_transformers_and_follows_the_fused_model(run):
    import torch
    from transformers import AutoModelForCausalLM

    if run.case.quantize_refused:
        from xllm_cli.quantize import quantize

        config = run.quantize_config()
        with pytest.raises(ConfigError) as refused:
            quantize(config)
        message = str(refused.value)
        assert run.case.quantize_refused in message and "\n" not in message
        assert message.startswith(f"quantize: {run.case.architecture} is not supported")
        assert not Path(config.quantized_model_path).exists()
        return
    model, info = AutoModelForCausalLM.from_pretrained(run.quantized, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    packed = [name for name, module in model.named_modules() if hasattr(module, "qweight")]
    floats = [name for name, module in model.named_modules() if type(module) is torch.nn.Linear]
    assert len(packed) >= 4 * model.config.num_hidden_layers  # every decoder linear is a GPTQ layer...
    assert floats in (["lm_head"], ["embed_out"])  # ...and only the output head stays in floating point
    quantized, fused, base = logits(model, run.quantized), logits(run.fused, run.fused), logits(run.base, run.base)
    spread = (fused - fused.mean(-1, keepdim=True)).norm()
    # 4-bit GPTQ moves these tiny models' logits by 0.4% to 8% of their spread (measured over the matrix), while
    # the LoRA update alone (base vs fused) moves them by over 100% and re-initialising one MLP, as a load with
    # missing weights does, by about 70%: 15% passes quantization error and fails a model that lost weights.
    assert (quantized - fused).norm() / spread < 0.15
    assert (base - fused).norm() / spread > 0.5
    assert (run.quantized / "quality.json").is_file()


@pytest.mark.parametrize("run", CASES, indirect=True)
def test_packed_samples_stay_isolated_or_packing_is_refused(run):
    import torch
    from transformers import AutoModelForCausalLM

    from xllm_cli.training.architecture import _ISOLATION, check_packing_isolation, packing_gaps

    model = AutoModelForCausalLM.from_pretrained(run.base, dtype=torch.float32)
    gap, shared_gap = packing_gaps(model)
    assert shared_gap > 1e-2  # a sample that sees another changes: the probe can see a leak
    if run.case.packing_refused is None:
        assert gap < 1e-4, gap
        check_packing_isolation(model)
        return
    assert gap > 0.5 * shared_gap
    _ISOLATION.clear()  # probe afresh, as a new process would
    output = run.root / "packed"
    from xllm_cli.training.run import train

    with pytest.raises(ConfigError) as refused:
        train(run.train_config(output, packing=True))
    assert run.case.packing_refused in str(refused.value) and "drop --packing" in str(refused.value)
    assert not (output / "adapter_model.safetensors").exists()


# --- the same refusals as a user meets them on the command line -------------------------------------------------------
def cases(*ids: str) -> list:
    return [pytest.param(case, id=case.id) for case in MATRIX if case.id in ids]


@pytest.mark.parametrize("run", cases("falcon"), indirect=True)
def test_cli_quantize_refuses_an_architecture_transformers_cannot_load_back_before_any_work(run, tmp_path):
    result = run_xllm(
        "quantize", "--model-name-or-path", str(run.base), "--quantization-dataset-id", str(run.data),
        "--quantized-model-path", "gptq", "--gptq-group-size", "32",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and run.case.quantize_refused in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "GPTQ:" not in result.stderr  # refused before quantizing
    assert not (tmp_path / "gptq").exists() and not list(tmp_path.glob(".gptq*"))


def xllm(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code, out + err


@pytest.mark.parametrize("run", cases("bloom"), indirect=True)
def test_cli_attention_the_model_lacks_names_what_it_supports_and_auto_picks_one_it_has(run, tmp_path, capsys):
    common = [
        "train", "--model-name-or-path", str(run.base), "--dataset-key", "general",
        "--train-local-path-to-data", str(run.data), "--output-dir", "out", "--apply-lora",
    ]  # fmt: skip
    code, output = xllm(capsys, *common, "--attn-implementation", "sdpa")
    assert code == 2
    assert "--attn-implementation sdpa: BloomForCausalLM does not support it; it supports eager" in output
    assert not (tmp_path / "out").exists()
    code, output = xllm(capsys, *common, "--max-steps", "2", "--per-device-train-batch-size", "2")
    assert code == 0, output
    assert "attention: eager (auto: the fastest BloomForCausalLM supports here)" in output


def test_cli_tiny_builds_the_architecture_asked_for(tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    code, output = xllm(capsys, "tiny", "gpt2-tiny", "--architecture", "gpt2", "--no-tie-word-embeddings")
    assert code == 0, output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "gpt2-tiny")
    assert model.config.model_type == "gpt2" and not model.config.tie_word_embeddings
    assert isinstance(model.transformer.h[0].attn.c_attn, Conv1D) and model.lm_head.weight.dtype == torch.float32
    code, output = xllm(capsys, "tiny", "other", "--architecture", "gpt3")
    assert code == 2 and "did you mean 'gpt2'" in output and not (tmp_path / "other").exists()


@pytest.mark.parametrize(("architecture", "isolated"), [("llama", True), ("opt", False)])
def test_weights_partitioned_away_as_under_zero3_are_probed_on_a_tiny_twin_of_the_class(architecture, isolated):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from xllm_cli.tiny import ARCHITECTURES, build_tokenizer
    from xllm_cli.training.architecture import packing_leak

    tokenizer = build_tokenizer()
    config = AutoConfig.for_model(architecture, vocab_size=len(tokenizer), **ARCHITECTURES[architecture](64, 2))
    with torch.device("meta"):  # no weights on this process, like a ZeRO-3 rank before the engine gathers them
        model = AutoModelForCausalLM.from_config(config)
    leak = packing_leak(model)
    assert (leak is None) == isolated, leak
