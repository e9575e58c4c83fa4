"""The memory estimate (``xllm train --estimate``) against a measured training step of xllm's own run.

The run is ``Experiment.build()`` with the settings under test and one step of the Trainer's own ``compute_loss`` and
optimizer, after a warm-up step. Measured:

- weights: the storages of parameters, buffers and bitsandbytes' quantization constants;
- gradients: ``.grad`` after backward; optimizer states: the optimizer's state tensors;
- activations and the peak: on a GPU, torch's CUDA allocator counters (``memory_allocated`` after the forward pass,
  ``max_memory_allocated`` over the step); on a CPU, torch's CPU allocator events (the profiler's memory records).

On a GPU it also prints the memory the process holds beyond torch's allocations (CUDA context, workspaces, allocator
cache): what the estimate's CUDA overhead constant stands for. ``tests/test_estimate.py`` runs the CPU path.

    python bench/estimate.py [--model FOLDER] [--batch 2] [--length 64]   # default: a 56M-parameter Llama
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

SCENARIOS = {
    "full, adamw_torch": {"optim": "adamw_torch"},
    "LoRA, gradient checkpointing": {"apply_lora": True, "use_gradient_checkpointing": True},
    "QLoRA 4-bit": {"apply_lora": True, "load_in_4bit": True},
    "LoRA on 8-bit, gradient checkpointing": {
        "apply_lora": True,
        "load_in_8bit": True,
        "use_gradient_checkpointing": True,
    },
}
COMPONENTS = ("weights", "gradients", "optimizer", "activations", "peak")


def create_model(path: Path) -> Path:
    """A 56M-parameter Llama (hidden 512, 8 layers, vocabulary 32,000) with random weights and the tiny tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from xllm_cli.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def unique_bytes(tensors: Any) -> int:
    seen = {}
    for tensor in tensors:
        if tensor is not None:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def weight_tensors(model: Any) -> list:
    """Parameters, buffers, and what bitsandbytes keeps beside them: 4-bit quantization state, 8-bit ``state.CB``."""
    tensors = [*model.parameters(), *model.buffers()]
    for module in model.modules():
        quant_state = getattr(getattr(module, "weight", None), "quant_state", None)
        if quant_state is not None:
            tensors += [quant_state.absmax, quant_state.code, quant_state.offset]
            if quant_state.state2 is not None:
                tensors += [quant_state.state2.absmax, quant_state.state2.code]
        state = getattr(module, "state", None)
        if state is not None and hasattr(state, "CB"):
            tensors += [state.CB, state.SCB]
    return tensors


def measure_step(model_dir: Path, batch_size: int, length: int, **settings: Any) -> tuple[Any, dict[str, int]]:
    """(config, measured bytes) of one training step of xllm's own run."""
    import torch

    from xllm_cli.settings import XllmConfig
    from xllm_cli.training.experiment import Experiment

    config = XllmConfig(
        model_name_or_path=str(model_dir),
        per_device_train_batch_size=batch_size,
        max_length=length,
        output_dir=tempfile.mkdtemp(prefix="xllm-estimate-"),
        **settings,
    )
    experiment = Experiment(config, train_dataset=[{"text_parts": ["a b c", "d e f"]}] * 4).build()
    trainer, model = experiment.trainer, experiment.trainer.model
    optimizer = trainer.create_optimizer()
    device = next(model.parameters()).device
    ids = torch.randint(3, 500, (batch_size, length), generator=torch.Generator().manual_seed(0)).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    model.train()
    measured: dict[str, int] = {}

    def step(mark: Any) -> None:
        with mark("forward"):
            loss = trainer.compute_loss(model, batch)
        if device.type == "cuda" and "before" in measured:  # the measured step, not the warm-up
            measured["activations"] = torch.cuda.memory_allocated() - measured["before"]
        loss.backward()
        del loss
        measured["gradients"] = unique_bytes(p.grad for p in model.parameters())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        step(lambda name: contextlib.nullcontext())  # warm-up: optimizer states, 8-bit weight copies
        measured["weights"], measured["optimizer"] = _persistent(model, optimizer)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        measured["before"] = torch.cuda.memory_allocated()
        step(lambda name: contextlib.nullcontext())
        torch.cuda.synchronize()
        # Weights and optimizer states are allocated before the step; the peak counter covers everything.
        measured["peak"] = torch.cuda.max_memory_allocated()
        free, total = torch.cuda.mem_get_info()
        measured["outside torch"] = (total - free) - torch.cuda.memory_allocated()
        return config, measured
    return config, _measure_on_cpu(model, optimizer, step, measured)


def _persistent(model: Any, optimizer: Any) -> tuple[int, int]:
    import torch

    states = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return unique_bytes(weight_tensors(model)), unique_bytes(states)


def _measure_on_cpu(model: Any, optimizer: Any, step: Any, measured: dict[str, int]) -> dict[str, int]:
    from torch.profiler import ProfilerActivity, profile, record_function

    # The profiler sees only blocks allocated while it runs; the warm-up step runs under it too, so that what the
    # measured step frees (8-bit layers quantize their weight again at each forward) is accounted for.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step(lambda name: contextlib.nullcontext())
        measured["weights"], measured["optimizer"] = _persistent(model, optimizer)
        with record_function("step"):
            step(record_function)
    events = profiler.profiler.kineto_results.events()
    spans = {e.name(): (e.start_ns(), e.end_ns()) for e in events if e.name() in ("step", "forward")}
    allocations = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    live, start, peak = 0, None, 0
    for time, size in allocations:
        if start is None and time >= spans["step"][0]:
            start = live
        if "activations" not in measured and time > spans["forward"][1]:
            measured["activations"] = live - start
        live += size
        if start is not None and time <= spans["step"][1]:
            peak = max(peak, live - start)
    # Weights and optimizer states are there before the step; gradients, activations and temporaries come and go.
    measured["peak"] = measured["weights"] + measured["optimizer"] + peak
    return measured


def estimated(config: Any, model_dir: Path) -> dict[str, int]:
    """The estimate for this machine (CPU, or the visible GPU), without the CUDA overhead constant in the peak."""
    from xllm_cli.estimate import detect_target, estimate, load_model_config

    target = detect_target(None, 1, None, assume_gpu=False)
    memory = estimate(config, load_model_config(config), target, suggest=False).memory
    values = {name: getattr(memory, name) for name in COMPONENTS[:-1]}
    return values | {"peak": memory.total - memory.overhead, "overhead": memory.overhead}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: a 56M-parameter Llama built here)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=64)
    args = parser.parse_args(argv)
    model = args.model or create_model(Path(tempfile.mkdtemp(prefix="xllm-estimate-model-")))
    for name, settings in SCENARIOS.items():
        config, measured = measure_step(model, args.batch, args.length, **settings)
        estimate = estimated(config, model)
        print(f"{name}: batch {args.batch} × {args.length}")
        for component in COMPONENTS:
            ratio = estimate[component] / measured[component] if measured[component] else float("nan")
            print(
                f"  {component:<12} measured {measured[component]:>14,}  estimated {estimate[component]:>14,}  {ratio:.3f}"
            )
        if "outside torch" in measured:
            print(
                f"  held outside torch's allocations: {measured['outside torch']:,} (overhead constant {estimate['overhead']:,})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
