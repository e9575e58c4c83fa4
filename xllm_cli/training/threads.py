"""CPU threads per training process, chosen rather than inherited.

torch gives every process one thread per core. When several processes share a CPU node (DDP or DeepSpeed on CPU),
each then runs as many OpenMP threads as there are cores: they spin waiting for each other and a 0.6 s training loop
takes 28 s. So on a machine without CUDA each process takes ``cores // processes on this node`` threads, unless the
user says otherwise: ``--cpu-threads N``, or ``OMP_NUM_THREADS`` set in the environment. torchrun sets
``OMP_NUM_THREADS=1`` itself when it starts several processes; that is its default, not the user's choice, and is
replaced (the variable is read from the launcher's own starting environment to tell the two apart). The DeepSpeed
launcher sets nothing, unless asked to with ``--bind_cores_to_rank`` (then its value is kept).

With CUDA the CPU only feeds the device: torch's default (or the launcher's) is kept unless ``--cpu-threads`` is
given. The choice is applied to torch before the model loads and exported as ``OMP_NUM_THREADS`` for child processes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# How launchers tell a process the number of processes on its node: torchrun/accelerate, DeepSpeed, Open MPI,
# MPICH/Intel MPI, MVAPICH.
LOCAL_SIZE_VARIABLES = (
    "LOCAL_WORLD_SIZE",
    "LOCAL_SIZE",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "MPI_LOCALNRANKS",
    "MV2_COMM_WORLD_LOCAL_SIZE",
)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # None: left as torch (or the launcher) set it
    reason: str

    @property
    def line(self) -> str:
        if self.threads is None:
            return f"CPU threads: torch's default ({self.reason})"
        return f"CPU threads: {self.threads} per process ({self.reason})"


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (taskset, cgroup cpusets), counting physical cores only where
    hyper-threads pair them (two threads on one core gain little for matrix work)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        import psutil

        physical, total = psutil.cpu_count(logical=False), psutil.cpu_count(logical=True)
    except ImportError:  # psutil comes with accelerate; without it, count logical cores
        physical = total = None
    if physical and total and physical < total:
        logical = logical * physical // total
    return max(1, logical)


def local_processes(environ: Mapping[str, str]) -> int:
    """Processes on this node, as the launcher says (1 without a launcher)."""
    for name in LOCAL_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def set_by_torchrun(environ: Mapping[str, str], parent_environ: Path | None = None) -> bool:
    """True when ``OMP_NUM_THREADS`` comes from torchrun's default rather than from the user: this process runs under
    torchrun and torchrun itself started without the variable. Unknown (no /proc) counts as the user's."""
    if "TORCHELASTIC_RUN_ID" not in environ:
        return False
    path = parent_environ or Path(f"/proc/{os.getppid()}/environ")
    try:
        names = {entry.split(b"=", 1)[0] for entry in path.read_bytes().split(b"\0") if entry}
    except OSError:
        return False
    return b"OMP_NUM_THREADS" not in names


def choose_threads(
    requested: int | None, has_cuda: bool, environ: Mapping[str, str] = os.environ, cores: int | None = None
) -> ThreadChoice:
    """How many intra-op threads each process gets, and why (the reason is shown to the user)."""
    if requested:
        return ThreadChoice(requested, "--cpu-threads")
    user_value = environ.get("OMP_NUM_THREADS", "").strip()
    torchrun_default = bool(user_value) and set_by_torchrun(environ)
    if user_value and not torchrun_default:
        if user_value.isdigit() and int(user_value) > 0:
            return ThreadChoice(int(user_value), "OMP_NUM_THREADS")
        return ThreadChoice(None, f"OMP_NUM_THREADS={user_value!r} is not a positive number, so left to torch")
    if has_cuda:
        return ThreadChoice(None, "CUDA run; --cpu-threads N sets it")
    cores = cores or usable_cores()
    processes = local_processes(environ)
    reason = f"auto: {cores} core(s) / {processes} process(es) on this node"
    if torchrun_default:
        reason += f", instead of torchrun's OMP_NUM_THREADS={user_value}"
    return ThreadChoice(max(1, cores // processes), reason)


def apply_threads(choice: ThreadChoice) -> None:
    """Set torch's intra-op threads and ``OMP_NUM_THREADS`` for child processes (nothing when left to torch)."""
    if choice.threads is None:
        return
    import torch

    torch.set_num_threads(choice.threads)
    os.environ["OMP_NUM_THREADS"] = str(choice.threads)
