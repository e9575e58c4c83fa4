"""CPU threads: two training processes on one CPU node, with the threads xllm chooses against every process taking
every core (torch's default, which the DeepSpeed launcher passes on), and one process alone on its share of cores.

Three runs of ``xllm train`` on the tiny model scaled up (hidden 256, 4 layers), in this one invocation:

- ``oversubscribed``: ``torchrun --nproc_per_node 2 xllm train --cpu-threads <all cores>``;
- ``chosen``: the same launch without ``--cpu-threads`` or ``OMP_NUM_THREADS``: xllm gives each process
  cores // 2 threads;
- ``alone``: one process with ``--cpu-threads <cores // 2>``: the speed each of the two should keep.

The number compared is non-padding tokens per second of the training loop per process. Targets: ``chosen`` per
process at least 0.7 of ``alone`` (two processes train at the speed of one process per share of cores; the rest is
DDP's gradient exchange) and faster than ``oversubscribed``. Run: ``make bench`` or
``.venv/bin/python bench/threads.py [--steps 20] [--check] [--no-record]``.
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

from results import record, row

BIN = Path(sys.executable).parent
XLLM = str(BIN / "xllm")
PROCESSES = 2
TARGET_SHARE = 0.7


def train(root: Path, name: str, launcher: list[str], steps: int, *flags: str) -> tuple[float, float, str]:
    """(tokens/s per process of the training loop, wall seconds, the CPU threads line) of one launch."""
    output = root / name
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(root / "cache"))
    command = [
        *launcher, XLLM, "train", "--model-name-or-path", str(root / "model"), "--dataset-key", "general",
        "--train-local-path-to-data", str(root / "train.jsonl"), "--output-dir", str(output), "--apply-lora",
        "--max-steps", str(steps), "--logging-steps", str(steps), "--save-steps", str(10 * steps),
        "--per-device-train-batch-size", "8", "--max-length", "256", "--warmup-steps", "0", "--optim", "adamw_torch",
        *flags,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    line = next((text for text in done.stderr.splitlines() if "CPU threads:" in text), "")
    summary = json.loads((output / "training_log.json").read_text())[-1]
    processes = PROCESSES if launcher[0].endswith("torchrun") else 1
    # num_input_tokens_seen is counted over every process.
    return summary["num_input_tokens_seen"] / summary["train_runtime"] / processes, wall, line.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/results.json")
    options = parser.parse_args(argv)

    from train import varied_texts

    from xllm_cli.training.distributed import free_port
    from xllm_cli.training.threads import usable_cores

    cores = usable_cores()
    share = max(1, cores // PROCESSES)
    with tempfile.TemporaryDirectory(prefix="xllm-bench-threads-") as folder:
        root = Path(folder)
        subprocess.run([XLLM, "tiny", str(root / "model"), "--hidden-size", "256", "--num-layers", "4"],
                       check=True, capture_output=True)  # fmt: skip
        texts = varied_texts(400)
        (root / "train.jsonl").write_text("".join(json.dumps({"text_parts": [text]}) + "\n" for text in texts))
        torchrun = [str(BIN / "torchrun"), "--nproc_per_node", str(PROCESSES), "--master_port", str(free_port())]
        runs = {
            f"oversubscribed: {PROCESSES} processes x {cores} threads": (torchrun, ["--cpu-threads", str(cores)]),
            f"chosen by xllm: {PROCESSES} processes x {share} thread(s)": (torchrun, []),
            f"alone: 1 process x {share} thread(s)": ([sys.executable], ["--cpu-threads", str(share)]),
        }
        results = {}
        for name, (launcher, flags) in runs.items():
            results[name] = train(root, name.split(":")[0].replace(" ", "-"), launcher, options.steps, *flags)
            speed, wall, line = results[name]
            print(f"  {name:42s} {speed:8.0f} tokens/s per process  ({wall:.0f} s wall)  {line}")
    (over, _, _), (chosen, _, _), (alone, _, _) = results.values()
    share_kept = chosen / alone
    met = share_kept >= TARGET_SHARE and chosen > over
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the machine slows every run)")
    print(f"chosen vs oversubscribed: {chosen / over:.1f}x tokens/s per process")
    print(f"chosen vs one process alone on its share: {share_kept:.2f} (target >= {TARGET_SHARE})")
    print("targets met" if met else "targets NOT met")
    if not options.no_record:
        record(
            "threads",
            f"CPU threads: {PROCESSES} training processes on {cores} cores (torchrun, DDP, tiny model)",
            [
                row(
                    f"{PROCESSES} processes, threads chosen by xllm ({share} each), tokens/s per process",
                    f"{chosen:,.0f}",
                    f"{over:,.0f} ({cores} threads each, oversubscribed)",
                    f"{chosen / over:.1f}x",
                    "faster",
                    chosen > over,
                ),
                row(
                    "the same against one process alone on its share of cores",
                    f"{chosen:,.0f}",
                    f"{alone:,.0f} (1 process, {share} thread(s))",
                    f"{share_kept:.2f}",
                    f">= {TARGET_SHARE}",
                    share_kept >= TARGET_SHARE,
                ),
            ],
        )
    return 1 if options.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
