"""Loading the tokenizer and the model: dtype, attention implementation, bitsandbytes 4/8-bit, k-bit preparation and
gradient checkpointing."""

from __future__ import annotations

import warnings
from typing import Any

from xllm_cli import console
from xllm_cli.errors import ConfigError


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def compute_dtype(config: Any, cuda: bool | None = None, bf16: bool | None = None) -> Any:
    """float32 when forced or on CPU (CPU training in half precision is slow and lossy), else fp16 when forced,
    else bf16 where the device supports it, else fp16. ``cuda``/``bf16`` describe another device than this one (the
    estimate's target); unset, they are this machine's."""
    import torch

    if config.force_fp32 or not (has_cuda() if cuda is None else cuda):
        return torch.float32
    if config.force_fp16 or not (bf16_supported() if bf16 is None else bf16):
        return torch.float16
    return torch.bfloat16


def weights_dtype(config: Any, dtype: Any) -> Any:
    """The dtype the weights load in for training in ``dtype``."""
    import torch

    if dtype == torch.float16 and not config.apply_lora:
        # fp16 training keeps fp32 master weights (AMP's gradient scaler refuses fp16 gradients); adapters are fp32
        # anyway, so only full fine-tuning needs this.
        return torch.float32
    return dtype


def load_tokenizer(config: Any) -> Any:
    """The tokenizer, with its padding side and chat template from the config and a pad token guaranteed (EOS when it
    has none)."""
    from transformers import AutoTokenizer

    source = config.tokenizer_name_or_path or config.model_name_or_path
    kwargs: dict[str, Any] = {
        "trust_remote_code": config.trust_remote_code,
        "token": config.secret("huggingface_hub_token"),
    }
    if config.tokenizer_use_fast is not None:
        kwargs["use_fast"] = config.tokenizer_use_fast
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as error:
        raise ConfigError(
            f"cannot load the tokenizer from '{source}': {str(error).splitlines()[0]}",
            hint="check --tokenizer-name-or-path / --model-name-or-path, and run 'xllm download' first",
        ) from None
    if config.tokenizer_padding_side:
        tokenizer.padding_side = config.tokenizer_padding_side
    if config.chat_template:
        from xllm_cli.collators.templates import set_chat_template

        set_chat_template(tokenizer, config.chat_template)
        console.info(f"chat template: {config.chat_template} (saved with the trained model's tokenizer)")
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer of '{source}' has neither a pad nor an EOS token; give it a pad token")
        # Safe because padding is excluded from the loss by the attention mask, never by comparing with the pad id.
        tokenizer.pad_token = tokenizer.eos_token
        console.info(
            f"the tokenizer has no pad token: padding with EOS ({tokenizer.eos_token!r}); EOS is still learned"
        )
    return tokenizer


def quantization_config(config: Any) -> Any:
    """The bitsandbytes config for 4/8-bit loading, the GPTQ loading config for ``from_gptq``, or None."""
    if config.from_gptq:
        from transformers import GPTQConfig

        # Bits and groups come from the checkpoint; only the kernel is chosen here. gptqmodel's automatic choice can be
        # an inference-only kernel (seen on CPU: TorchCpuAvx512Linear), which cannot back LoRA training.
        return GPTQConfig(bits=config.gptq_bits, backend="auto_trainable")
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


def load_model(config: Any, quantization: Any, tokenizer: Any) -> Any:
    """The model, quantized while loading or (``bnb_quantize_after_model_init``) right after."""
    from transformers import AutoModelForCausalLM

    from xllm_cli.training.architecture import attention_implementation, model_class, report_attention

    dtype = weights_dtype(config, compute_dtype(config))
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": attention_implementation(config, model_class(config)),
        "trust_remote_code": config.trust_remote_code,
        "token": config.secret("huggingface_hub_token"),
    }
    if config.device_map:
        kwargs["device_map"] = config.device_map
    elif quantization is not None and has_cuda():
        # bitsandbytes weights are quantized on the device they load to; one process, one device.
        import os

        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    if quantization is not None and (config.from_gptq or not config.bnb_quantize_after_model_init):
        kwargs["quantization_config"] = quantization
    try:
        with warnings.catch_warnings():
            # Expected with --from-gptq: the checkpoint's GPTQ settings are kept, our kernel choice is applied.
            warnings.filterwarnings("ignore", message="You passed `quantization_config`", category=UserWarning)
            model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path, **kwargs)
    except OSError as error:
        raise ConfigError(
            f"cannot load the model '{config.model_name_or_path}': {str(error).splitlines()[0]}",
            hint="check --model-name-or-path, and run 'xllm download' first",
        ) from None
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


def prepare_for_training(model: Any, config: Any, quantized: bool) -> Any:
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
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if checkpointing:
        model.config.use_cache = False
    return model
