"""Benchmark dataset preparation: samples per second and peak memory for 1e5 and 1e6 lines of a local jsonl.

Each size runs in a fresh process (``general`` dataset, shuffle on, the same path as ``xllm download``) that reports
its peak RSS, and its RSS after imports, so the growth caused by preparing is visible on its own. Memory should
stay flat as the file grows 10 times: samples are streamed and the shuffle holds one bucket at a time.

    python bench/prepare.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from xllm_cli.settings import XllmConfig
from xllm_cli.data.prepare import prepare_dataset

def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

source, target = sys.argv[1], sys.argv[2]
config = XllmConfig(dataset_key="general", dataset_source=source, train_local_path_to_data=target, shuffle=True)
import xllm_cli.data.general, xllm_cli.console  # imports happen before the baseline
baseline = rss_mib()
start = time.perf_counter()
prepared = prepare_dataset(config)
seconds = time.perf_counter() - start
print(json.dumps({"samples": prepared.train_samples, "seconds": seconds, "baseline_mib": baseline, "peak_mib": rss_mib()}))
"""


def write_source(path: Path, lines: int) -> None:
    """Varied samples of ~150 bytes, like short instruction data."""
    with path.open("w") as handle:
        for i in range(lines):
            text = f"Question {i}: what is {i % 97} times {i % 13}? Answer: " + "word " * (5 + i % 20)
            handle.write(json.dumps({"text": text}) + "\n")


def measure(lines: int, folder: Path) -> dict:
    source = folder / f"source-{lines}.jsonl"
    write_source(source, lines)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(source), str(folder / f"train-{lines}.jsonl")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["file_mib"] = source.stat().st_size / 2**20
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print(f"{'lines':>10} {'file MiB':>9} {'samples/s':>10} {'peak RSS MiB':>13} {'growth MiB':>11}")
    with tempfile.TemporaryDirectory(prefix="xllm-bench-prepare-") as folder:
        for lines in args.sizes:
            r = measure(lines, Path(folder))
            growth = r["peak_mib"] - r["baseline_mib"]
            rate = r["samples"] / r["seconds"]
            print(f"{lines:>10,} {r['file_mib']:>9.1f} {rate:>10,.0f} {r['peak_mib']:>13.1f} {growth:>11.1f}")


if __name__ == "__main__":
    main()
