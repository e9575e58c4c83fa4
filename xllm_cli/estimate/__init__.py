"""Will it fit? Memory and time of one training run, per device, from the model's ``config.json`` and xllm's settings,
without loading a weight.

    from xllm_cli.estimate import estimate
    result = estimate(config, model_config, Target(num_devices=1, device_memory=24 * 10**9))
    result.memory.total, result.fits, result.suggestion

How: the model is built on the meta device and one training step is simulated there (``estimate.meta``): that gives
the weights, trainable parameters, gradients and the activations exactly as xllm's code creates them. Optimizer
states follow the optimizer's own rules (``estimate.optimizers``); DeepSpeed ZeRO and FSDP divide what they shard
over the devices (``estimate.parallel``); the step time is FLOPs over a stated share of the GPU's peak
(``estimate.speed``). Nothing heavy is imported with this package: ``--device-memory`` is validated with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from xllm_cli.estimate.hardware import GB, Target, detect_target, parse_size

__all__ = ["GB", "Estimate", "Memory", "Target", "detect_target", "estimate", "load_model_config", "parse_size"]

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
    config: Any  # the settings estimated
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


def load_model_config(config: Any) -> Any:
    """The transformers config of ``--model-name-or-path``: a local folder, the Hub cache, or ``config.json`` alone
    downloaded from the Hub (never weights)."""
    from transformers import AutoConfig

    from xllm_cli.errors import ConfigError

    try:
        return AutoConfig.from_pretrained(
            config.model_name_or_path,
            trust_remote_code=config.trust_remote_code,
            token=config.secret("huggingface_hub_token"),
        )
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot read the config of '{config.model_name_or_path}': {str(error).splitlines()[0]}",
            hint="check --model-name-or-path (a local folder with config.json, or a hub id)",
        ) from None


def estimate(
    config: Any, model_config: Any, target: Target, suggest: bool = True, compare_checkpointing: bool = True
) -> Estimate:
    """The estimate of the run ``config`` describes (an ``XllmConfig``) for ``model_config`` on ``target``:
    ``suggest`` the cheapest change when it does not fit, ``compare_checkpointing``: also the activations with
    gradient checkpointing switched the other way."""
    from xllm_cli.estimate.parallel import per_device
    from xllm_cli.estimate.speed import step_time

    footprint, dtypes, precision = _footprint(config, model_config, target)
    toggled = None
    if compare_checkpointing:
        switched = config.model_copy(update={"use_gradient_checkpointing": not config.use_gradient_checkpointing})
        toggled = _cached(switched, model_config, dtypes, precision, target.cuda).activations
    memory, engine, notes, optimizer = per_device(config, model_config, target, footprint, dtypes[0])
    result = Estimate(
        config=config,
        target=target,
        dtype=str(dtypes[0]).removeprefix("torch."),
        engine=engine,
        parameters=footprint.parameters,
        trainable=footprint.trainable,
        parameters_by_kind={
            "embeddings": footprint.embeddings,
            "linear": footprint.linear,
            "norms": footprint.norms,
            "head": footprint.head,
            "adapters": footprint.adapters,
        },
        optimizer=optimizer,
        memory=memory,
        step=step_time(config, model_config, target, footprint),
        notes=notes,
        activations_toggled=toggled,
    )
    if suggest and result.fits is False:
        from xllm_cli.estimate.suggest import cheapest_fit

        change, total = cheapest_fit(config, model_config, target)
        result = Estimate(**{**result.__dict__, "suggestion": change, "suggested_total": total})
    return result


def _footprint(config: Any, model_config: Any, target: Target) -> tuple[Any, tuple, str]:
    """The simulated step, the dtypes (compute, weights, --stabilize's) and the precision mode of the run."""
    import torch

    from xllm_cli.training.distributed import uses_deepspeed
    from xllm_cli.training.model import compute_dtype, weights_dtype

    compute = compute_dtype(config, cuda=target.cuda, bf16=target.bf16)
    half = torch.bfloat16 if target.cuda and target.bf16 else None  # --stabilize's cast
    dtypes = (compute, weights_dtype(config, compute), half)
    # The Trainer's mixed precision is accelerate's autocast; DeepSpeed instead casts the whole model.
    precision = "fp32" if compute == torch.float32 else "cast" if uses_deepspeed(config) else "autocast"
    return _cached(config, model_config, dtypes, precision, target.cuda), dtypes, precision


def _cached(config: Any, model_config: Any, dtypes: tuple, precision: str, cuda: bool) -> Any:
    key = (
        _model_key(model_config),
        _settings_key(config),
        config.per_device_train_batch_size,
        config.max_length,
        dtypes,
        precision,
        cuda,
    )
    return _cached_footprint(key, _Frozen(config), _Frozen(model_config))


class _Frozen:
    """Carries an unhashable object through the cache; the cache key is built separately."""

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return True


@functools.lru_cache(maxsize=64)
def _cached_footprint(key: tuple, config: _Frozen, model_config: _Frozen) -> Any:
    from xllm_cli.estimate.meta import footprint
    from xllm_cli.estimate.optimizers import optimizer_model

    optimizer = optimizer_model(config.value.optim)
    batch, length, dtypes, precision, cuda = key[2:]

    def optimizer_bytes(params, embeddings, fp32):
        return optimizer.states(params, embeddings, fp32, cuda)

    return footprint(model_config.value, config.value, batch, length, dtypes, precision, optimizer_bytes)


# Settings that change the simulated step (everything else is arithmetic on its result).
STEP_SETTINGS = (
    "optim",
    "use_gradient_checkpointing",
    "apply_lora",
    "lora_rank",
    "raw_lora_target_modules",
    "load_in_4bit",
    "load_in_8bit",
    "from_gptq",
    "gptq_bits",
    "gptq_group_size",
    "bnb_4bit_use_double_quant",
    "llm_int8_has_fp16_weight",
    "prepare_model_for_kbit_training",
    "stabilize",
    "force_fp32",
    "force_fp16",
    "label_smoothing_factor",
    "trust_remote_code",
)


def _settings_key(config: Any) -> tuple:
    return tuple(getattr(config, name) for name in STEP_SETTINGS)


def _model_key(model_config: Any) -> str:
    return model_config.to_json_string(use_diff=False)
