"""Running on several processes: DeepSpeed (ZeRO 1-3), torchrun (DDP) and FSDP, through the engines themselves.

xllm never schedules processes itself. A launcher starts one process per device and tells each who it is:
``deepspeed`` passes ``--local_rank=N`` (normalized to ``--local-rank``) and sets ``LOCAL_RANK``/``RANK``/
``WORLD_SIZE``; ``torchrun`` sets the variables only. This module turns xllm's settings into what the Trainer
expects (``distributed_arguments``), sets up communication before the model exists (``init_distributed``) and lets
one process do shared work while the others wait (``main_process_first``).

Heavy libraries are imported inside the functions: the CLI imports the training package lazily, but this module is
small enough that a plugin may import it for ``is_main_process`` (the console's, by rank) without paying for torch.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.console import is_local_main_process, is_main_process  # noqa: F401 - re-exported for plugins
from xllm_cli.errors import ConfigError, XllmError, did_you_mean, first_line
from xllm_cli.settings.config import XllmConfig

# Sharding strategies the Trainer's FSDP accepts. FSDP2 (the default and the future) knows only the first two;
# the hybrid ones and no_shard exist in FSDP1 only, which transformers still runs but deprecates.
FSDP2_RESHARD = {"full_shard": True, "shard_grad_op": False}
FSDP1_ONLY = ("hybrid_shard", "hybrid_shard_zero2", "no_shard")
FSDP_WORDS = (*FSDP2_RESHARD, *FSDP1_ONLY, "offload", "auto_wrap")


def world_size() -> int:
    """Number of processes in the run (1 when not launched by deepspeed/torchrun)."""
    dist = _initialised_dist()
    if dist is not None:
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_distributed(config: XllmConfig) -> None:
    """Set up inter-process communication, before the model is built.

    Under DeepSpeed this must come first: ZeRO-3 partitions the weights while ``from_pretrained`` creates them, which
    needs the process group. For plain DDP (torchrun) the group is created here too, so ``main_process_first`` works
    from the first step on (the Trainer reuses an initialised group). A single process does nothing. A process that
    waits longer than ``--ddp-timeout`` for the others fails with one line saying who is missing.
    """
    # The deepspeed launcher sets LOCAL_RANK as well as passing --local_rank; a hand-written launch may only pass the
    # flag. transformers and accelerate read the variable.
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(config.local_rank)
    if world_size() <= 1 and not config.uses_deepspeed:
        return
    import torch

    has_cuda = torch.cuda.is_available()
    if has_cuda:
        # Each process owns one device; NCCL collectives (the first barrier included) must run on it.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", config.local_rank)))
    backend = "nccl" if has_cuda else "gloo"
    timeout = timedelta(seconds=config.ddp_timeout)
    _default_group_timeout(timeout)
    try:
        if config.uses_deepspeed:
            import deepspeed

            # Without a launcher (one process, `xllm train --deepspeed-stage 2`), DeepSpeed needs a rendezvous of one.
            _single_process_rendezvous()
            deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
        else:
            import torch.distributed as dist

            if has_cuda and config.fsdp_strategy.strip():
                # FSDP moves CPU tensors between processes (offload, full-state-dict saving): gloo for those, as
                # accelerate would choose had it created the group.
                backend = "cuda:nccl,cpu:gloo"
            if not dist.is_initialized():
                dist.init_process_group(backend=backend, timeout=timeout)
    except torch.distributed.DistError as error:
        raise ProcessesNotConnected(joining_failure(error, config.ddp_timeout)) from None
    # One line that says which engine really runs, so a forgotten --deepspeed-stage under the deepspeed launcher
    # (plain DDP) is visible.
    console.info(f"distributed: {world_size()} process(es), {engine_name(config)}, {backend} communication")


def _default_group_timeout(timeout: timedelta) -> None:
    """Make ``timeout`` the default of every process group created later, not only of the first: DeepSpeed creates
    its own groups (data parallel, ...) without one, so a process that died before they form would otherwise keep
    the others waiting torch's default (30 min with gloo)."""
    import torch.distributed.distributed_c10d as c10d

    c10d.default_pg_timeout = timeout
    if isinstance(c10d.default_pg_nccl_timeout, timedelta):
        c10d.default_pg_nccl_timeout = timeout


class ProcessesNotConnected(XllmError):
    """The processes of a run did not all meet within --ddp-timeout (a node never started, a wrong address)."""


def joining_failure(error: BaseException, timeout_s: int) -> str:
    """One line for a process group that could not form, from torch's store errors."""
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    size = os.environ.get("WORLD_SIZE", "?")
    text = first_line(error)
    joined = re.search(r"(\d+)/(\d+) clients joined", text)
    if joined:  # the main process, which hosts the meeting point
        return (
            f"only {joined.group(1)} of the {joined.group(2)} processes joined the run at {where} within "
            f"--ddp-timeout {timeout_s} s: start every node with the same launch command (same master address, port "
            f"and number of nodes), or raise --ddp-timeout"
        )
    if "timed out" in text.lower():  # any other process: the main one never answered
        return (
            f"the run's main process (rank 0) at {where} did not answer within --ddp-timeout {timeout_s} s: start the "
            f"first node too, check the master address and port, or raise --ddp-timeout"
        )
    return f"the {size} processes of the run could not connect at {where}: {text}"


def engine_name(config: XllmConfig) -> str:
    if config.deepspeed_config_path:
        return f"DeepSpeed with {config.deepspeed_config_path}"
    if config.deepspeed_stage > 0:
        offload = " with CPU offload" if getattr(config, "deepspeed_offload", False) else ""
        return f"DeepSpeed ZeRO-{config.deepspeed_stage}{offload}"
    if config.fsdp_strategy.strip():
        return f"FSDP ({config.fsdp_strategy.strip()})"
    return "DDP (every process holds the whole model)"


def _single_process_rendezvous() -> None:
    if "WORLD_SIZE" in os.environ:
        return
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def free_port() -> int:
    """A TCP port nobody listens on now, for a rendezvous on this machine."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def distributed_arguments(config: XllmConfig, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Extra ``TrainingArguments`` keyword arguments for several processes: the engine (DeepSpeed or FSDP), and
    checkpoints on every node when ``output_dir`` is not shared; ``{}`` for one process or plain DDP on one disk.

    Build the ``TrainingArguments`` with these before the model: under ZeRO-3 their existence makes
    ``from_pretrained`` partition the weights as it loads them.
    """
    arguments: dict[str, Any] = {}
    if config.uses_deepspeed:
        arguments["deepspeed"] = deepspeed_config(config, resume)
    elif config.fsdp_strategy.strip():
        arguments.update(fsdp_arguments(config))
    blind = ranks_not_seeing_main_files(config.output_dir)
    if blind:
        # Each node then writes what its own processes need to resume (the Trainer's files and, under DeepSpeed,
        # use_node_local_storage), next to the shards its processes write anyway.
        console.info(
            f"--output-dir {config.output_dir} is not shared by all nodes ({len(blind)} of {world_size()} processes do "
            f"not see rank 0's files there): each node keeps its own copy of every checkpoint, with its processes' "
            f"shards; the final model is written on the first node only"
        )
        arguments["save_on_each_node"] = True
    return arguments


@functools.cache
def ranks_not_seeing_main_files(folder: str) -> tuple[int, ...]:
    """The ranks that do not see a file global rank 0 writes in ``folder``: none when one filesystem serves every
    node (or there is one process). Collective: every process of the run calls it."""
    dist = _initialised_dist()
    if dist is None or dist.get_world_size() <= 1:
        return ()
    token = [secrets.token_hex(8) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(token, src=0)
    # A name never looked up before, so that a network filesystem cannot answer from a cached "no such file".
    probe = Path(folder) / f".xllm-shared-probe-{token[0]}"
    if dist.get_rank() == 0:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(str(token[0]))
    dist.barrier()
    seen: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(seen, probe.is_file())
    dist.barrier()  # nobody looks any more
    if dist.get_rank() == 0:
        probe.unlink()
    return tuple(rank for rank, found in enumerate(seen) if not found)


def deepspeed_config(config: XllmConfig, resume: dict[str, Any] | None = None) -> dict[str, Any] | str:
    """The user's DeepSpeed file (checked, passed as a path) or the predefined config of the stage (a dict), with
    ``resume``: what resuming needs (``resume.deepspeed_resume_settings``: the universal checkpoint of a run on another
    number of processes)."""
    resume = resume or {}
    if config.deepspeed_config_path:
        path = Path(config.deepspeed_config_path)
        data = read_deepspeed_file(path, "--deepspeed-config-path")
        if not resume:
            return str(path)
        return {**data, "checkpoint": {**data.get("checkpoint", {}), **resume["checkpoint"]}}
    offload = bool(getattr(config, "deepspeed_offload", False))
    if offload:
        # ZeRO-Offload steps the optimizer on the CPU, which needs DeepSpeed's CPU Adam (the *_offload.json files
        # name it): say that --optim is not what runs.
        console.info(
            f"--deepspeed-offload: optimizer states in CPU memory, DeepSpeed's CPU AdamW replaces --optim {config.optim}"
        )
    return {**predefined_deepspeed_config(config.deepspeed_stage, offload=offload), **resume}


def predefined_config_path(stage: int, offload: bool = False) -> Path:
    """Where the shipped config of a stage lives, for users who want to read or copy it."""
    if stage not in (1, 2, 3):
        raise ConfigError(f"--deepspeed-stage must be 1, 2 or 3 for a DeepSpeed config, got {stage}")
    name = f"stage{stage}{'_offload' if offload else ''}.json"
    return Path(str(resources.files("xllm_cli") / "deepspeed_configs" / name))


def predefined_deepspeed_config(stage: int, offload: bool = False) -> dict[str, Any]:
    return read_deepspeed_file(predefined_config_path(stage, offload), f"--deepspeed-stage {stage}")


def read_deepspeed_file(path: Path, source: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{source}: no such DeepSpeed config file {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}:{error.lineno}: invalid JSON in the DeepSpeed config: {error.msg}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the DeepSpeed config is not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a DeepSpeed config must be a JSON object, got {type(data).__name__}")
    return data


def fsdp_arguments(config: XllmConfig) -> dict[str, Any]:
    """``fsdp``/``fsdp_config`` from ``fsdp_strategy`` words (e.g. 'full_shard auto_wrap') and ``fsdp_offload``.

    The Trainer's string form is deprecated; the words are translated here into an FSDP2 config (FSDP1 only for the
    strategies FSDP2 lacks).
    """
    words = config.fsdp_strategy.replace(",", " ").split()
    unknown = [word for word in words if word not in FSDP_WORDS]
    if unknown:
        raise ConfigError(
            f"--fsdp-strategy: unknown word '{unknown[0]}'{did_you_mean(unknown[0], FSDP_WORDS)} "
            f"(accepted: {', '.join(FSDP_WORDS)})"
        )
    strategies = [word for word in words if word not in ("offload", "auto_wrap")]
    if len(strategies) > 1:
        raise ConfigError(f"--fsdp-strategy: pick one sharding strategy, got {' and '.join(strategies)}")
    strategy = strategies[0] if strategies else "full_shard"
    fsdp_config: dict[str, Any] = {}
    if strategy in FSDP2_RESHARD:
        fsdp_config.update(version=2, reshard_after_forward=FSDP2_RESHARD[strategy])
    else:
        console.warn(f"FSDP strategy '{strategy}' exists only in FSDP1, which transformers deprecates; using FSDP1")
        fsdp_config.update(version=1, reshard_after_forward=strategy)
    if config.fsdp_offload or "offload" in words:
        fsdp_config["cpu_offload"] = True
    _warn_if_fsdp_becomes_ddp()
    return {"fsdp": True, "fsdp_config": fsdp_config}


def _warn_if_fsdp_becomes_ddp() -> None:
    """accelerate enables FSDP only on accelerators; on CPU processes the Trainer quietly runs DDP instead."""
    import torch

    if torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return
    console.warn(
        "no GPU here: FSDP needs an accelerator, so the Trainer will run plain DDP (every process holds the whole "
        "model; nothing is sharded or offloaded). Use a GPU machine for FSDP, or --deepspeed-stage for ZeRO on CPU."
    )


@contextmanager
def main_process_first(local: bool = True, description: str = "work") -> Iterator[None]:
    """Run the body on the main process first while the others wait, then on the others (which find its result).

    For work whose output later processes reuse: prepared data files, the tokenization cache. ``local=True`` means
    rank 0 of each node goes first (right when each node has its own disk); ``local=False`` means global rank 0 only
    (a filesystem shared by every node). Without an initialised process group this is a plain ``with`` block.
    ``description`` names the work in the debug log (``logging`` level DEBUG) of the processes that wait.
    """
    dist = _initialised_dist()
    if dist is None or dist.get_world_size() <= 1:
        yield
        return
    first = is_local_main_process() if local else dist.get_rank() == 0
    if not first:
        logging.getLogger(__name__).debug("rank %d waits for the main process: %s", dist.get_rank(), description)
        dist.barrier()  # wait until the main process has done the work
    try:
        yield
    finally:
        if first:
            dist.barrier()  # release the others


def processes_connected() -> bool:
    """Whether this process belongs to a process group (several processes that communicate)."""
    return _initialised_dist() is not None


def _initialised_dist() -> Any:
    """``torch.distributed`` when a process group exists; never imports torch just to find out."""
    if "torch.distributed" not in sys.modules:
        return None
    dist = sys.modules["torch.distributed"]
    return dist if dist.is_available() and dist.is_initialized() else None
