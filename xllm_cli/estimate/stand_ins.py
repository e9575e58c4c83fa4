"""Stand-ins for what meta tensors cannot show, each allocating what the real kernel allocates:

- attention: SDPA's flash/memory-efficient kernels save query, key, value, output and a float32 log-sum-exp per row;
  on meta, PyTorch would pick its math fallback, which materialises the full attention matrix;
- bitsandbytes 4/8-bit and GPTQ linear layers: packed weights and quantization constants of their real sizes, a
  dequantized weight that lives only during its matmul, the input kept for backward where bitsandbytes keeps it;
- autocast, which skips meta tensors.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any
from unittest import mock

from xllm_cli.settings.config import XllmConfig


@contextlib.contextmanager
def autocast(compute_dtype: Any) -> Iterator[None]:
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


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    flash, _, _ = _stand_in_functions()
    return flash.apply(query, key, value, attn_mask)


def quantized_linear(linear: Any, config: XllmConfig, compute_dtype: Any, gptq: dict[str, Any] | None) -> Any:
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


def flash_attention() -> Any:
    """SDPA replaced by the flash-attention stand-in while active."""
    return mock.patch("torch.nn.functional.scaled_dot_product_attention", _sdpa)
