"""Training throughput: ``xllm train`` against a plain transformers Trainer script, and packing on against off.

Same model (the tiny Llama scaled up: hidden 256, 4 layers), same data (varied lengths), same batch size, same LoRA
settings and optimizer, all in this one invocation. The number compared is non-padding tokens per second of the
training loop (the Trainer's own ``num_input_tokens_seen`` with ``non_padding`` over ``train_runtime``), so model
loading and Python start-up do not blur it. Each configuration runs ``REPEATS`` times, alternating, and the median
counts: on a shared machine single runs of the same configuration differ by 10-20%, so a best-of-two compared noise.

Targets: xllm within 5% of the plain script; packing at least 1.5x the non-pad tokens/s of padded batches.

    python bench/train.py [--steps 8] [--repeats 5] [--check] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from plain import LORA, MAX_LENGTH, OPTIM, plain_trainer_run  # bench/plain.py: the same run with transformers alone
from results import record, row

BATCH = 8


def varied_texts(count: int, seed: int = 0) -> list[str]:
    """Texts of 8 to 220 words from the demo vocabulary, log-uniformly: many short samples and a few long ones, as
    in real instruction and chat data, so padding to the longest sample of a batch wastes most of each batch."""
    import math

    from xllm_cli.data.demo import demo_texts

    words = " ".join(demo_texts()).split()
    rng = random.Random(seed)
    lengths = [int(math.exp(rng.uniform(math.log(8), math.log(220)))) for _ in range(count)]
    return [" ".join(rng.choices(words, k=length)) for length in lengths]


def xllm_run(model_dir: Path, data: Path, steps: int, output: Path, packing: bool) -> float:
    """``xllm train`` as its library call (what the command runs after parsing flags)."""
    from xllm_cli.settings import XllmConfig
    from xllm_cli.training.run import train

    config = XllmConfig(
        model_name_or_path=str(model_dir),
        dataset_key="general",
        train_local_path_to_data=str(data),
        output_dir=str(output),
        per_device_train_batch_size=BATCH,
        max_length=MAX_LENGTH,
        max_steps=steps,
        logging_steps=steps,
        save_steps=10 * steps,
        warmup_steps=0,
        optim=OPTIM,
        apply_lora=True,
        lora_rank=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        packing=packing,
    )
    summary = json.loads((train(config) / "training_log.json").read_text())[-1]  # the end-of-training entry
    return summary["num_input_tokens_seen"] / summary["train_runtime"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/results.json")
    options = parser.parse_args()

    from xllm_cli import console
    from xllm_cli.tiny import create_tiny_model

    console.configure(quiet=True)
    with tempfile.TemporaryDirectory(prefix="xllm-bench-train-") as folder:
        root = Path(folder)
        model_dir = create_tiny_model(root / "model", hidden_size=256, num_layers=4)
        texts = varied_texts(options.samples)
        data = root / "train.jsonl"
        data.write_text("".join(json.dumps({"text_parts": [text]}) + "\n" for text in texts))
        runs = {
            "plain transformers": lambda i: plain_trainer_run(
                model_dir, texts, options.steps, root / f"plain{i}", BATCH
            ),
            "xllm": lambda i: xllm_run(model_dir, data, options.steps, root / f"xllm{i}", packing=False),
            "xllm --packing": lambda i: xllm_run(model_dir, data, options.steps, root / f"packed{i}", packing=True),
        }
        # One short untimed run first: the first training loop of a process pays one-time costs (kernel caches).
        plain_trainer_run(model_dir, texts, 2, root / "warmup", BATCH)
        speeds: dict[str, list[float]] = {}
        for repeat in range(options.repeats):
            for name, run in runs.items():
                started = time.perf_counter()
                speed = run(repeat)
                speeds.setdefault(name, []).append(speed)
                print(
                    f"  {name:20s} run {repeat + 1}: {speed:9.0f} non-pad tokens/s ({time.perf_counter() - started:.1f}s)"
                )
    plain, xllm, packed = (statistics.median(speeds[name]) for name in ("plain transformers", "xllm", "xllm --packing"))
    overhead = xllm / plain
    speedup = packed / xllm
    print(f"xllm vs plain Trainer: {xllm:.0f} vs {plain:.0f} tokens/s = {overhead:.3f}x (target >= 0.95)")
    print(f"packing on vs off:     {packed:.0f} vs {xllm:.0f} tokens/s = {speedup:.2f}x (target >= 1.5)")
    ok = overhead >= 0.95 and speedup >= 1.5
    print("targets met" if ok else "targets NOT met")
    if not options.no_record:
        title = f"Training loop: non-padding tokens/s, LoRA on a hidden-256 4-layer Llama, median of {options.repeats}"
        record(
            "train",
            title,
            [
                row(
                    "`xllm train`, padded batches",
                    f"{xllm:,.0f} tokens/s",
                    f"{plain:,.0f} (plain Trainer script)",
                    f"{overhead:.3f}x",
                    ">= 0.95x",
                    overhead >= 0.95,
                ),
                row(
                    "`xllm train --packing`",
                    f"{packed:,.0f} tokens/s",
                    f"{xllm:,.0f} (xllm padded)",
                    f"{speedup:.2f}x",
                    ">= 1.5x",
                    speedup >= 1.5,
                ),
            ],  # fmt: skip
        )
    return 1 if options.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
