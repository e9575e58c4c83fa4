"""``LMTrainer`` (trainer key ``lm``): the Trainer with xllm's causal-LM loss."""

from __future__ import annotations

from typing import Any

from transformers import Trainer

# Re-exported: the loss and the inputs live in a module without the Trainer, so the memory estimate runs them too.
from xllm_cli.training.loss import model_inputs, token_loss_sum

__all__ = ["LMTrainer", "model_inputs", "token_loss_sum"]


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
