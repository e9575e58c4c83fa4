"""The GPU path: what makes training fast on CUDA, each through the Trainer's own support, each checked before any
work so a machine that cannot run an option says so in one line.

- ``--use-liger-kernel`` (``TrainingArguments.use_liger_kernel``): Liger's Triton kernels for RMSNorm, RoPE, SwiGLU
  and a fused linear cross-entropy. ``LMTrainer`` then lets the model compute the training loss from the labels
  (``trainer.model_loss``), so the (tokens x vocabulary) logits are never materialised.
- ``--torch-compile`` (``TrainingArguments.torch_compile``): torch.compile with inductor.
- bf16 autocast: on by itself where the GPU supports bfloat16 (``model.compute_dtype``: the weights load in bf16 and
  the Trainer runs with ``bf16=True``), fp16 on older GPUs, float32 on CPU.
- flash-attention varlen for packed rows: ``--packing`` with flash attention feeds each batch as one row with the
  sample boundaries (``trainer.flatten_packed_batch``).
- paged 8-bit optimizers: ``--optim paged_adamw_8bit`` (the default) and the other bitsandbytes names.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from xllm_cli.errors import ConfigError
from xllm_cli.models import has_cuda, read_model_config
from xllm_cli.settings.config import XllmConfig

GPU_EXTRA = "pip install 'xllm-cli[gpu]'"


def check_gpu_options(config: XllmConfig) -> None:
    """Refuse, before any work, a GPU option this machine or this run cannot use."""
    if config.use_liger_kernel:
        check_liger(config)
    if config.torch_compile and not has_cuda():
        # Measured on a 4-layer Llama (hidden 256), LoRA, padded batches of varied lengths, 2 shared cores: 20
        # compiled steps took 7 minutes where 20 plain ones took 27 s, and 60 compiled steps still ran at under
        # half the plain speed (each new batch shape compiles again).
        raise ConfigError(
            "--torch-compile needs CUDA: on CPU, compiling takes minutes and the training steps were not faster "
            "once compiled; this machine has no CUDA device"
        )


def check_liger(config: XllmConfig) -> None:
    if not has_cuda():
        raise ConfigError(
            "--use-liger-kernel needs CUDA: Liger's kernels are Triton GPU kernels, and this machine has no CUDA device"
        )
    if importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError(
            "--use-liger-kernel needs the liger-kernel package, which is not installed",
            hint=f"{GPU_EXTRA} (or pip install liger-kernel)",
        )
    if config.label_smoothing_factor:
        raise ConfigError(
            "--use-liger-kernel computes the loss in Liger's fused cross-entropy, which has no label smoothing: "
            "drop --label-smoothing-factor or --use-liger-kernel"
        )
    model_type = _model_type(config)
    supported = liger_model_types()
    if model_type is not None and model_type not in supported:
        raise ConfigError(
            f"--use-liger-kernel: Liger has no kernels for model type '{model_type}' "
            f"(it has: {', '.join(sorted(supported))})"
        )


def liger_model_types() -> set[str]:
    """The model types Liger patches (its own table)."""
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def _model_type(config: XllmConfig) -> str | None:
    try:
        return read_model_config(config).model_type
    except (OSError, ValueError, KeyError):
        return None  # loading the model reports it with its own message


def training_arguments(config: XllmConfig) -> dict[str, Any]:
    """The Trainer's own switches for the options above."""
    return {"use_liger_kernel": config.use_liger_kernel, "torch_compile": config.torch_compile}
