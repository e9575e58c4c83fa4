"""LoRA adapters (which layers, from ``raw_lora_target_modules``) and ``stabilize`` (dtypes that keep training stable)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from xllm_cli import console
from xllm_cli.errors import ConfigError, did_you_mean
from xllm_cli.settings.sections import LoraSettings


def _is_linear(module: Any) -> bool:
    """A layer LoRA adapts as a linear map: ``nn.Linear`` and its subclasses (bitsandbytes' layers, Falcon's
    FalconLinear), transformers' ``Conv1D`` (GPT-2's transposed linear), and quantized linears that carry packed
    ``qweight`` (GPTQ, AWQ): the linear types peft's LoRA wraps."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D)) or hasattr(module, "qweight")


def linear_module_names(model: Any) -> list[str]:
    """Last name components of every linear layer (bitsandbytes and GPTQ ones too), head and embeddings excluded."""
    head = model.get_output_embeddings()
    excluded = {id(head), id(model.get_input_embeddings())}
    names = {
        name.rpartition(".")[2]
        for name, module in model.named_modules()
        if _is_linear(module) and id(module) not in excluded and name
    }
    return sorted(names)


def target_modules(model: Any, raw: str) -> list[str]:
    """``all`` -> every linear layer but the head; a comma list -> those names, each checked against the model."""
    available = linear_module_names(model)
    if raw.strip() == "all":
        if not available:
            kinds = sorted({type(module).__name__ for module in model.modules() if not list(module.children())})
            raise ConfigError(
                f"--raw-lora-target-modules all: {type(model).__name__} has no linear layer LoRA can adapt besides "
                f"its output head (layer types: {', '.join(kinds)})",
                hint="name the modules to adapt with --raw-lora-target-modules, or train without --apply-lora",
            )
        return available
    wanted = [name.strip() for name in raw.split(",") if name.strip()]
    module_names = {name.rpartition(".")[2] for name, _ in model.named_modules()}
    for name in wanted:
        if name not in module_names:
            raise ConfigError(
                f"--raw-lora-target-modules: the model has no module named '{name}'{did_you_mean(name, available)} "
                f"(linear layers: {', '.join(available)})"
            )
    return wanted


def apply_lora(model: Any, lora: LoraSettings, gptq_base: bool = False, stand_ins: bool = False) -> Any:
    """Wrap ``model`` in a peft LoRA model as ``lora`` says. ``gptq_base``: the model was loaded from a GPTQ checkpoint
    (peft then dispatches to gptqmodel's layers). ``stand_ins``: the model is the memory estimate's meta copy, whose
    quantized layers are plain stand-ins (so no GPTQ dispatch), and nothing is printed."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = target_modules(model, lora.raw_lora_target_modules)
    targeted = [module for name, module in model.named_modules() if name.rpartition(".")[2] in targets]
    lora_config = LoraConfig(
        r=lora.lora_rank,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        # Conv1D (GPT-2) stores weights transposed: say so, rather than let peft correct it with a warning per layer.
        fan_in_fan_out=bool(targeted) and all(isinstance(module, Conv1D) for module in targeted),
    )
    with _without_gptq_dispatch(skip=stand_ins or not gptq_base):
        model = get_peft_model(model, lora_config)
    if stand_ins:
        return model
    trainable, total = model.get_nb_trainable_parameters()
    console.info(f"LoRA on {', '.join(targets)}: {trainable:,} trainable of {total:,} parameters")
    return model


@contextlib.contextmanager
def _without_gptq_dispatch(skip: bool) -> Iterator[None]:
    """peft imports gptqmodel (seconds, and its banner) for every LoRA layer just to ask whether it is a GPTQ or AWQ
    layer. A model not loaded with --from-gptq has none, so every peft module's check answers no without the import.
    """
    if not skip:
        yield
        return
    import sys
    from unittest import mock

    checks = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("peft") and callable(getattr(module, "is_gptqmodel_available", None))
    ]
    with contextlib.ExitStack() as patches:
        for module in checks:
            patches.enter_context(mock.patch.object(module, "is_gptqmodel_available", return_value=False))
        yield


def stabilize(model: Any, half_dtype: Any) -> Any:
    """Norms in float32; LoRA A and B, embeddings and head in ``half_dtype`` (bfloat16 when the device has it).

    The original tool cast lora_A twice and never lora_B; here each matrix is cast once.
    """
    import torch

    embeddings = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    for name, module in model.named_modules():
        if "norm" in type(module).__name__.lower() or name.rpartition(".")[2].endswith("norm"):
            module.to(torch.float32)
        elif half_dtype is not None and (id(module) in embeddings or _is_lora_matrix(name)):
            module.to(half_dtype)
    return model


def _is_lora_matrix(name: str) -> bool:
    parts = name.split(".")
    # peft names them ...q_proj.lora_A.default / ...q_proj.lora_B.default (the ModuleDict entry per adapter).
    return len(parts) >= 2 and parts[-2] in ("lora_A", "lora_B")
