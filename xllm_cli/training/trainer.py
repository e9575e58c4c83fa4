"""``LMTrainer`` (trainer key ``lm``): the Trainer with xllm's causal-LM loss."""

from __future__ import annotations

import inspect
from typing import Any

from transformers import Trainer

# Re-exported: the loss and the inputs live in a module without the Trainer, so the memory estimate runs them too.
from xllm_cli.training.loss import model_inputs, token_loss_sum

__all__ = ["LMTrainer", "model_inputs", "token_loss_sum"]


def uses_flash_attention(model: Any) -> bool:
    """flash_attention_2/3 or a hub flash kernel: attention that keeps packed samples apart only through varlen."""
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return "flash" in str(implementation or "")


def forward_takes_kwargs(model: Any) -> bool:
    """Whether the model's forward passes extra keyword arguments on to its attention (transformers' own models do)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(type(base).forward).parameters.values()
    return any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters)


def flatten_packed_batch(batch: dict[str, Any], varlen_kwargs: bool = True) -> dict[str, Any]:
    """Packed rows as one row, for flash attention: transformers runs flash-attention varlen over restarting
    ``position_ids`` only for a batch of one row (several rows would each get one causal window over all their
    samples). ``varlen_kwargs`` adds the sample boundaries (``cu_seq_lens_*``, ``max_length_*``), computed once per
    batch instead of in every layer.

    The loss is unchanged: the first label of every packed sample is already ignored, so no token is trained to
    predict across the joins between rows."""
    flat = {name: value.reshape(1, -1) if hasattr(value, "reshape") else value for name, value in batch.items()}
    if varlen_kwargs:
        from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

        (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(flat["position_ids"])
        flat.update(cu_seq_lens_q=cu_q, cu_seq_lens_k=cu_k, max_length_q=int(max_q), max_length_k=int(max_k))
    return flat


def model_loss(model: Any, batch: dict[str, Any], num_items_in_batch: Any = None) -> tuple[Any, Any]:
    """(loss, outputs) with the loss computed inside the model, from the labels: what Liger's fused linear
    cross-entropy needs to never materialise the (tokens x vocabulary) logits. The same sum over target tokens divided
    by ``num_items_in_batch`` (or their mean) as ``token_loss_sum``, without label smoothing."""
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    outputs = model(**model_inputs(batch), labels=batch["labels"], **extra)
    return outputs.loss, outputs


class LMTrainer(Trainer):
    """Causal LM loss with ``label_smoothing_factor`` and ignore index -100, normalised by ``num_items_in_batch`` (the
    target tokens of the whole accumulated batch, on every device) when the Trainer provides it.

    Packed batches go to flash attention as one row (``flatten_packed_batch``); with ``--use-liger-kernel`` the
    model computes the training loss itself (``model_loss``)."""

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if "position_ids" in inputs and uses_flash_attention(self.model):
            inputs = flatten_packed_batch(inputs, varlen_kwargs=forward_takes_kwargs(self.model))
        # With Liger the model computes the loss: in training, and in evaluation when the Trainer asks for the loss
        # only (it then adds skip_logits, which Liger's forward accepts only together with the labels).
        if self.args.use_liger_kernel and (model.training or inputs.get("skip_logits")):
            loss, outputs = model_loss(model, inputs, num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # as below
            return (loss, outputs) if return_outputs else loss
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


def describe_packing_kernel(model: Any) -> str:
    """The start-up line of a packed run: how packed rows reach the attention kernel."""
    implementation = getattr(model.config, "_attn_implementation", None)
    if uses_flash_attention(model):
        how = (
            "with the sample boundaries precomputed" if forward_takes_kwargs(model) else "boundaries from position_ids"
        )
        return f"packing: {implementation} varlen, each batch flattened into one row ({how})"
    return f"packing: {implementation} attention with a block-diagonal mask from the restarting position_ids"
