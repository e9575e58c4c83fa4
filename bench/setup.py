"""The fixed cost of a run: wall time of ``xllm train --max-steps 1`` against ``bench/plain.py`` (transformers + peft
alone) on the same tiny model, data and LoRA settings, each saving its adapter and tokenizer, in fresh processes.

One step on the tiny model takes milliseconds, so each wall time is nearly all fixed cost: Python start-up, imports,
reading and tokenizing the data, loading the model, building the Trainer and saving. The two alternate ``--repeats``
times (each xllm run with an empty cache folder, so it tokenizes as the plain script does) and the median counts.

Target: xllm's wall time at most the plain script's + 0.5 s. Run: ``make bench`` or
``.venv/bin/python bench/setup.py [--repeats 5] [--check] [--no-record]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plain import LORA, MAX_LENGTH, OPTIM
from results import record, row

BENCH = Path(__file__).resolve().parent
XLLM = str(Path(sys.executable).parent / "xllm")
TARGET_EXTRA_S = 0.5
BATCH = 8


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``command``; exits naming it when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def xllm_command(model: Path, data: Path, output: Path) -> list[str]:
    return [
        XLLM, "train", "--quiet",
        "--model-name-or-path", str(model), "--dataset-key", "general", "--train-local-path-to-data", str(data),
        "--apply-lora", "--lora-rank", str(LORA["r"]), "--lora-alpha", str(LORA["alpha"]),
        "--lora-dropout", str(LORA["dropout"]), "--max-length", str(MAX_LENGTH), "--optim", OPTIM,
        "--per-device-train-batch-size", str(BATCH), "--learning-rate", "2e-4", "--warmup-steps", "0",
        "--max-steps", "1", "--logging-steps", "1", "--output-dir", str(output),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--no-record", action="store_true", help=f"do not write {BENCH / 'results.json'}")
    options = parser.parse_args(argv)

    from train import varied_texts

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="xllm-bench-setup-") as folder:
        root = Path(folder)
        model = root / "model"
        timed([XLLM, "tiny", str(model)], env)  # in a child: this process stays free of torch and its warnings
        data = root / "train.jsonl"
        data.write_text("".join(json.dumps({"text_parts": [text]}) + "\n" for text in varied_texts(200)))
        runs = {
            "plain transformers + peft": lambda i: [sys.executable, str(BENCH / "plain.py"), str(model), str(data),
                                                    str(root / f"plain{i}"), "--steps", "1", "--batch", str(BATCH)],
            "xllm train": lambda i: xllm_command(model, data, root / f"xllm{i}"),
        }  # fmt: skip
        timed(runs["plain transformers + peft"]("-warmup"), env)  # fills the OS file cache for both
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for repeat in range(options.repeats):
            for name, command in runs.items():
                run_env = {**env, "XDG_CACHE_HOME": str(root / f"cache-{name[:4]}{repeat}")}
                times[name].append(timed(command(repeat), run_env))
                wall, cpu = times[name][-1]
                print(f"  {name:26s} run {repeat + 1}: {wall:6.2f} s wall {cpu:6.2f} s CPU")
    plain_wall = statistics.median(wall for wall, _ in times["plain transformers + peft"])
    xllm_wall = statistics.median(wall for wall, _ in times["xllm train"])
    plain_cpu = statistics.median(cpu for _, cpu in times["plain transformers + peft"])
    xllm_cpu = statistics.median(cpu for _, cpu in times["xllm train"])
    extra = xllm_wall - plain_wall
    met = extra <= TARGET_EXTRA_S
    load = os.getloadavg()[0]
    print(f"median of {options.repeats}; {os.cpu_count()} CPUs, load average {load:.1f} (wall time grows with load)")
    print(f"  plain transformers + peft  {plain_wall:6.2f} s wall {plain_cpu:6.2f} s CPU")
    print(f"  xllm train --max-steps 1   {xllm_wall:6.2f} s wall {xllm_cpu:6.2f} s CPU")
    print(
        f"xllm's extra fixed cost: {extra:+.2f} s wall ({xllm_wall / plain_wall:.2f}x), {xllm_cpu - plain_cpu:+.2f} s CPU"
    )
    print(f"target extra <= {TARGET_EXTRA_S} s: {'met' if met else 'MISSED'}")
    if not options.no_record:
        record(
            "setup",
            "Set-up cost of a run (1 training step on the tiny model, fresh processes)",
            [
                row(
                    "`xllm train --max-steps 1` wall time",
                    f"{xllm_wall:.2f} s",
                    f"{plain_wall:.2f} s (transformers + peft script)",
                    f"{extra:+.2f} s",
                    f"<= +{TARGET_EXTRA_S} s",
                    met,
                )
            ],
        )
    return 1 if options.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
