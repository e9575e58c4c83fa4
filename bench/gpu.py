"""The GPU path measured: tokens/s and peak memory of QLoRA on a ~1B-parameter Llama, four ways, in one run.

On a CUDA device this builds a randomly initialised Llama of about 1.1B parameters (TinyLlama's shape: hidden 2048,
22 layers, 32 heads, 4 key/value heads, vocabulary 32000) and trains a 4-bit QLoRA adapter on it for a fixed number
of steps, each run in a fresh process:

- ``plain HF QLoRA``: transformers + peft + bitsandbytes as their docs write it, padded batches (``bench/plain.py``);
- ``xllm padded``: ``xllm train --load-in-4bit --apply-lora``;
- ``xllm packed``: the same with ``--packing`` (flash-attention varlen when flash-attn is installed);
- ``xllm packed + Liger``: the same with ``--use-liger-kernel`` (needs ``pip install 'xllm-cli[gpu]'``).

Tokens/s counts non-padding tokens of the training loop (the Trainer's ``num_input_tokens_seen`` over its
``train_runtime``), peak memory is ``torch.cuda.max_memory_allocated``. The JSON (``--json``) holds every run and the
ratios to the plain baseline; the table goes into ``bench/results.json`` for ``docs/performance.md``.

``--dry-run`` runs the same code on CPU with the tiny model, 2 steps and every run in this process (seconds instead
of minutes); what needs CUDA is skipped and named: Liger (xllm refuses it, and the refusal is what the run records),
flash attention (auto picks sdpa), paged optimizer memory (unpaged on CPU) and CUDA peak memory (peak RSS instead).
The test suite runs it so this script cannot rot.

    python bench/gpu.py [--steps 30] [--json bench/gpu.json]
    python bench/gpu.py --dry-run --json /tmp/gpu-dry.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

BASELINE = "plain HF QLoRA"
RUNS = (BASELINE, "xllm padded", "xllm packed", "xllm packed + Liger")
# TinyLlama-1.1B's shape.
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}


@dataclass(frozen=True)
class Plan:
    """What one bench invocation trains: the same for every run."""

    steps: int
    batch: int
    max_length: int
    samples: int
    max_words: int
    lora_rank: int = 16


GPU_PLAN = Plan(steps=30, batch=4, max_length=2048, samples=2000, max_words=1500)
DRY_PLAN = Plan(steps=2, batch=2, max_length=128, samples=48, max_words=60, lora_rank=8)


def texts(plan: Plan, seed: int = 0) -> list[str]:
    """Log-uniform lengths from 8 words to ``plan.max_words``: many short samples, a few long ones (chat data)."""
    from xllm_cli.data.demo import demo_texts

    words = " ".join(demo_texts()).split()
    rng = random.Random(seed)
    lengths = [int(math.exp(rng.uniform(math.log(8), math.log(plan.max_words)))) for _ in range(plan.samples)]
    return [" ".join(rng.choices(words, k=length)) for length in lengths]


def build_llama_1b(path: Path) -> int:
    """A random-init ~1.1B Llama in bf16 with xllm's tiny tokenizer (token ids use a corner of the 32000-word
    vocabulary; the embedding and head still have their real size). Returns the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from xllm_cli.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(**LLAMA_1B, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(parameter.numel() for parameter in model.parameters())


def xllm_args(model: Path, data: Path, output: Path, plan: Plan, name: str) -> list[str]:
    args = [
        "--model-name-or-path", str(model), "--dataset-key", "general", "--train-local-path-to-data", str(data),
        "--output-dir", str(output), "--load-in-4bit", "--apply-lora", "--lora-rank", str(plan.lora_rank),
        "--max-length", str(plan.max_length), "--per-device-train-batch-size", str(plan.batch),
        "--max-steps", str(plan.steps), "--logging-steps", str(plan.steps), "--save-steps", str(10 * plan.steps),
        "--warmup-steps", "0", "--learning-rate", "2e-4", "--optim", "paged_adamw_8bit", "--quiet",
    ]  # fmt: skip
    if "packed" in name:
        args.append("--packing")
    if "Liger" in name:
        args.append("--use-liger-kernel")
    return args


def run(name: str, model: Path, data: Path, output: Path, plan: Plan) -> dict[str, Any]:
    """One run in this process: {"tokens_per_s", "peak_memory_gib", "memory", ...} or {"skipped": why}."""
    import torch

    from xllm_cli.errors import XllmError

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if name == BASELINE:
        from plain import plain_trainer_run, read_texts

        bf16 = {"bf16": True} if cuda and torch.cuda.is_bf16_supported() else {}
        speed = plain_trainer_run(
            model, read_texts(data), plan.steps, output, plan.batch, max_length=plan.max_length, load_in_4bit=True,
            lora_rank=plan.lora_rank, optim="paged_adamw_8bit", **bf16,
        )  # fmt: skip
    else:
        from xllm_cli.cli.steps import run_step

        try:
            run_step("train", xllm_args(model, data, output, plan, name))
        except XllmError as error:  # a refusal (Liger on CPU): what the user would read
            return {"skipped": str(error)}
        log = json.loads((output / "training_log.json").read_text())[-1]
        speed = log["num_input_tokens_seen"] / log["train_runtime"]
    result: dict[str, Any] = {"tokens_per_s": round(speed, 1), "seconds": round(time.perf_counter() - started, 1)}
    if cuda:
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        result["memory"] = "torch.cuda.max_memory_allocated"
    else:
        result["peak_memory_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
        result["memory"] = "peak RSS of the process (no CUDA)"
    gc.collect()
    return result


def run_isolated(name: str, model: Path, data: Path, output: Path, plan: Plan) -> dict[str, Any]:
    """``run`` in a fresh process (``--child``), so each peak memory is its own."""
    result_file = output.with_suffix(".result.json")
    command = [sys.executable, __file__, "--child", name, str(model), str(data), str(output), json.dumps(plan.__dict__)]
    done = subprocess.run([*command, str(result_file)], stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"failed": lines[-1] if lines else f"exit code {done.returncode}"}
    return json.loads(result_file.read_text())


def child(args: list[str]) -> int:
    """The body of ``run_isolated``'s process: NAME MODEL DATA OUTPUT PLAN_JSON RESULT_FILE."""
    from xllm_cli.cli import console

    console.install()  # as the command line does: library noise hidden
    name, model, data, output, plan, result_file = args
    result = run(name, Path(model), Path(data), Path(output), Plan(**json.loads(plan)))
    Path(result_file).write_text(json.dumps(result))
    return 0


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    base = results.get(BASELINE, {})
    found: dict[str, float] = {}
    for name, result in results.items():
        if name == BASELINE or "tokens_per_s" not in result or "tokens_per_s" not in base:
            continue
        found[f"{name} / {BASELINE} tokens/s"] = round(result["tokens_per_s"] / base["tokens_per_s"], 3)
        found[f"{name} / {BASELINE} peak memory"] = round(result["peak_memory_gib"] / base["peak_memory_gib"], 3)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, 2 steps, one process")
    parser.add_argument("--steps", type=int, help=f"training steps per run (default {GPU_PLAN.steps})")
    parser.add_argument("--json", type=Path, default=BENCH / "gpu.json", help="where the results go")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/results.json")
    parser.add_argument("--if-cuda", action="store_true", help="without CUDA, say so and exit 0 (make bench)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        return child(options.child)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not options.dry_run:
        if options.if_cuda:
            print("bench/gpu.py: no CUDA device here, skipped (--dry-run checks its code on CPU)")
            return 0
        print("bench/gpu.py needs a CUDA device; on CPU run it with --dry-run", file=sys.stderr)
        return 2
    plan = DRY_PLAN if options.dry_run else GPU_PLAN
    if options.steps:
        plan = Plan(**{**plan.__dict__, "steps": options.steps})
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from xllm_cli.cli import console

    console.install()  # as the command line does: library noise hidden
    with tempfile.TemporaryDirectory(prefix="xllm-bench-gpu-") as folder:
        root = Path(folder)
        os.environ["XDG_CACHE_HOME"] = str(root / "cache")  # tokenize into a throwaway cache
        model = root / "model"
        if options.dry_run:
            from safetensors.torch import load_file

            from xllm_cli.tiny import create_tiny_model

            create_tiny_model(model)
            parameters = sum(tensor.numel() for tensor in load_file(str(model / "model.safetensors")).values())
        else:
            parameters = build_llama_1b(model)
        data = root / "train.jsonl"
        data.write_text("".join(json.dumps({"text_parts": [text]}) + "\n" for text in texts(plan)))
        results: dict[str, dict[str, Any]] = {}
        for name in RUNS:
            output = root / name.replace(" ", "-").replace("+", "plus")
            runner = run if options.dry_run else run_isolated
            results[name] = runner(name, model, data, output, plan)
            print(f"  {name:22s} {describe(results[name])}", flush=True)
    report = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)",
        "dry_run": options.dry_run,
        "model": {"parameters": parameters, **({} if options.dry_run else LLAMA_1B)},
        "plan": plan.__dict__,
        "runs": results,
        "ratios": ratios(results),
        "skipped_on_cpu": [] if cuda else SKIPPED_ON_CPU,
    }
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(report, indent=2) + "\n")
    for name, value in report["ratios"].items():
        print(f"  {name}: {value:.2f}x")
    print(f"written: {options.json}")
    if cuda and not options.dry_run and not options.no_record:
        record_table(report)
    return 0


SKIPPED_ON_CPU = [
    "Liger kernels (Triton, CUDA only): xllm refuses --use-liger-kernel, the run records the refusal",
    "flash attention: --attn-implementation auto picks sdpa without CUDA and flash-attn",
    "paged optimizer memory: paged_adamw_8bit runs unpaged on CPU",
    "CUDA peak memory: peak RSS of the process instead",
]


def describe(result: dict[str, Any]) -> str:
    if "tokens_per_s" in result:
        return (
            f"{result['tokens_per_s']:10,.0f} tokens/s  peak {result['peak_memory_gib']:.2f} GiB ({result['memory']})"
        )
    return f"skipped: {result.get('skipped') or result.get('failed')}"


def record_table(report: dict[str, Any]) -> None:
    from results import record, row

    base = report["runs"][BASELINE]
    rows = []
    for name, result in report["runs"].items():
        if "tokens_per_s" not in result:
            rows.append(row(f"{name}", describe(result)))
            continue
        ratio = "" if name == BASELINE else f"{result['tokens_per_s'] / base['tokens_per_s']:.2f}x tokens/s"
        rows.append(
            row(name, f"{result['tokens_per_s']:,.0f} tokens/s, {result['peak_memory_gib']:.1f} GiB", "", ratio)
        )
    record("gpu", f"QLoRA on a random-init {report['model']['parameters'] / 1e9:.1f}B Llama, {report['device']}", rows)


if __name__ == "__main__":
    sys.exit(main())
