"""Bytes of optimizer states per trainable parameter, for the optimizers ``--optim`` names, as the libraries that
implement them allocate them (read from their code: torch.optim, bitsandbytes, torchao, transformers' Adafactor)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Names the Trainer maps to bitsandbytes, with their number of states per parameter.
BNB_STATES = {"adam": 2, "lion": 1, "rmsprop": 1, "ademamix": 3}
BNB_NAMES = {
    "adamw_bnb_8bit",
    "adamw_8bit",
    "paged_adamw_32bit",
    "paged_adamw_8bit",
    "lion_8bit",
    "lion_32bit",
    "paged_lion_32bit",
    "paged_lion_8bit",
    "rmsprop_bnb",
    "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit",
    "ademamix",
    "ademamix_8bit",
    "paged_ademamix_32bit",
    "paged_ademamix_8bit",
}
# torch optimizers whose states are two tensors like the parameter (Adam's momentum and variance, or schedule-free's).
TORCH_TWO_STATES = {
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_torch_xla",
    "adamw_torch_npu_fused",
    "stable_adamw",
    "schedule_free_adamw",
    "schedule_free_radam",
}
TORCH_ONE_STATE = {"adagrad", "rmsprop"}
STATELESS = {"sgd", "lomo"}  # the Trainer's SGD has no momentum; LOMO updates in the backward pass
BNB_BLOCK = 256  # bitsandbytes' 8-bit states: one float32 absmax per block of 256
BNB_MIN_8BIT = 4096  # smaller tensors keep 32-bit states


@dataclass(frozen=True)
class OptimizerModel:
    """How ``name`` stores its states; ``exact`` is False for optimizers counted as AdamW (not modelled)."""

    name: str
    description: str
    exact: bool
    count: Callable[[Sequence[Any], set[int], bool, bool], tuple[int, int]]

    def states(self, params: Sequence[Any], embeddings: set[int], fp32: bool, cuda: bool) -> tuple[int, int]:
        """(bytes of states, bytes of temporaries during the step) for trainable ``params``; ``fp32``: the
        optimizer sees float32 master copies (DeepSpeed, FSDP) instead of the parameters' own dtype."""
        return self.count(params, embeddings, fp32, cuda)


def _size(param: Any, fp32: bool) -> int:
    return 4 if fp32 else param.element_size()


def _bnb(name: str) -> OptimizerModel:
    kind = next(key for key in BNB_STATES if key in name)
    states = BNB_STATES[kind]
    eight_bit = "8bit" in name

    def count(params, embeddings, fp32, cuda):
        total = 0
        for param in params:
            n = param.numel()
            if eight_bit and n >= BNB_MIN_8BIT and id(param) not in embeddings:
                total += states * (n + -(-n // BNB_BLOCK) * 4)
            else:
                # The Trainer keeps embeddings in 32-bit states under 8-bit bitsandbytes optimizers.
                total += states * n * 4
        return total, 0

    bits = "8-bit (32-bit for embeddings and small tensors)" if eight_bit else "32-bit"
    paged = "; paged: may move to CPU memory under pressure" if "paged" in name else ""
    return OptimizerModel(name, f"{states} per parameter, {bits} (bitsandbytes{paged})", True, count)


def _torch_states(name: str, states: int, fused: bool) -> OptimizerModel:
    def count(params, embeddings, fp32, cuda):
        total = sum(states * p.numel() * _size(p, fp32) for p in params)
        if fused or not params:
            return total, 0
        # torch's for-each implementation (the default on CUDA) allocates one more state-sized list during the
        # step (the square root of the second moment); the per-parameter loop (CPU) two temporaries of one tensor.
        largest = max(p.numel() * _size(p, fp32) for p in params)
        return total, (total // states if cuda else 2 * largest)

    return OptimizerModel(name, f"{states} per parameter, in the parameter's dtype (torch)", True, count)


def _torchao(name: str, bits: int) -> OptimizerModel:
    block = 256 if bits == 8 else 128

    def count(params, embeddings, fp32, cuda):
        total = 0
        for p in params:
            n = p.numel()
            total += 2 * (n * bits // 8 + -(-n // block) * 4) if n >= BNB_MIN_8BIT else 2 * n * _size(p, fp32)
        return total, 0

    return OptimizerModel(name, f"2 per parameter, {bits}-bit (torchao)", True, count)


def _adafactor(name: str) -> OptimizerModel:
    def count(params, embeddings, fp32, cuda):
        total = 0
        for p in params:
            # Factored second moment (a row and a column vector) for matrices, in float32; no first moment (beta1
            # unset, the Trainer's default).
            total += (p.shape[0] + p.numel() // p.shape[0]) * 4 if p.dim() >= 2 else p.numel() * 4
        return total, 0

    return OptimizerModel(name, "factored second moment, float32 (Adafactor)", True, count)


def optimizer_model(name: str) -> OptimizerModel:
    if name in BNB_NAMES:
        return _bnb(name)
    if name in TORCH_TWO_STATES:
        return _torch_states(name, 2, fused="fused" in name)
    if name in TORCH_ONE_STATE:
        return _torch_states(name, 1, fused=False)
    if name in STATELESS:
        return OptimizerModel(name, "no state", True, lambda params, embeddings, fp32, cuda: (0, 0))
    if name in ("adamw_torch_8bit", "adamw_torch_4bit"):
        return _torchao(name, 8 if "8bit" in name else 4)
    if name in ("adafactor", "adalomo"):
        return _adafactor(name)
    model = _torch_states(name, 2, fused=False)
    return OptimizerModel(name, "not modelled: counted as AdamW (2 states per parameter)", False, model.count)
