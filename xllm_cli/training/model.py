"""Loading the model for training: attention implementation, bitsandbytes 4/8-bit or a GPTQ base, k-bit preparation
and gradient checkpointing (finding and opening it is ``xllm_cli.models``, as for every step)."""

from __future__ import annotations

import warnings
from typing import Any

from xllm_cli.models import compute_dtype, has_cuda, open_model
from xllm_cli.settings.config import XllmConfig
from xllm_cli.training.architecture import attention_implementation, model_class, report_attention


def weights_dtype(config: XllmConfig, dtype: Any) -> Any:
    """The dtype the weights load in for training in ``dtype``."""
    import torch

    if dtype == torch.float16 and not config.apply_lora:
        # fp16 training keeps fp32 master weights (AMP's gradient scaler refuses fp16 gradients); adapters are fp32
        # anyway, so only full fine-tuning needs this.
        return torch.float32
    return dtype


def quantization_config(config: XllmConfig) -> Any:
    """The bitsandbytes config for 4/8-bit loading, the GPTQ loading config for ``from_gptq``, or None."""
    if config.from_gptq:
        from transformers import GPTQConfig

        # Bits and groups come from the checkpoint; only the kernel is chosen here. gptqmodel's automatic choice can be
        # an inference-only kernel (seen on CPU: TorchCpuAvx512Linear), which cannot back LoRA training.
        return GPTQConfig(bits=4, backend="auto_trainable")  # bits is required here; the checkpoint's own wins
    if not (config.load_in_4bit or config.load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    if config.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=compute_dtype(config),
            bnb_4bit_use_double_quant=config.bnb_4bit_use_double_quant,
            bnb_4bit_quant_type=config.bnb_4bit_quant_type,
        )
    return BitsAndBytesConfig(
        load_in_8bit=True,
        llm_int8_threshold=config.llm_int8_threshold,
        llm_int8_has_fp16_weight=config.llm_int8_has_fp16_weight,
    )


def load_model(config: XllmConfig, quantization: Any, tokenizer: Any) -> Any:
    """The model, quantized while loading or (``bnb_quantize_after_model_init``) right after."""
    dtype = weights_dtype(config, compute_dtype(config))
    kwargs: dict[str, Any] = {"attn_implementation": attention_implementation(config, model_class(config))}
    if config.device_map:
        kwargs["device_map"] = config.device_map
    elif quantization is not None and has_cuda():
        # bitsandbytes weights are quantized on the device they load to; one process, one device.
        import os

        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    if quantization is not None and (config.from_gptq or not config.bnb_quantize_after_model_init):
        kwargs["quantization_config"] = quantization
    with warnings.catch_warnings():
        # Expected with --from-gptq: the checkpoint's GPTQ settings are kept, our kernel choice is applied.
        warnings.filterwarnings("ignore", message="You passed `quantization_config`", category=UserWarning)
        model = open_model(config.model_name_or_path, config, dtype, **kwargs)
    report_attention(config, model)
    if quantization is not None and config.bnb_quantize_after_model_init and not config.from_gptq:
        model = quantize_loaded_model(model, quantization)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    # Aligned here so transformers does not warn that the tokenizer and the model disagree.
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def quantize_loaded_model(model: Any, quantization: Any) -> Any:
    """Swap every linear layer but the head for its bitsandbytes twin holding the same weights, quantized now."""
    import bitsandbytes as bnb
    import torch

    head = model.get_output_embeddings()
    replacements = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head and not isinstance(module, bnb.nn.Linear4bit)
    ]
    for name, linear in replacements:
        device = linear.weight.device
        if quantization.load_in_4bit:
            layer = bnb.nn.Linear4bit(
                linear.in_features,
                linear.out_features,
                bias=linear.bias is not None,
                compute_dtype=quantization.bnb_4bit_compute_dtype,
                compress_statistics=quantization.bnb_4bit_use_double_quant,
                quant_type=quantization.bnb_4bit_quant_type,
                device="meta",
            )
            layer.weight = bnb.nn.Params4bit(
                linear.weight.data.cpu(),
                requires_grad=False,
                compress_statistics=quantization.bnb_4bit_use_double_quant,
                quant_type=quantization.bnb_4bit_quant_type,
            )
        else:
            layer = bnb.nn.Linear8bitLt(
                linear.in_features,
                linear.out_features,
                bias=linear.bias is not None,
                has_fp16_weights=quantization.llm_int8_has_fp16_weight,
                threshold=quantization.llm_int8_threshold,
                device="meta",
            )
            layer.weight = bnb.nn.Int8Params(
                linear.weight.data.cpu(), requires_grad=False, has_fp16_weights=quantization.llm_int8_has_fp16_weight
            )
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
        layer = layer.to(device if device.type != "meta" else "cpu")  # moving quantizes the weights
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
    # peft and the Trainer read these to treat the model as quantized (no full fine-tuning, k-bit preparation).
    model.is_loaded_in_4bit = bool(quantization.load_in_4bit)
    model.is_loaded_in_8bit = bool(quantization.load_in_8bit)
    model.config.quantization_config = quantization
    return model


def prepare_for_training(model: Any, config: XllmConfig, quantized: bool) -> Any:
    """k-bit preparation (norms in fp32, input grads) and gradient checkpointing, with or without quantization."""
    checkpointing = config.use_gradient_checkpointing
    if quantized and config.prepare_model_for_kbit_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif checkpointing:
        # Non-reentrant checkpointing needs no input gradients, so it works with frozen embeddings (LoRA) too.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if checkpointing:
        model.config.use_cache = False
    return model
