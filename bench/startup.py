"""How fast ``xllm`` answers: median wall time of ``xllm --help``, ``xllm train --help`` and one completion request,
against ``python -c "from transformers import Trainer"`` (roughly what the original tool paid before doing anything).

Targets: ``xllm --help`` at most 0.3 s and at least 10 times faster than that import; a completion request (one TAB)
at most 0.3 s. Run: ``make bench`` or ``.venv/bin/python bench/startup.py [--runs N] [--check]``; ``--check`` exits 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
XLLM = str(BIN / "xllm")
HELP_TARGET_S = 0.3
COMPLETION_TARGET_S = 0.3
MIN_SPEEDUP = 10.0


def median_wall_time(command: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median seconds of ``runs`` runs, after one untimed warm-up run (fills the OS file cache and .pyc files)."""
    full_env = {**os.environ, **(env or {})}
    times = []
    for attempt in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(command, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        if attempt:
            times.append(elapsed)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="timed runs per xllm command (median reported)")
    parser.add_argument("--import-runs", type=int, default=3, help="timed runs of the transformers import")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    completion_env = {"_XLLM_COMPLETE": "complete_bash", "COMP_WORDS": "xllm train --dataset-key ", "COMP_CWORD": "3"}
    results = {
        "xllm --help": median_wall_time([XLLM, "--help"], args.runs),
        "xllm train --help": median_wall_time([XLLM, "train", "--help"], args.runs),
        "completion (TAB)": median_wall_time([XLLM], args.runs, env=completion_env),
    }
    baseline_name = 'python -c "from transformers import Trainer"'
    baseline = median_wall_time([sys.executable, "-c", "from transformers import Trainer"], args.import_runs)

    print(f"median wall time over {args.runs} runs ({os.cpu_count()} CPUs)")
    for name, seconds in results.items():
        print(f"  {name:<22} {seconds:6.3f} s   {baseline / seconds:5.1f}x faster than the import")
    print(f"  {baseline_name:<22} {baseline:6.3f} s")

    checks = {
        f"xllm --help <= {HELP_TARGET_S} s": results["xllm --help"] <= HELP_TARGET_S,
        f"xllm --help >= {MIN_SPEEDUP:.0f}x faster than the import": baseline / results["xllm --help"] >= MIN_SPEEDUP,
        f"completion <= {COMPLETION_TARGET_S} s": results["completion (TAB)"] <= COMPLETION_TARGET_S,
    }
    for name, met in checks.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")
    return 1 if args.check and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
