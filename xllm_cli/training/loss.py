"""xllm's causal-LM loss and the forward pass's inputs, shared by the trainer (``LMTrainer``) and the memory
estimate, which runs the same code on the meta device."""

from __future__ import annotations

from typing import Any

from xllm_cli.collators.base import IGNORE_INDEX


def token_loss_sum(logits: Any, labels: Any, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """(summed next-token cross-entropy, number of target tokens); labels -100 are ignored.

    Summing (instead of averaging per batch) lets the caller divide by the token count of the whole accumulated
    batch, so every target token weighs the same whatever the padding, packing or gradient accumulation.
    """
    import torch.nn.functional as F

    # The labels move one step left (the last position gets nothing to predict), not the logits: slicing the logits
    # would copy all of them, (tokens x vocabulary) floats, about a third of the loss's time and a full extra copy
    # of its largest tensor (transformers' own loss shifts the labels too).
    shifted_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].to(logits.device)
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    return total, shifted_labels.ne(IGNORE_INDEX).sum()


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """What goes into the forward pass: everything but the labels, no KV cache, and no padding mask for packed rows
    (transformers builds the block-diagonal mask from ``position_ids`` only when there is neither a 2-D mask nor a
    cache)."""
    inputs = {name: value for name, value in batch.items() if name != "labels"}
    inputs["use_cache"] = False
    if "position_ids" in inputs:
        inputs.pop("attention_mask", None)
    return inputs
