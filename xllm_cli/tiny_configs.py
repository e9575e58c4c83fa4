"""The architectures ``xllm tiny`` builds, each as the config settings of a tiny model (a table: the command line
reads it for ``xllm tiny --help`` without building anything)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xllm_cli.errors import ConfigError, did_you_mean


def _decoder(hidden: int, layers: int, **extra: Any) -> dict[str, Any]:
    """Settings named the way most decoders name them: 4 heads, 2 key/value heads, MLP twice as wide (an ``extra``
    of None drops a setting the config class does not have)."""
    settings = {
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        **extra,
    }
    return {name: value for name, value in settings.items() if value is not None}


def _with_head_dim(hidden: int, layers: int) -> dict[str, Any]:
    # These configs default head_dim to 128 or 256 whatever the hidden size: keep heads * head_dim == hidden.
    return _decoder(hidden, layers, head_dim=hidden // 4)


# model_type (as config.json spells it) -> its config settings for a given hidden size and layer count. Layer widths
# stay multiples of 32, so GPTQ groups of 32 fit every layer.
ARCHITECTURES: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "llama": _decoder,
    "mistral": _decoder,
    "qwen2": _decoder,
    "qwen3": _with_head_dim,
    "gemma": _with_head_dim,
    "gemma2": lambda h, n: _with_head_dim(h, n) | {"query_pre_attn_scalar": h // 4},
    "gemma3_text": lambda h, n: _with_head_dim(h, n) | {"query_pre_attn_scalar": h // 4},
    "phi3": _decoder,
    "gpt2": lambda h, n: {"n_embd": h, "n_layer": n, "n_head": 4, "n_positions": 2048},
    "gpt_neox": lambda h, n: _decoder(h, n, num_key_value_heads=None),
    "falcon": lambda h, n: {"hidden_size": h, "num_hidden_layers": n, "num_attention_heads": 4},
    "opt": lambda h, n: {
        "hidden_size": h,
        "ffn_dim": h * 2,
        "num_hidden_layers": n,
        "num_attention_heads": 4,
        "word_embed_proj_dim": h,
    },
    "bloom": lambda h, n: {"hidden_size": h, "n_layer": n, "n_head": 4},
}


def check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"--architecture {architecture}: xllm builds no tiny model of it{did_you_mean(architecture, ARCHITECTURES)} "
            f"(known: {', '.join(ARCHITECTURES)})"
        )
