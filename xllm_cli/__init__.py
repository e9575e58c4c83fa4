"""xllm: fine-tune large language models from one command line, or from Python.

The Python API mirrors the steps (``download``, ``train``, ``fuse``, ``quantize``), each taking an ``XllmConfig``.
Names are resolved lazily so ``import xllm_cli`` (and ``xllm --help``) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "XllmConfig": "xllm_cli.config.fields",
    "resolve_config": "xllm_cli.config.sources",
    "register": "xllm_cli.registry",
    "download": "xllm_cli.download",
    "train": "xllm_cli.training.run",
    "fuse": "xllm_cli.fuse",
    "quantize": "xllm_cli.quantize",
    "create_tiny_model": "xllm_cli.tiny",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xllm_cli' has no attribute {name!r}")
