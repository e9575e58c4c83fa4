"""One device's training step, run on the meta device: the model built from its config alone (no weights), prepared
exactly as ``xllm train`` prepares it (same functions: dtypes, k-bit preparation, gradient checkpointing, LoRA,
stabilize), then a forward pass, xllm's loss and a backward pass on meta tensors while every tensor the step creates
is tracked until it dies. That gives what the allocator would hold: activations saved for backward, logits, the
recomputation of checkpointed layers, gradients.

What a meta tensor cannot show is replaced by a stand-in that allocates what the real kernel does (``stand_ins``):
flash attention, quantized linear layers, autocast.

Values that depend on data (``.item()``, ``.all()``) answer as for a batch of full rows (no padding, no packing).
A stack of identical layers is simulated at depths 1 and 2 and extrapolated: every quantity is linear in the depth.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from dataclasses import dataclass, fields
from typing import Any

from xllm_cli.errors import ConfigError
from xllm_cli.estimate.stand_ins import autocast, flash_attention, quantized_linear
from xllm_cli.settings.config import XllmConfig
from xllm_cli.training.lora import apply_lora, stabilize
from xllm_cli.training.loss import token_loss_sum
from xllm_cli.training.model import prepare_for_training


class SimulationError(Exception):
    """The model's forward pass cannot run on the meta device (data-dependent shapes, e.g. mixture-of-experts)."""


@dataclass
class Footprint:
    """One device, no sharding: parameters (count) and bytes. Extrapolated in depth field by field."""

    parameters: int = 0  # as published (quantized layers counted unquantized), adapters included
    trainable: int = 0
    embeddings: int = 0
    head: int = 0  # 0 when tied to the embeddings
    linear: int = 0  # linear layers of the blocks (the ones LoRA may target)
    norms: int = 0
    adapters: int = 0
    weights: int = 0  # bytes of parameters and buffers as trained (quantized, cast)
    weights_half: int = 0  # ... with every floating-point tensor in 16 bits (DeepSpeed casts the model so)
    gradients: int = 0
    optimizer: int = 0  # optimizer states for the trainable parameters in their own dtype
    optimizer_fp32: int = 0  # ... for fp32 master copies (DeepSpeed, FSDP)
    optimizer_step_extra: int = 0  # temporaries of the optimizer step
    activations: int = 0  # held at the end of the forward pass (loss included)
    step_peak: int = 0  # most bytes alive during forward + backward, gradients included
    step_peak_without_gradients: int = 0

    def extrapolate(self, deeper: Footprint, depth: int) -> Footprint:
        """From depths 1 (self) and 2 (deeper) to ``depth``."""
        values = {}
        for item in fields(self):
            one, two = getattr(self, item.name), getattr(deeper, item.name)
            values[item.name] = one + (two - one) * (depth - 1)
        return Footprint(**values)


class _LiveMemory:
    """Bytes of the storages created while active, each counted from its creation to the death of its last tensor."""

    def __init__(self, external: set[int]):
        self.external = external  # storages that existed before (parameters, inputs): not the step's
        self.count: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.gradient_keys: set[int] = set()
        self.live = self.live_gradients = 0
        self.peak = self.peak_without_gradients = 0

    def created(self, tensor: Any) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.external:
            return
        if key not in self.size:
            self.size[key] = storage.nbytes()
            self.count[key] = 0
            self.live += self.size[key]
            self.peak = max(self.peak, self.live)
            self.peak_without_gradients = max(self.peak_without_gradients, self.live - self.live_gradients)
        self.count[key] += 1
        weakref.finalize(tensor, self._released, key)

    def _released(self, key: int) -> None:
        self.count[key] -= 1
        if self.count[key] == 0:
            size = self.size.pop(key)
            del self.count[key]
            self.live -= size
            if key in self.gradient_keys:
                self.gradient_keys.discard(key)
                self.live_gradients -= size

    def gradient(self, tensor: Any) -> None:
        key = tensor.untyped_storage()._cdata
        if key in self.size and key not in self.gradient_keys:
            self.gradient_keys.add(key)
            self.live_gradients += self.size[key]


def _dispatch_mode(memory: _LiveMemory) -> Any:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Tracking(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                # A data-dependent Python value (``if mask.all():``): answered as for full rows without padding.
                return True if args[0].dtype == torch.bool else 0
            out = func(*args, **(kwargs or {}))
            for value in tree_flatten(out)[0]:
                if isinstance(value, torch.Tensor):
                    memory.created(value)
            return out

    return Tracking()


def build_model(
    model_config: XllmConfig, config: XllmConfig, compute_dtype: Any, weights_dtype: Any, half: Any
) -> tuple[Any, dict]:
    """The model on the meta device, as ``xllm train`` would train it, and its parameter counts by kind."""
    import torch
    from transformers import AutoModelForCausalLM

    model_config = copy.deepcopy(model_config)
    published_quantization = getattr(model_config, "quantization_config", None)
    if published_quantization is not None:
        del model_config.quantization_config  # from_config must build plain layers; the sizes come from us
    model = None
    # SDPA as xllm asks for it; a model without SDPA support gets eager attention, whose score matrices the
    # simulation then counts as they are.
    for attention in ("sdpa", "eager"):
        try:
            with torch.device("meta"), _quiet():
                model = AutoModelForCausalLM.from_config(
                    model_config,
                    dtype=weights_dtype,
                    attn_implementation=attention,
                    trust_remote_code=config.trust_remote_code,
                )
            break
        except (ValueError, ImportError, KeyError, AssertionError) as error:
            if attention == "eager" or "attention" not in str(error):
                raise ConfigError(f"cannot build the model from its config: {str(error).splitlines()[0]}") from None
    counts = parameter_counts(model)
    quantized = bool(config.load_in_4bit or config.load_in_8bit or config.from_gptq)
    if quantized:
        gptq = _gptq_settings(published_quantization, config) if config.from_gptq else None
        head = model.get_output_embeddings()
        for name, module in list(model.named_modules()):
            if isinstance(module, torch.nn.Linear) and module is not head:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, quantized_linear(module, config, compute_dtype, gptq))
        # What peft reads to treat the model as quantized, as transformers sets it on a loaded one.
        model.is_loaded_in_4bit = bool(config.load_in_4bit)
        model.is_loaded_in_8bit = bool(config.load_in_8bit)
        if gptq is not None:
            model.quantization_method = "gptq"
    with _quiet():
        model = prepare_for_training(model, config, quantized)
        if config.apply_lora:
            try:
                model = apply_lora(model, config, stand_ins=True)
            except ValueError as error:  # peft's own refusal, e.g. no linear layer to adapt
                raise ConfigError(f"LoRA cannot be applied to this model: {str(error).splitlines()[0]}") from None
        if config.stabilize:
            model = stabilize(model, half)
    model.train()
    return model, counts


def _gptq_settings(published: Any, config: XllmConfig) -> dict[str, Any]:
    published = published if isinstance(published, dict) else getattr(published, "__dict__", {}) or {}
    return {
        "bits": int(published.get("bits", config.gptq_bits)),
        "group_size": int(published.get("group_size", config.gptq_group_size)),
    }


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def parameter_counts(model: Any) -> dict[str, int]:
    """Parameters by kind: embeddings, head (0 when tied), linear layers of the blocks, norms, the rest."""
    import torch

    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    counts = {"embeddings": 0, "head": 0, "linear": 0, "norms": 0, "parameters": 0}
    seen: set[int] = set()
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        numel = sum(p.numel() for p in own)
        if module is embedding:
            counts["embeddings"] += numel
        elif module is head:
            counts["head"] += numel
        elif isinstance(module, torch.nn.Linear):
            counts["linear"] += numel
        elif "norm" in type(module).__name__.lower():
            counts["norms"] += numel
        counts["parameters"] += numel
    return counts


def storage_bytes(tensors: Any, floating_size: int | None = None) -> int:
    """Bytes of the distinct storages behind ``tensors`` (tied weights count once); ``floating_size``: bytes per
    element of floating-point tensors instead of their own."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        size = storage.nbytes()
        if floating_size is not None and tensor.is_floating_point():
            size = size // tensor.element_size() * floating_size
        seen[storage._cdata] = size
    return sum(seen.values())


def footprint(
    model_config: XllmConfig,
    config: XllmConfig,
    batch_size: int,
    length: int,
    dtypes: tuple[Any, Any, Any],
    precision: str,
    optimizer_bytes: Any,
) -> Footprint:
    """The step at the model's full depth, from depths 1 and 2 when its layers are all alike.

    ``precision``: ``fp32``; ``autocast`` (the Trainer's mixed precision: autocast forward, float32 outputs); ``cast``
    (DeepSpeed: every floating-point tensor of the model in 16 bits).
    """
    depth = _depth(model_config)
    args = (config, batch_size, length, dtypes, precision, optimizer_bytes)
    if depth is None or depth <= 2 or not _uniform_layers(model_config):
        return _step(model_config, *args)
    shallow = [_step(_at_depth(model_config, d), *args) for d in (1, 2)]
    return shallow[0].extrapolate(shallow[1], depth)


def _depth(model_config: XllmConfig) -> int | None:
    return getattr(model_config, "num_hidden_layers", None)


def _uniform_layers(model_config: XllmConfig) -> bool:
    layer_types = getattr(model_config, "layer_types", None)
    return not layer_types or len(set(layer_types)) == 1


def _at_depth(model_config: XllmConfig, depth: int) -> Any:
    shallow = copy.deepcopy(model_config)
    shallow.num_hidden_layers = depth
    if getattr(shallow, "layer_types", None):
        shallow.layer_types = shallow.layer_types[:depth]
    return shallow


def _step(
    model_config: XllmConfig,
    config: XllmConfig,
    batch_size: int,
    length: int,
    dtypes: tuple[Any, Any, Any],
    precision: str,
    optimizer_bytes: Any,
) -> Footprint:
    import torch

    compute, weights, half = dtypes
    model, counts = build_model(model_config, config, compute, weights, half)
    if precision == "cast":
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(compute)
    trainable = [p for p in model.parameters() if p.requires_grad]
    embedding_weights = {id(p) for p in model.get_input_embeddings().parameters()}
    adapters = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    result = Footprint(
        parameters=counts["parameters"] + adapters,
        trainable=sum(p.numel() for p in trainable),
        embeddings=counts["embeddings"],
        head=counts["head"],
        linear=counts["linear"],
        norms=counts["norms"],
        adapters=adapters,
        weights=storage_bytes([*model.parameters(), *model.buffers()]),
        weights_half=storage_bytes([*model.parameters(), *model.buffers()], floating_size=2),
        gradients=sum(p.numel() * p.element_size() for p in trainable),
    )
    result.optimizer, result.optimizer_step_extra = optimizer_bytes(trainable, embedding_weights, False)
    result.optimizer_fp32, _ = optimizer_bytes(trainable, embedding_weights, True)

    ids = torch.zeros((batch_size, length), dtype=torch.long, device="meta")
    memory = _LiveMemory({t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers(), ids]})
    hooks = [p.register_post_accumulate_grad_hook(lambda p: memory.gradient(p.grad)) for p in trainable]
    sdpa = flash_attention()
    try:
        # Autocast covers the forward and, as torch.utils.checkpoint restores it, the recomputation in backward.
        mixed = precision == "autocast"
        with sdpa, _quiet(), _dispatch_mode(memory):
            with autocast(compute) if mixed else contextlib.nullcontext():
                logits = model(input_ids=ids, use_cache=False).logits
            if mixed:
                logits = logits.float()  # accelerate returns the forward's outputs in float32
            total, _ = token_loss_sum(logits, ids, config.label_smoothing_factor)
            loss = total / (batch_size * length)
            del logits, total
            result.activations = memory.live
            if loss.requires_grad:
                with autocast(compute) if mixed else contextlib.nullcontext():
                    loss.backward()
    except (NotImplementedError, RuntimeError) as error:
        raise SimulationError(str(error).splitlines()[0]) from None
    finally:
        for hook in hooks:
            hook.remove()
    result.step_peak = memory.peak
    result.step_peak_without_gradients = memory.peak_without_gradients
    return result
