"""Resuming from a checkpoint on any set of processes: on one disk or one per node, on as many processes as the run
that wrote it or on another number.

Every process resolves ``--resume-from-checkpoint`` itself (``last`` is the newest complete ``checkpoint-N`` of its
own ``output_dir``, which is another folder on each node when ``output_dir`` is node-local), so before the engine
exists they compare what they found (``prepare_resume``): one checkpoint step for all, and every process holding the
files it will read. A DeepSpeed checkpoint keeps each process's slice of the optimizer states, which DeepSpeed loads
only on as many processes as wrote it; for another number xllm converts it once to DeepSpeed's universal checkpoint
(``<checkpoint>/<tag>_universal``, every state by parameter name) and has DeepSpeed load that
(``deepspeed_resume_settings``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.errors import ConfigError
from xllm_cli.settings.config import XllmConfig
from xllm_cli.training.distributed import (
    _initialised_dist,
    is_local_main_process,
    ranks_not_seeing_main_files,
    world_size,
)

TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last: a checkpoint without it was cut short
UNIVERSAL_SUFFIX = "_universal"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class ResumeError(ConfigError):
    """A checkpoint the processes cannot resume from; the processes agreed on it, so rank 0 says it for all."""

    shared_by = "run"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders holding the Trainer's state, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found) if (path / TRAINER_STATE).is_file()]


def checkpoint_to_resume(config: XllmConfig, warn: bool = False) -> Path | None:
    """The checkpoint folder ``--resume-from-checkpoint`` names on this process: a path, or ``last`` (the newest
    complete one in ``output_dir``; a newer folder cut short while saving is passed over, with a warning if ``warn``)."""
    wanted = config.resume_from_checkpoint
    if not wanted:
        return None
    if wanted != "last":
        if not Path(wanted).is_dir():
            raise ConfigError(f"--resume-from-checkpoint: no such checkpoint folder {wanted}")
        return Path(wanted)
    output_dir = Path(config.output_dir)
    complete = complete_checkpoints(output_dir)
    if not complete:
        raise ConfigError(f"--resume-from-checkpoint last: no checkpoint-* folder in {config.output_dir}")
    newest = max((p for p in output_dir.glob("checkpoint-*") if _CHECKPOINT.match(p.name)), key=_step)
    if warn and newest != complete[-1]:
        console.warn(f"{newest} has no {TRAINER_STATE} (cut short while saving): resuming from {complete[-1].name}")
    return complete[-1]


def _step(folder: Path) -> int:
    match = _CHECKPOINT.match(folder.name)
    return int(match.group(1)) if match else -1


def prepare_resume(config: XllmConfig) -> None:
    """Before the model and engine exist, on every process: agree on the checkpoint and make it loadable here.

    Collective once several processes run: each one calls it. Raises ``ResumeError`` (the same on every process)
    when they found different checkpoints or one of them lacks its files.
    """
    if not config.resume_from_checkpoint:
        return
    try:
        found, problem = checkpoint_to_resume(config, warn=True), None
    except ConfigError as error:
        found, problem = None, str(error)
    agree(problem)
    steps = all_processes(_step(found) if found is not None else -1)
    if len(set(steps)) > 1:
        listed = ", ".join(f"rank {rank}: checkpoint-{step}" for rank, step in enumerate(steps))
        raise ResumeError(
            f"--resume-from-checkpoint {config.resume_from_checkpoint}: the processes found different checkpoints "
            f"({listed}); resume from one step on every node (a shared --output-dir, or the same checkpoint-N "
            f"folder complete on each node)"
        )
    if found is None or not config.uses_deepspeed:
        return  # without DeepSpeed the Trainer's checkpoints hold whole states, which any number of processes loads
    tag_dir, problem = _deepspeed_tag_dir(found)
    agree(problem)
    try:
        saved, problem = saved_world_size(tag_dir), None
    except ResumeError as error:
        saved, problem = 0, str(error)
    agree(problem)
    if saved == world_size():
        agree(_missing_own_shard(tag_dir))
        return
    _convert_to_universal(config, found, tag_dir, saved)


def deepspeed_resume_settings(config: XllmConfig) -> dict[str, Any]:
    """What the DeepSpeed config needs to resume: ``load_universal`` when the checkpoint was written by another
    number of processes (``prepare_resume`` converted it); nothing otherwise."""
    try:
        found = checkpoint_to_resume(config)
    except ConfigError:
        return {}
    if found is None:
        return {}
    tag_dir, problem = _deepspeed_tag_dir(found)
    if problem is not None or saved_world_size(tag_dir) == world_size():
        return {}
    return {"checkpoint": {"load_universal": True}}


def saved_world_size(tag_dir: Path) -> int:
    """How many processes wrote the DeepSpeed checkpoint in ``tag_dir`` (``global_stepN``), as DeepSpeed recorded it."""
    import torch

    files = sorted(tag_dir.glob("mp_rank_*_model_states.pt")) or sorted(tag_dir.glob("*model_states.pt"))
    if not files:
        raise ResumeError(f"{tag_dir}: no DeepSpeed model states (*model_states.pt); the checkpoint is incomplete")
    # mmap: the file may hold every weight; only one number is read.
    states = torch.load(files[0], map_location="cpu", mmap=True, weights_only=False)
    return int(states["dp_world_size"])


def _deepspeed_tag_dir(checkpoint: Path) -> tuple[Path, str | None]:
    """The DeepSpeed folder (``global_stepN``) that ``latest`` names in ``checkpoint``, or what is wrong."""
    latest = checkpoint / "latest"
    tags = [p for p in checkpoint.glob("global_step*") if p.is_dir() and not p.name.endswith(UNIVERSAL_SUFFIX)]
    if not latest.is_file() and len(tags) == 1:
        # DeepSpeed writes 'latest' on global rank 0 only, even when each node saves on its own disk
        # (use_node_local_storage): the other nodes' copies need it to load.
        temporary = latest.with_name(f".latest.tmp-{os.getpid()}")
        temporary.write_text(tags[0].name)
        os.replace(temporary, latest)
    if not latest.is_file():
        return (
            checkpoint,
            f"{checkpoint} holds no DeepSpeed checkpoint (no global_step* folder): it was written without DeepSpeed",
        )
    tag_dir = checkpoint / latest.read_text().strip()
    if not tag_dir.is_dir():
        return tag_dir, f"{checkpoint}: 'latest' names {tag_dir.name}, which is not there"
    return tag_dir, None


def _shard_files(tag_dir: Path) -> list[Path]:
    return sorted(tag_dir.glob("*zero_pp_rank_*_mp_rank_*_optim_states.pt"))


def _missing_own_shard(tag_dir: Path) -> str | None:
    dist = _initialised_dist()
    rank = dist.get_rank() if dist is not None else 0
    if list(tag_dir.glob(f"*zero_pp_rank_{rank}_mp_rank_*_optim_states.pt")):
        return None
    return (
        f"rank {rank} finds no optimizer shard of its own (zero_pp_rank_{rank}_*) in {tag_dir}: with a node-local "
        f"--output-dir every node must come back with the node rank it had (torchrun's c10d ranks nodes by host name: "
        f"the same hosts), or copy every node's {tag_dir.name}/ files into each node's folder"
    )


def _convert_to_universal(config: XllmConfig, checkpoint: Path, tag_dir: Path, saved: int) -> None:
    """Convert ``tag_dir`` into ``<tag>_universal`` once: global rank 0 on a shared output_dir, the first process of
    each node on node-local ones, while the others wait."""
    now = world_size()
    universal = tag_dir.with_name(tag_dir.name + UNIVERSAL_SUFFIX)
    shards = _shard_files(tag_dir)
    agree(
        None
        if len(shards) >= saved
        else f"{checkpoint} was written by {saved} processes and this run has {now}: DeepSpeed must convert it to its "
        f"universal checkpoint, which needs the optimizer shards of all {saved} in {tag_dir}, and {len(shards)} "
        f"are there (the others are on the other nodes' disks): copy them there, or resume on {saved} processes"
    )
    dist = _initialised_dist()
    shared = not ranks_not_seeing_main_files(config.output_dir)
    converts = (dist is None or dist.get_rank() == 0) if shared else is_local_main_process()
    problem = None
    if converts and not _is_converted(universal):
        console.info(
            f"{checkpoint.name} was written by {saved} process(es) and this run has {now}: converting it to "
            f"DeepSpeed's universal checkpoint ({universal.name}) to resume",
            every_process=not shared,
        )
        problem = _run_conversion(tag_dir, universal)
    agree(problem)  # also makes the others wait until the conversion is done


def _is_converted(universal: Path) -> bool:
    latest = universal.parent / "latest_universal"
    return universal.is_dir() and latest.is_file() and latest.read_text().strip() == universal.name


def _run_conversion(tag_dir: Path, universal: Path) -> str | None:
    """DeepSpeed's converter, in a process of its own (it starts worker pools), into a temporary folder renamed
    when complete; ``None``, or what went wrong."""
    partial = universal.with_name(f"{universal.name}.tmp-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    workers = str(max(1, min(4, (os.cpu_count() or 2) // 2)))
    command = [
        sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(tag_dir),
        "--output_folder", str(partial), "--inject_missing_state",
        "--num_extract_workers", workers, "--num_merge_workers", workers,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        return (
            f"converting {tag_dir} to DeepSpeed's universal checkpoint failed: {lines[-1] if lines else result.returncode}"
            f"; resume on as many processes as wrote it"
        )
    shutil.rmtree(universal, ignore_errors=True)
    os.replace(partial, universal)
    latest = universal.parent / "latest_universal"  # the converter named the temporary folder
    temporary = latest.with_name(f".latest_universal.tmp-{os.getpid()}")
    temporary.write_text(universal.name)
    os.replace(temporary, latest)
    return None


def all_processes(value: Any) -> list[Any]:
    """``value`` from every process, in rank order (``[value]`` for one process)."""
    dist = _initialised_dist()
    if dist is None or dist.get_world_size() <= 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def agree(problem: str | None) -> None:
    """Raise the first process's problem on every process (a failure on one would leave the others waiting)."""
    problems = [(rank, text) for rank, text in enumerate(all_processes(problem)) if text]
    if not problems:
        return
    rank, text = problems[0]
    if len({text for _, text in problems}) == 1 and len(problems) == world_size() or text.startswith("rank "):
        raise ResumeError(text)  # the same everywhere, or it names its rank already
    raise ResumeError(f"rank {rank}: {text}")
