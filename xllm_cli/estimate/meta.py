"""One device's training step, run on the meta device: the model built from its config alone (no weights), prepared
exactly as ``xllm train`` prepares it (same functions: dtypes, k-bit preparation, gradient checkpointing, LoRA,
stabilize), then a forward pass, xllm's loss and a backward pass on meta tensors while every tensor the step creates
is tracked until it dies. That gives what the allocator would hold: activations saved for backward, logits, the
recomputation of checkpointed layers, gradients.

What a meta tensor cannot show is replaced by a stand-in that allocates what the real kernel does:

- attention: SDPA's flash/memory-efficient kernels save query, key, value, output and a float32 log-sum-exp per row;
  on meta, PyTorch would pick its math fallback, which materialises the full attention matrix;
- bitsandbytes 4/8-bit and GPTQ linear layers: packed weights and quantization constants of their real sizes, a
  dequantized weight that lives only during its matmul, the input kept for backward where bitsandbytes keeps it.

Values that depend on data (``.item()``, ``.all()``) answer as for a batch of full rows (no padding, no packing).
A stack of identical layers is simulated at depths 1 and 2 and extrapolated: every quantity is linear in the depth.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any
from unittest import mock

from xllm_cli.errors import ConfigError


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
    largest_trainable: int = field(default=0, metadata={"depth": "max"})

    def extrapolate(self, deeper: Footprint, depth: int) -> Footprint:
        """From depths 1 (self) and 2 (deeper) to ``depth``."""
        values = {}
        for item in fields(self):
            one, two = getattr(self, item.name), getattr(deeper, item.name)
            values[item.name] = (
                max(one, two) if item.metadata.get("depth") == "max" else one + (two - one) * (depth - 1)
            )
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


@contextlib.contextmanager
def _autocast(compute_dtype: Any) -> Iterator[None]:
    """torch.autocast as accelerate applies it to the forward pass of a mixed-precision run, for meta tensors (which
    autocast skips): matmuls take their inputs in ``compute_dtype``, softmax and normalisations in float32. The
    functions are wrapped where models call them, above autograd like autocast, so the casted copies are what
    backward keeps; a function mode would not do, as meta's backward (checkpoint recomputation included) runs on
    another thread. Casts of trainable leaf tensors are cached for the pass, as autocast caches them."""
    import torch
    import torch.nn.functional as F

    cache: dict[int, Any] = {}

    def cast(value: Any, dtype: Any, source: tuple[Any, ...]) -> Any:
        if not isinstance(value, torch.Tensor) or value.dtype not in source:
            return value
        if value.is_leaf and value.requires_grad:
            if id(value) not in cache:
                cache[id(value)] = (value, value.to(dtype))  # the tensor too, so its id stays its own
            return cache[id(value)][1]
        return value.to(dtype)

    def casting(function: Any, dtype: Any, source: tuple[Any, ...]) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            args = tuple(cast(a, dtype, source) for a in args)
            return function(*args, **{k: cast(v, dtype, source) for k, v in kwargs.items()})

        return call

    low = [(F, "linear"), (F, "conv1d"), (F, "conv2d"), (torch, "matmul"), (torch, "mm"), (torch, "bmm")]
    low += [(torch, "addmm"), (torch, "baddbmm")]
    full = [(F, "softmax"), (F, "log_softmax"), (F, "cross_entropy"), (F, "layer_norm"), (F, "group_norm")]
    half_types = (torch.float16, torch.bfloat16)
    with contextlib.ExitStack() as stack:
        for owner, name in low:
            stack.enter_context(
                mock.patch.object(owner, name, casting(getattr(owner, name), compute_dtype, (torch.float32,)))
            )
        for owner, name in full:
            stack.enter_context(
                mock.patch.object(owner, name, casting(getattr(owner, name), torch.float32, half_types))
            )
        yield


@functools.cache
def _stand_in_functions() -> tuple[Any, Any, Any]:
    """The autograd functions of the stand-ins (built on first use: torch is imported lazily)."""
    import torch

    class FlashAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, query, key, value, mask):
            out = torch.empty_like(query)
            log_sum_exp = query.new_empty(query.shape[:-1], dtype=torch.float32)
            ctx.save_for_backward(query, key, value, out, log_sum_exp, *([mask] if mask is not None else []))
            return out

        @staticmethod
        def backward(ctx, grad):
            query, key, value = ctx.saved_tensors[:3]
            return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), None

    class DequantizedMatmul(torch.autograd.Function):
        """4-bit and GPTQ: the weight is dequantized for the matmul and again for backward; nothing else is kept."""

        @staticmethod
        def forward(ctx, x, layer):
            ctx.layer = layer
            weight = x.new_empty((layer.out_features, layer.in_features))
            return torch.nn.functional.linear(x, weight)

        @staticmethod
        def backward(ctx, grad):
            weight = grad.new_empty((ctx.layer.out_features, ctx.layer.in_features))
            return grad @ weight, None

    class Int8Matmul(torch.autograd.Function):
        """bitsandbytes 8-bit: the input is quantized per call and kept for backward; the weight is dequantized.
        bitsandbytes keeps the input as an attribute of its context, not through ``save_for_backward``, so gradient
        checkpointing does not drop it: neither here."""

        @staticmethod
        def forward(ctx, x, layer):
            ctx.input = x
            ctx.layer = layer
            x.new_empty(x.shape, dtype=torch.int8)  # the quantized input, freed at once
            weight = x.new_empty((layer.out_features, layer.in_features))
            return torch.nn.functional.linear(x, weight)

        @staticmethod
        def backward(ctx, grad):
            weight = grad.new_empty((ctx.layer.out_features, ctx.layer.in_features))
            return grad @ weight, None

    return FlashAttention, DequantizedMatmul, Int8Matmul


@functools.cache
def _quantized_linear_class() -> type:
    import torch

    _, dequantized, int8 = _stand_in_functions()

    class QuantizedLinear(torch.nn.Linear):
        kind = "4bit"
        compute_dtype: Any = None

        def forward(self, x):
            if self.kind == "8bit":
                return int8.apply(x, self)
            # bitsandbytes' Linear4bit computes in its compute dtype and returns the input's dtype.
            out = dequantized.apply(x.to(self.compute_dtype), self)
            return out.to(x.dtype) if self.kind == "4bit" else out

    return QuantizedLinear


def _sdpa_stand_in(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    flash, _, _ = _stand_in_functions()
    return flash.apply(query, key, value, attn_mask)


def _quantized_stand_in(linear: Any, config: Any, compute_dtype: Any, gptq: dict[str, Any] | None) -> Any:
    """A linear layer replaced by its quantized twin's sizes: parameters and buffers of the real shapes and dtypes."""
    import torch

    out_features, in_features = linear.out_features, linear.in_features
    numel = out_features * in_features
    meta = {"device": "meta"}

    layer = _quantized_linear_class()(in_features, out_features, bias=False, **meta)
    layer.bias = linear.bias
    layer.compute_dtype = compute_dtype
    buffers: dict[str, tuple[tuple[int, ...], Any]] = {}
    if gptq is not None:
        layer.kind = "gptq"
        bits, group = gptq["bits"], gptq["group_size"] if gptq["group_size"] > 0 else in_features
        groups = -(-in_features // group)
        weight = torch.empty((in_features * bits // 32, out_features), dtype=torch.int32, **meta)
        buffers = {
            "scales": ((groups, out_features), torch.float16),
            "qzeros": ((groups, out_features * bits // 32), torch.int32),
            "g_idx": ((in_features,), torch.int32),
        }
    elif config.load_in_4bit:
        layer.kind = "4bit"
        blocks = -(-numel // 64)  # bitsandbytes' 4-bit blocks of 64 weights, one absmax each
        weight = torch.empty(((numel + 1) // 2, 1), dtype=torch.uint8, **meta)
        if config.bnb_4bit_use_double_quant:
            # absmax quantized to 8 bits in blocks of 256, with a float32 absmax per block and a 256-entry code.
            buffers = {
                "absmax": ((blocks,), torch.uint8),
                "absmax2": ((-(-blocks // 256),), torch.float32),
                "code2": ((256,), torch.float32),
                "code": ((16,), torch.float32),
            }
        else:
            buffers = {"absmax": ((blocks,), torch.float32), "code": ((16,), torch.float32)}
    else:
        layer.kind = "8bit"
        if config.llm_int8_has_fp16_weight:
            # The float weight stays (peft's k-bit preparation then casts it to float32); every forward quantizes it
            # again into ``state.CB``, which the layer keeps.
            weight = torch.empty((out_features, in_features), dtype=linear.weight.dtype, **meta)
            buffers = {"CB": ((out_features, in_features), torch.int8), "SCB": ((out_features,), torch.float32)}
        else:
            weight = torch.empty((out_features, in_features), dtype=torch.int8, **meta)
            buffers = {"SCB": ((out_features,), torch.float32)}
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    for name, (shape, dtype) in buffers.items():
        layer.register_buffer(name, torch.empty(shape, dtype=dtype, **meta))
    return layer


def build_model(model_config: Any, config: Any, compute_dtype: Any, weights_dtype: Any, half: Any) -> tuple[Any, dict]:
    """The model on the meta device, as ``xllm train`` would train it, and its parameter counts by kind."""
    import torch
    from transformers import AutoModelForCausalLM

    from xllm_cli.training.lora import apply_lora, stabilize
    from xllm_cli.training.model import prepare_for_training

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
                setattr(model.get_submodule(parent), child, _quantized_stand_in(module, config, compute_dtype, gptq))
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


def _gptq_settings(published: Any, config: Any) -> dict[str, Any]:
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
    model_config: Any,
    config: Any,
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


def _depth(model_config: Any) -> int | None:
    return getattr(model_config, "num_hidden_layers", None)


def _uniform_layers(model_config: Any) -> bool:
    layer_types = getattr(model_config, "layer_types", None)
    return not layer_types or len(set(layer_types)) == 1


def _at_depth(model_config: Any, depth: int) -> Any:
    shallow = copy.deepcopy(model_config)
    shallow.num_hidden_layers = depth
    if getattr(shallow, "layer_types", None):
        shallow.layer_types = shallow.layer_types[:depth]
    return shallow


def _step(
    model_config: Any,
    config: Any,
    batch_size: int,
    length: int,
    dtypes: tuple[Any, Any, Any],
    precision: str,
    optimizer_bytes: Any,
) -> Footprint:
    import torch

    from xllm_cli.training.loss import token_loss_sum

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
        largest_trainable=max((p.numel() * p.element_size() for p in trainable), default=0),
    )
    result.optimizer, result.optimizer_step_extra = optimizer_bytes(trainable, embedding_weights, False)
    result.optimizer_fp32, _ = optimizer_bytes(trainable, embedding_weights, True)

    ids = torch.zeros((batch_size, length), dtype=torch.long, device="meta")
    memory = _LiveMemory({t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers(), ids]})
    hooks = [p.register_post_accumulate_grad_hook(lambda p: memory.gradient(p.grad)) for p in trainable]
    sdpa = _patch_sdpa()
    try:
        # Autocast covers the forward and, as torch.utils.checkpoint restores it, the recomputation in backward.
        autocast = precision == "autocast"
        with sdpa, _quiet(), _dispatch_mode(memory):
            with _autocast(compute) if autocast else contextlib.nullcontext():
                logits = model(input_ids=ids, use_cache=False).logits
            if autocast:
                logits = logits.float()  # accelerate returns the forward's outputs in float32
            total, _ = token_loss_sum(logits, ids, config.label_smoothing_factor)
            loss = total / (batch_size * length)
            del logits, total
            result.activations = memory.live
            if loss.requires_grad:
                with _autocast(compute) if autocast else contextlib.nullcontext():
                    loss.backward()
    except (NotImplementedError, RuntimeError) as error:
        raise SimulationError(str(error).splitlines()[0]) from None
    finally:
        for hook in hooks:
            hook.remove()
    result.step_peak = memory.peak
    result.step_peak_without_gradients = memory.peak_without_gradients
    return result


def _patch_sdpa() -> Any:
    return mock.patch("torch.nn.functional.scaled_dot_product_attention", _sdpa_stand_in)
