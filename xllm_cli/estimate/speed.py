"""A rough step time: training FLOPs of one optimizer step on one device over a stated share of the device's peak.

FLOPs per token, with M the parameters of every matmul (linear layers, head, adapters) and the causal attention
2·T·(heads·head_dim) per layer in the forward pass: forward 2·M + attention; backward 2·M for the activations'
gradients, 2·M_trainable for the weights' (all of M in full fine-tuning, the adapters with LoRA) and twice the
attention; gradient checkpointing adds one more forward. Full fine-tuning comes to the usual 6·M per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xllm_cli.estimate.hardware import Target
from xllm_cli.settings.config import XllmConfig

# Model FLOPs utilisation assumed: what a tuned bf16 run of a decoder reaches with the Hugging Face Trainer is
# typically 30-50%; 4-bit dequantization and small batches land lower.
MFU = 0.4


@dataclass(frozen=True)
class StepTime:
    flops: float  # per optimizer step on one device
    tokens: int  # per optimizer step on one device
    tflops: float | None  # the device's peak used
    seconds: float | None  # None when the device's peak is unknown
    mfu: float = MFU


def step_time(config: XllmConfig, model_config: XllmConfig, target: Target, step: Any) -> StepTime:
    length = config.max_length
    tokens = config.per_device_train_batch_size * length * config.gradient_accumulation_steps
    matmul = step.linear + (step.head or step.embeddings) + step.adapters  # a tied head multiplies by the embeddings
    trainable_matmul = step.adapters if config.apply_lora else matmul
    heads = getattr(model_config, "num_attention_heads", 0) or 0
    hidden = getattr(model_config, "hidden_size", 0) or 0
    head_dim = getattr(model_config, "head_dim", None) or (hidden // heads if heads else 0)
    layers = getattr(model_config, "num_hidden_layers", 0) or 0
    attention = 2 * length * heads * head_dim * layers
    forward = 2 * matmul + attention
    backward = 2 * matmul + 2 * trainable_matmul + 2 * attention
    recompute = forward if config.use_gradient_checkpointing else 0
    flops = float(tokens * (forward + backward + recompute))
    tflops = target.tflops
    seconds = flops / (tflops * 1e12 * MFU) if tflops else None
    return StepTime(flops=flops, tokens=tokens, tflops=tflops, seconds=seconds)
