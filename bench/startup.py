"""How fast ``xllm`` answers: median wall time of ``xllm --help``, ``xllm train --help`` and one completion request,
against ``python -c "from transformers import Trainer"`` (roughly what the original tool paid before doing anything).

Targets: ``xllm --help`` at most 0.3 s and at least 10 times faster than that import; a completion request (one TAB)
at most 0.3 s. Run: ``make bench`` or ``.venv/bin/python bench/startup.py [--runs N] [--check]``; ``--check`` exits 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def median_times(command: list[str], runs: int, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``runs`` runs, after one untimed warm-up run (fills the OS file cache).

    CPU time (user + system of the child) is printed too: on a machine shared with other work it stays close to
    the idle wall time while wall time stretches."""
    full_env = {**os.environ, **(env or {})}
    wall, cpu = [], []
    for attempt in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        if attempt:
            wall.append(elapsed)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="timed runs per xllm command (median reported)")
    parser.add_argument("--import-runs", type=int, default=3, help="timed runs of the transformers import")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    completion_env = {"_XLLM_COMPLETE": "complete_bash", "COMP_WORDS": "xllm train --dataset-key ", "COMP_CWORD": "3"}
    results = {
        "xllm --help": median_times([XLLM, "--help"], args.runs),
        "xllm train --help": median_times([XLLM, "train", "--help"], args.runs),
        "completion (TAB)": median_times([XLLM], args.runs, env=completion_env),
    }
    baseline_name = 'python -c "from transformers import Trainer"'
    baseline, baseline_cpu = median_times([sys.executable, "-c", "from transformers import Trainer"], args.import_runs)

    load = os.getloadavg()[0]
    print(f"median over {args.runs} runs; {os.cpu_count()} CPUs, load average {load:.1f} (wall time grows with load)")
    print(f"  {'':<22} {'wall':>8} {'CPU':>8}   wall speed-up over the import")
    for name, (wall, cpu) in results.items():
        print(f"  {name:<22} {wall:6.3f} s {cpu:6.3f} s   {baseline / wall:5.1f}x")
    print(f"  {'transformers import':<22} {baseline:6.3f} s {baseline_cpu:6.3f} s   ({baseline_name})")

    help_wall = results["xllm --help"][0]
    checks = {
        f"xllm --help <= {HELP_TARGET_S} s": help_wall <= HELP_TARGET_S,
        f"xllm --help >= {MIN_SPEEDUP:.0f}x faster than the import": baseline / help_wall >= MIN_SPEEDUP,
        f"completion <= {COMPLETION_TARGET_S} s": results["completion (TAB)"][0] <= COMPLETION_TARGET_S,
    }
    for name, met in checks.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")
    return 1 if args.check and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
