"""Settings: typed sections (``sections.py``) composed into ``XllmConfig`` (``config.py``), read from flags, env,
``.env`` and config files (``layers.py``, ``sources.py``). Nothing here imports a command-line library.

``XllmConfig`` and ``resolve_config`` are imported on first use: the command line's ``--help`` and TAB completion read
``catalog.json`` (``catalog.py``) alone and must not pay for pydantic.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"XllmConfig": "xllm_cli.settings.config", "resolve_config": "xllm_cli.settings.sources"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xllm_cli.settings' has no attribute {name!r}")
