"""What xllm checks about a model's architecture before training: which attention kernels its class supports (and
which one ``auto`` picks here), and whether its forward keeps packed samples apart.

Both answers come from the model's own code, not from a list of architectures: the class's ``_supports_*`` flags say
which kernels it has, and a probe through the loaded model's forward says whether restarting ``position_ids`` give
each packed sample its own attention (transformers builds that block-diagonal mask only in the models that pass
``position_ids`` to its mask builder).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from xllm_cli import console
from xllm_cli.errors import ConfigError
from xllm_cli.models import read_model_config
from xllm_cli.settings.config import XllmConfig
from xllm_cli.tiny import ARCHITECTURES, build_model, build_tokenizer

# Fastest first: what ``auto`` tries, in order.
ATTENTION_IMPLEMENTATIONS = ("flash_attention_2", "sdpa", "eager")
_CLASS_FLAGS = {
    "sdpa": "_supports_sdpa",
    "flash_attention_2": "_supports_flash_attn",
    "flex_attention": "_supports_flex_attn",
}


def model_class(config: XllmConfig) -> Any | None:
    """The class ``AutoModelForCausalLM.from_pretrained`` would build (None when that is unknown before loading, e.g.
    an unreadable config: loading reports that with its own message)."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.auto_factory import _get_model_class

    try:
        model_config = read_model_config(config)
    except (OSError, ValueError, KeyError):
        return None
    auto_map = getattr(model_config, "auto_map", None) or {}
    if config.trust_remote_code and "AutoModelForCausalLM" in auto_map:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        return get_class_from_dynamic_module(auto_map["AutoModelForCausalLM"], config.model_name_or_path)
    mapping = AutoModelForCausalLM._model_mapping
    return _get_model_class(model_config, mapping) if type(model_config) in mapping else None


def supported_attention(cls: Any) -> list[str]:
    """The attention implementations a model class has, by its own flags (eager always)."""
    return ["eager"] + [name for name, flag in _CLASS_FLAGS.items() if getattr(cls, flag, False)]


def requested_attention(config: XllmConfig) -> str:
    """--attn-implementation, with --use-flash-attention-2 (the original spelling) meaning flash_attention_2."""
    return "flash_attention_2" if config.use_flash_attention_2 else config.attn_implementation


def _flash_attention_usable() -> bool:
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def attention_implementation(config: XllmConfig, cls: Any | None) -> str | None:
    """The implementation to load the model with, checked against what its class supports.

    None leaves the choice to transformers (a class xllm cannot see before loading).
    """
    wanted = requested_attention(config)
    flag = "--use-flash-attention-2" if config.use_flash_attention_2 else f"--attn-implementation {wanted}"
    if cls is None:
        if wanted == "auto":
            return None
        supported = None
    else:
        supported = supported_attention(cls)
    if wanted == "auto":
        usable = [name for name in ATTENTION_IMPLEMENTATIONS if name in supported]
        if not _flash_attention_usable():
            usable = [name for name in usable if name != "flash_attention_2"]
        return usable[0]
    if supported is not None and wanted not in supported:
        raise ConfigError(f"{flag}: {cls.__name__} does not support it; it supports {', '.join(supported)}")
    if wanted == "flash_attention_2":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{flag} needs a CUDA GPU, and none is available here")
        if importlib.util.find_spec("flash_attn") is None:
            raise ConfigError(
                f"{flag} needs the flash-attn package, which is not installed",
                hint="pip install flash-attn --no-build-isolation, or use --attn-implementation auto",
            )
    return wanted


def report_attention(config: XllmConfig, model: Any) -> None:
    """One line saying which attention the loaded model runs, and why when xllm chose it."""
    used = getattr(model.config, "_attn_implementation", None)
    if requested_attention(config) == "auto":
        console.info(f"attention: {used} (auto: the fastest {type(model).__name__} supports here)")
    else:
        console.info(f"attention: {used}")


# (model class, attention implementation) -> None when packed samples are isolated, else what leaks. The answer
# depends only on the class's code and the kernel, so it is probed once per process.
_ISOLATION: dict[tuple[type, str], str | None] = {}
# Logit gap of the packed second sample against the same sample alone, as a share of the gap a shared attention
# window causes: kernel rounding stays far below it, any leak across samples is of its size.
_LEAK_SHARE = 0.1


def check_packing_isolation(model: Any) -> None:
    """Refuse --packing for a model whose forward lets packed samples attend to each other (exit 2)."""
    key = (type(model), str(getattr(model.config, "_attn_implementation", None)))
    if key not in _ISOLATION:
        _ISOLATION[key] = packing_leak(model)
    leak = _ISOLATION[key]
    if leak is not None:
        raise ConfigError(
            f"--packing: {type(model).__name__} ({key[1]} attention) lets packed samples attend to each other "
            f"({leak}); drop --packing (rows are then padded, one sample each)"
        )


def packing_leak(model: Any) -> str | None:
    """None when the model keeps packed samples apart, else what the probe measured."""
    if not all(_materialised(p) for p in model.parameters()):
        return _probe_twin(model)
    gap, shared_gap = packing_gaps(model)
    if gap <= _LEAK_SHARE * shared_gap or shared_gap < 1e-6:
        return None
    return f"a sample packed after another moved its logits by {gap:.3g}, as much as unmasked: {shared_gap:.3g}"


def packing_gaps(model: Any) -> tuple[float, float]:
    """Two short samples through the model's own forward. Returns how far the second sample's logits move when it is
    packed after the first as training packs rows (restarting position_ids, no attention mask), and how far they
    move when the row has a plain padding mask instead (one causal window over both samples: a full leak)."""
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    device = model.get_input_embeddings().weight.device
    first = (torch.arange(6) * 5 + 7) % vocab
    second = (torch.arange(7) * 11 + 3) % vocab
    packed = torch.cat([first, second])[None].to(device)
    positions = torch.cat([torch.arange(6), torch.arange(7)])[None].to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(
                input_ids=second[None].to(device), position_ids=positions[:, 6:], use_cache=False
            ).logits.float()
            isolated = model(input_ids=packed, position_ids=positions, use_cache=False).logits[:, 6:].float()
            shared = (
                model(input_ids=packed, position_ids=positions, attention_mask=torch.ones_like(packed), use_cache=False)
                .logits[:, 6:]
                .float()
            )
    finally:
        model.train(was_training)
    return (isolated - alone).abs().max().item(), (shared - alone).abs().max().item()


def _materialised(parameter: Any) -> bool:
    # ZeRO-3 partitions weights while loading: each rank holds an empty placeholder until the engine gathers it.
    return parameter.device.type != "meta" and parameter.numel() > 0 and not hasattr(parameter, "ds_numel")


def _probe_twin(model: Any) -> str | None:
    """The weights are partitioned (ZeRO-3): probe a tiny random model of the same class and kernel instead."""

    model_type = getattr(model.config, "model_type", None)
    if model_type not in ARCHITECTURES:
        console.warn(
            f"--packing: {type(model).__name__}'s weights are partitioned (ZeRO-3), so whether packed samples stay "
            "isolated could not be checked here; it is checked on one GPU"
        )
        return None
    twin = build_model(build_tokenizer(), architecture=model_type)
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation == "flash_attention_2":
        import torch

        twin = twin.to("cuda", torch.bfloat16)
    if implementation:
        twin.set_attn_implementation(implementation)
    return packing_leak(twin)
