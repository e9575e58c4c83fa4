"""How long a fresh ``make install`` takes and how big the result is: a copy of the checkout's tracked files, no venv,
empty uv and pip caches (so every package is downloaded, as on a new machine), against a baseline of plain pip
installing the same lock from an empty cache in the same run.

Targets: the venv under 2.5 GB with a CPU torch and no CUDA package. Run: ``make bench`` or
``.venv/bin/python bench/install.py [--no-baseline]``. It needs the package index (nothing else of the network).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE_TARGET_GB = 2.5


def copy_checkout(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)


def folder_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e9


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain-pip baseline (about 3 minutes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xllm-install-bench-") as tmp:
        root = Path(tmp)
        checkout = root / "xllm"
        checkout.mkdir()
        copy_checkout(checkout)
        env = {**os.environ, "UV_CACHE_DIR": str(root / "uv-cache"), "PIP_NO_CACHE_DIR": "1"}
        env.pop("VIRTUAL_ENV", None)
        seconds = timed(["make", "install"], checkout, env)
        venv = checkout / ".venv"
        size = folder_gb(venv)
        listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list"], capture_output=True, text=True)
        cuda = [
            line.split()[0] for line in listed.stdout.splitlines() if line.lower().startswith(("nvidia-", "triton"))
        ]
        print(f"make install (cold caches): {seconds:6.1f} s, .venv {size:.2f} GB, CUDA packages: {len(cuda)}")
        ok = size < SIZE_TARGET_GB and not cuda
        if not args.no_baseline:
            base = root / "pip-venv"
            subprocess.run([sys.executable, "-m", "venv", str(base)], check=True)
            lock = (checkout / "lock" / "cpu.txt").read_text()
            requirements = root / "lock.txt"
            requirements.write_text(lock)
            pip_install = [str(base / "bin" / "pip"), "install", "--no-deps", "--retries", "1"]
            torch_index = ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
            baseline = timed([*pip_install, *torch_index, "-r", str(requirements)], root, env)
            print(
                f"pip install of the same lock (cold cache): {baseline:6.1f} s  -> make install is {baseline / seconds:.1f}x faster"
            )
        print(f"target: .venv < {SIZE_TARGET_GB} GB, no CUDA package: {'met' if ok else 'MISSED'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
