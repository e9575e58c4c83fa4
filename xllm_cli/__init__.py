"""xllm: fine-tune large language models from one command line, or from Python.

The Python API mirrors the steps, each a function taking an ``XllmConfig``: ``xllm_cli.download.download``,
``xllm_cli.training.run.train`` (also ``xllm_cli.train``), ``xllm_cli.fuse.fuse`` and ``xllm_cli.quantize.quantize``.
Names here are resolved lazily so ``import xllm_cli`` (and ``xllm --help``) stays fast. (``download``, ``fuse`` and
``quantize`` are not re-exported: they share their module's name, which Python would return instead once imported.)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "XllmConfig": "xllm_cli.settings.config",
    "resolve_config": "xllm_cli.settings.sources",
    "register": "xllm_cli.registry",
    "train": "xllm_cli.training.run",
    "create_tiny_model": "xllm_cli.tiny",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xllm_cli' has no attribute {name!r}")
