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
from typing import Any

from xllm_cli.errors import ConfigError, first_line
from xllm_cli.estimate.hardware import Target, detect_target
from xllm_cli.estimate.meta import footprint
from xllm_cli.estimate.optimizers import optimizer_model
from xllm_cli.estimate.parallel import per_device
from xllm_cli.estimate.result import CUDA_OVERHEAD, Estimate, Memory
from xllm_cli.estimate.speed import step_time
from xllm_cli.estimate.suggest import cheapest_fit
from xllm_cli.models import compute_dtype, read_model_config
from xllm_cli.settings.config import XllmConfig
from xllm_cli.sizes import GB, parse_size
from xllm_cli.training.model import weights_dtype

__all__ = [
    "CUDA_OVERHEAD",
    "GB",
    "Estimate",
    "Memory",
    "Target",
    "detect_target",
    "estimate",
    "load_model_config",
    "parse_size",
]


def load_model_config(config: XllmConfig) -> Any:
    """The transformers config of ``--model-name-or-path``: a local folder, the Hub cache, or ``config.json`` alone
    downloaded from the Hub (never weights)."""
    try:
        return read_model_config(config)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot read the config of '{config.model_name_or_path}': {first_line(error)}",
            hint="check --model-name-or-path (a local folder with config.json, or a hub id)",
        ) from None


def estimate(
    config: XllmConfig,
    model_config: XllmConfig,
    target: Target,
    suggest: bool = True,
    compare_checkpointing: bool = True,
) -> Estimate:
    """The estimate of the run ``config`` describes (an ``XllmConfig``) for ``model_config`` on ``target``:
    ``suggest`` the cheapest change when it does not fit, ``compare_checkpointing``: also the activations with
    gradient checkpointing switched the other way."""
    simulated, dtypes, precision = _footprint(config, model_config, target)
    toggled = None
    if compare_checkpointing:
        switched = config.model_copy(update={"use_gradient_checkpointing": not config.use_gradient_checkpointing})
        toggled = _cached(switched, model_config, dtypes, precision, target.cuda).activations
    memory, engine, notes, optimizer = per_device(config, model_config, target, simulated, dtypes[0])
    result = Estimate(
        config=config,
        target=target,
        dtype=str(dtypes[0]).removeprefix("torch."),
        engine=engine,
        parameters=simulated.parameters,
        trainable=simulated.trainable,
        parameters_by_kind={
            "embeddings": simulated.embeddings,
            "linear": simulated.linear,
            "norms": simulated.norms,
            "head": simulated.head,
            "adapters": simulated.adapters,
        },
        optimizer=optimizer,
        memory=memory,
        step=step_time(config, model_config, target, simulated),
        notes=notes,
        activations_toggled=toggled,
    )
    if suggest and result.fits is False:

        def total(changed: Any) -> int:
            return estimate(changed, model_config, target, suggest=False, compare_checkpointing=False).memory.total

        change, total = cheapest_fit(config, target, total)
        result = Estimate(**{**result.__dict__, "suggestion": change, "suggested_total": total})
    return result


def _footprint(config: XllmConfig, model_config: XllmConfig, target: Target) -> tuple[Any, tuple, str]:
    """The simulated step, the dtypes (compute, weights, --stabilize's) and the precision mode of the run."""
    import torch

    compute = compute_dtype(config, cuda=target.cuda, bf16=target.bf16)
    half = torch.bfloat16 if target.cuda and target.bf16 else None  # --stabilize's cast
    dtypes = (compute, weights_dtype(config, compute), half)
    # The Trainer's mixed precision is accelerate's autocast; DeepSpeed instead casts the whole model.
    precision = "fp32" if compute == torch.float32 else "cast" if config.uses_deepspeed else "autocast"
    return _cached(config, model_config, dtypes, precision, target.cuda), dtypes, precision


def _cached(config: XllmConfig, model_config: XllmConfig, dtypes: tuple, precision: str, cuda: bool) -> Any:
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


def _settings_key(config: XllmConfig) -> tuple:
    return tuple(getattr(config, name) for name in STEP_SETTINGS)


def _model_key(model_config: XllmConfig) -> str:
    return model_config.to_json_string(use_diff=False)
