"""Where settings come from, highest first: flags > environment > .env > --config file > defaults.

Every source is read into a plain ``{field: value}`` layer (``layers.py``) so the resolved configuration can tell where
each value came from (``--show-config``), and so a typo is caught with the closest valid name instead of being ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from xllm_cli.errors import ConfigError
from xllm_cli.settings.config import XllmConfig
from xllm_cli.settings.layers import merged, read_layers, reject_unknown
from xllm_cli.settings.names import env_names, flag
from xllm_cli.settings.plugins import with_plugin_settings

C = TypeVar("C", bound=BaseModel)


@dataclass
class ResolvedConfig:
    """The validated configuration and, for each field, the source its value came from."""

    config: Any
    sources: dict[str, str] = field(default_factory=dict)

    def source_of(self, name: str) -> str:
        return self.sources.get(name, "default")


def resolve_config(
    flags: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    config_cls: type[C] = XllmConfig,  # type: ignore[assignment]
    plugin_kinds: Iterable[str] = (),
) -> ResolvedConfig:
    """Merge the four sources and validate. Raises ``ConfigError`` with one line on any problem.

    ``plugin_kinds``: the selected plugins of these kinds add their settings (``settings_model``) to ``config_cls``
    first, so their names are valid in every source.
    """
    layers = read_layers(flags or {}, config_file, os.environ if environ is None else environ)
    values, sources = merged(layers)
    config_cls = with_plugin_settings(config_cls, values, plugin_kinds)
    fields = config_cls.model_fields
    reject_unknown(layers, fields)
    known = {key: value for key, value in values.items() if key in fields}
    return ResolvedConfig(validate(config_cls, known, sources), {k: v for k, v in sources.items() if k in fields})


def validate(config_cls: type[C], values: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> C:
    """``model_validate`` without reading the environment again, with pydantic's errors turned into one line."""
    try:
        return config_cls.model_validate(dict(values))
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, sources or {})) from None


def describe_validation_error(error: ValidationError, sources: Mapping[str, str]) -> str:
    messages = []
    for item in error.errors(include_input=False, include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["loc"]:
            name = str(item["loc"][0])
            origin = sources.get(name)
            origin = None if origin == "flag" else origin  # the flag name already says where
            where = {"env": f"env {env_names(name)[0]}", ".env": f".env {env_names(name)[0]}"}.get(origin, origin)
            message = f"{flag(name)}{f' (from {where})' if where else ''}: {message}"
        messages.append(message)
    return "; ".join(messages)
