"""``LMTrainer`` (trainer key ``lm``): the Trainer with xllm's causal-LM loss."""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from xllm_cli.collators.base import IGNORE_INDEX


def token_loss_sum(logits: Any, labels: Any, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """(summed next-token cross-entropy, number of target tokens); labels -100 are ignored.

    Summing (instead of averaging per batch) lets the caller divide by the token count of the whole accumulated
    batch, so every target token weighs the same whatever the padding, packing or gradient accumulation.
    """
    import torch.nn.functional as F

    shifted_logits = logits[..., :-1, :].float()
    shifted_labels = labels[..., 1:].to(shifted_logits.device)
    total = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
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


class LMTrainer(Trainer):
    """Causal LM loss with ``label_smoothing_factor`` and ignore index -100, normalised by ``num_items_in_batch`` (the
    target tokens of the whole accumulated batch, on every device) when the Trainer provides it."""

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        labels = inputs["labels"]
        outputs = model(**model_inputs(inputs))
        total, count = token_loss_sum(outputs.logits, labels, self.args.label_smoothing_factor)
        if num_items_in_batch is None:
            loss = total / count.clamp(min=1)
        else:
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices:
                # The count covers every device while the gradients are averaged over them: undo the average, as
                # transformers' own loss does.
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
