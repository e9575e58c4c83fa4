"""One device's share: what DDP, DeepSpeed ZeRO 1-3 (with offload) and FSDP keep on each device, from the
single-device step (``meta.Footprint``).

Accounting as the engines allocate (ZeRO paper; DeepSpeed's and accelerate's code): DeepSpeed casts the model to 16
bits and keeps float32 master weights, the optimizer working on those; stage 1 shards the optimizer states and the
master weights, stage 2 also the gradients, stage 3 also the weights, gathering one layer at a time (and prefetching
the next). FSDP (through accelerate) keeps trainable parameters in float32 when training in 16 bits and shards like
ZeRO-3 (``full_shard``) or ZeRO-2 (``shard_grad_op``); its offload moves parameters, gradients and states to the CPU.
"""

from __future__ import annotations

from typing import Any

from xllm_cli.estimate.hardware import Target
from xllm_cli.estimate.meta import Footprint
from xllm_cli.estimate.optimizers import optimizer_model
from xllm_cli.estimate.result import CUDA_OVERHEAD, Memory
from xllm_cli.settings.config import XllmConfig
from xllm_cli.training.distributed import predefined_deepspeed_config, read_deepspeed_file


def per_device(
    config: XllmConfig, model_config: XllmConfig, target: Target, step: Footprint, dtype: Any
) -> tuple[Any, str, list[str], str]:
    """(Memory, engine, notes, optimizer description) for one device."""

    n = target.num_devices
    optimizer = optimizer_model(config.optim)
    notes = [] if optimizer.exact else [f"--optim {config.optim}: {optimizer.description}"]
    overhead = CUDA_OVERHEAD if target.cuda else 0
    mixed = str(dtype) != "torch.float32"
    activations = step.activations
    # The step's peak beyond its activations (logits, loss, recomputation, backward temporaries).
    transient = step.step_peak_without_gradients - step.activations
    unit = _gathered_unit(step, model_config)

    if config.uses_deepspeed:
        ds = _deepspeed_settings(config, model_config)
        stage, offload_optimizer, offload_params = ds["stage"], ds["offload_optimizer"], ds["offload_params"]
        master = step.trainable * 4 if mixed else 0
        gradients = step.trainable * (2 if mixed else 4)
        states = step.trainable * 8 if ds["own_optimizer"] else step.optimizer_fp32
        description = "DeepSpeed's AdamW: 2 float32 states" if ds["own_optimizer"] else optimizer.description
        weights = step.weights_half if mixed else step.weights
        weights_share = weights / n if stage == 3 else weights
        gradients_share = gradients / n if stage >= 2 else gradients
        states_share = (master + states) / n
        offloaded = 0
        if offload_optimizer:
            offloaded += states_share + gradients_share
            states_share = gradients_share = 0
        if offload_params:
            offloaded += weights_share
            weights_share = 0
        buffers = ds["buffers"] + (2 * unit if stage == 3 else 0)
        engine = f"DeepSpeed ZeRO-{stage}" + (" with CPU offload" if offload_optimizer or offload_params else "")
        return (
            Memory(
                weights=round(weights_share),
                gradients=round(gradients_share),
                optimizer=round(states_share),
                activations=activations,
                other=transient + buffers,
                overhead=overhead,
                offloaded=round(offloaded),
            ),
            f"{engine} over {n} device(s)",
            notes + ["master weights in float32 are part of the optimizer states"] if mixed else notes,
            description,
        )

    fsdp = config.fsdp_strategy.strip()
    if fsdp and target.cuda and n > 1 and "no_shard" not in fsdp:
        words = fsdp.replace(",", " ").split()
        offload = config.fsdp_offload or "offload" in words
        # accelerate upcasts trainable 16-bit parameters to float32 under mixed precision.
        upcast = step.trainable * 4 - step.gradients if mixed else 0
        weights = (step.weights + upcast) / n
        gradients = step.trainable * 4 / n if mixed else step.gradients / n
        states = step.optimizer_fp32 / n
        gathered = (
            step.weights_half if "shard_grad_op" in words else 2 * unit
        )  # kept whole between forward and backward
        offloaded = 0
        if offload:
            offloaded, weights, gradients, states = weights + gradients + states, 0, 0, 0
        return (
            Memory(
                weights=round(weights),
                gradients=round(gradients),
                optimizer=round(states),
                activations=activations,
                other=transient + gathered,
                overhead=overhead,
                offloaded=round(offloaded),
            ),
            f"FSDP ({fsdp}{', CPU offload' if offload else ''}) over {n} device(s)",
            notes,
            optimizer.description,
        )

    if fsdp and n > 1 and not target.cuda:
        notes.append("FSDP needs a GPU: on CPUs the Trainer runs DDP, which is what is estimated")
    ga = config.gradient_accumulation_steps
    # With one micro-batch per step the gradients appear while the activations are freed (the simulated peak has
    # both); with accumulation the previous micro-batches' gradients are there from the start.
    step_peak = step.step_peak if ga == 1 else step.gradients + step.step_peak_without_gradients
    peak = max(step_peak, step.gradients + step.optimizer_step_extra)
    buckets = step.gradients if n > 1 else 0  # DDP copies the gradients into its all-reduce buckets
    engine = "one device" if n == 1 else f"DDP over {n} devices (each holds the whole model)"
    return (
        Memory(
            weights=step.weights,
            gradients=step.gradients,
            optimizer=step.optimizer,
            activations=activations,
            other=peak - step.gradients - activations + buckets,
            overhead=overhead,
        ),
        engine,
        notes,
        optimizer.description,
    )


def _gathered_unit(step: Footprint, model_config: XllmConfig) -> int:
    """Bytes of the largest piece ZeRO-3/FSDP gathers at once, in 16 bits: one block, the embeddings or the head."""
    depth = getattr(model_config, "num_hidden_layers", 1) or 1
    return 2 * max((step.linear + step.norms) // depth, step.embeddings, step.head)


def _deepspeed_settings(config: XllmConfig, model_config: XllmConfig) -> dict[str, Any]:
    """Stage, offload and communication buffers from the DeepSpeed file that will run (shipped or the user's)."""

    if config.deepspeed_config_path:
        from pathlib import Path

        ds = read_deepspeed_file(Path(config.deepspeed_config_path), "--deepspeed-config-path")
    else:
        ds = predefined_deepspeed_config(config.deepspeed_stage, offload=config.deepspeed_offload)
    zero = ds.get("zero_optimization", {}) or {}
    stage = int(zero.get("stage", 0))
    hidden = getattr(model_config, "hidden_size", 0) or 0

    def elements(name: str, auto: float, default: float) -> float:
        value = zero.get(name, default)
        return auto if value == "auto" else float(value)

    reduce = elements("reduce_bucket_size", hidden * hidden, 5e8)
    if stage == 3:
        # Gradients reduced in 16-bit buckets (double-buffered with overlap_comm), the next layer prefetched.
        buffers = 2 * 2 * reduce + 2 * elements("stage3_prefetch_bucket_size", 0.9 * hidden * hidden, 5e7)
    elif stage in (1, 2):
        buffers = 2 * elements("allgather_bucket_size", 5e8, 5e8) + 2 * 2 * reduce
    else:
        buffers = 0
    return {
        "stage": stage,
        "offload_optimizer": (zero.get("offload_optimizer") or {}).get("device", "none") in ("cpu", "nvme"),
        "offload_params": (zero.get("offload_param") or {}).get("device", "none") in ("cpu", "nvme"),
        "own_optimizer": "optimizer" in ds,
        "buffers": int(buffers),
    }
