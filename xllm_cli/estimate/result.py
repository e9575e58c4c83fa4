"""What an estimate says: the memory of one device at the step's peak, and the whole result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xllm_cli.estimate.hardware import Target
from xllm_cli.settings.config import XllmConfig
from xllm_cli.sizes import GB

# CUDA context (~0.5 GB), cuBLAS/NCCL workspaces and the caching allocator's fragmentation: a constant, not measured
# (this project's tests run on CPUs). Counted on a GPU target only.
CUDA_OVERHEAD = 1 * GB


@dataclass(frozen=True)
class Memory:
    """Bytes on one device at the step's peak. ``other`` is what the peak holds besides the listed parts: logits and
    loss, recomputed layers, backward buffers, communication buckets and gathered shards; negative when gradients and
    activations never peak together."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    other: int
    overhead: int
    offloaded: int = 0  # bytes moved to CPU memory by ZeRO/FSDP offload (not in the total)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.other + self.overhead


@dataclass(frozen=True)
class Estimate:
    config: XllmConfig  # the settings estimated
    target: Target
    dtype: str  # compute dtype: bfloat16, float16 or float32
    engine: str  # what shards: one device, DDP, DeepSpeed ZeRO-n, FSDP
    parameters: int
    trainable: int
    parameters_by_kind: dict[str, int]
    optimizer: str  # how the optimizer's states are stored
    memory: Memory
    step: Any  # estimate.speed.StepTime
    notes: list[str] = field(default_factory=list)
    activations_toggled: int | None = None  # the same run with gradient checkpointing switched the other way
    suggestion: str | None = None  # the cheapest change that makes it fit, when it does not
    suggested_total: int | None = None

    @property
    def fits(self) -> bool | None:
        if self.target.device_memory is None:
            return None
        return self.memory.total <= self.target.device_memory
