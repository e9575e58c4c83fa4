"""Benchmark ``xllm fuse``: peak memory and time of the streaming merge against peft's load + ``merge_and_unload``.

One run builds a Llama-style model of about 1.2 GB (fp32) saved in at least 8 safetensors shards and a LoRA adapter on
every linear layer, then fuses it twice, each in a fresh process whose peak RSS is read from the kernel (``wait4``):
once shard by shard (xllm's streaming path) and once through peft (xllm's fallback path: whole model in memory,
``merge_and_unload``, save). It prints both, the ratio, and whether the two outputs are identical tensor by tensor.

Target: the streaming peak at most half of the peft peak, with identical weights. Run: ``make bench`` or
``.venv/bin/python bench/fuse.py [--hidden 2048 --layers 8 --shard-size 150MB] [--check]`` (``--check`` exits 1 when
a target is missed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys
from xllm_cli.settings import XllmConfig
import xllm_cli.fuse as fuse_module

base, adapter, output, path, shard_size = sys.argv[1:6]
if path == "peft":  # the same fuse() call, with the streaming path ruled out
    fuse_module.streaming_blocker = lambda adapter, base_tensors: "benchmarking the peft path"
config = XllmConfig(
    model_name_or_path=base, lora_model_local_path=adapter, fused_model_local_path=output,
    force_fp32=True, max_shard_size=shard_size,
)
fuse_module.fuse(config)
"""

BUILD = r"""
import sys, torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
from xllm_cli.tiny import build_tokenizer

hidden, layers, base, adapter, shard_size = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
tokenizer = build_tokenizer()
config = LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
    num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=False,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
)
torch.manual_seed(0)
with torch.device("meta"):
    model = LlamaForCausalLM(config)
model = model.to_empty(device="cpu")
for parameter in model.parameters():  # random weights, fast: no init schemes needed for a memory benchmark
    torch.nn.init.normal_(parameter, std=0.02)
model.save_pretrained(base, max_shard_size=shard_size)
tokenizer.save_pretrained(base)
lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
get_peft_model(model, lora).save_pretrained(adapter)
"""


def run_measured(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a fresh Python process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark child failed:\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux: KiB


def identical(first: Path, second: Path) -> bool:
    """Every tensor of both checkpoints equal, read one tensor at a time."""
    import torch
    from safetensors import safe_open

    def tensor_files(folder: Path) -> dict[str, Path]:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return {name: folder / file for name, file in json.loads(index.read_text())["weight_map"].items()}
        with safe_open(folder / "model.safetensors", "pt") as weights:
            return dict.fromkeys(weights.keys(), folder / "model.safetensors")  # noqa: SIM118

    left, right = tensor_files(first), tensor_files(second)
    if left.keys() != right.keys():
        return False
    for name in left:
        with safe_open(left[name], "pt") as a, safe_open(right[name], "pt") as b:
            if not torch.equal(a.get_tensor(name), b.get_tensor(name)):
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--shard-size", default="150MB")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/results.json")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xllm-bench-fuse-") as tmp:
        root = Path(tmp)
        base, adapter = root / "base", root / "adapter"
        build = [str(options.hidden), str(options.layers), str(base), str(adapter), options.shard_size]
        build_seconds, _ = run_measured([BUILD, *build])
        shards = len(list(base.glob("*.safetensors")))
        size_mib = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**20
        print(f"model: {size_mib:,.0f} MiB in {shards} shards (built in {build_seconds:.0f}s)")
        results = {}
        for path in ("streaming", "peft"):
            output = root / path
            results[path] = run_measured([CHILD, str(base), str(adapter), str(output), path, options.shard_size])
            print(f"{path:>9}: {results[path][0]:6.1f}s  peak RSS {results[path][1]:8,.0f} MiB")
        same = identical(root / "streaming", root / "peft")
    ratio = results["streaming"][1] / results["peft"][1]
    print(
        f"peak memory streaming / peft: {ratio:.2f} (target <= 0.50)   time ratio: "
        f"{results['streaming'][0] / results['peft'][0]:.2f}   weights identical: {same}"
    )
    met = ratio <= 0.5 and same and shards >= 8
    print("target met" if met else "target MISSED")
    if not options.no_record:
        from results import record, row

        record(
            "fuse",
            f"`xllm fuse`: peak memory merging LoRA into a {size_mib:,.0f} MiB model in {shards} shards",
            [
                row(
                    "streaming merge (shard by shard), peak RSS",
                    f"{results['streaming'][1]:,.0f} MiB",
                    f"{results['peft'][1]:,.0f} MiB (peft merge_and_unload)",
                    f"{ratio:.2f}" + ("" if same else " (weights differ!)"),
                    "<= 0.50, identical weights",
                    met,
                )
            ],
        )
    return 0 if met or not options.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
