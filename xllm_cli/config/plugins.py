"""Plugin settings: a dataset, collator, trainer or experiment plugin may declare a pydantic model of the extra
settings it reads (``settings_model``). They join the one config model for the run, with flags, env, .env and
config-file support like built-in fields."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import create_model

from xllm_cli.errors import ConfigError
from xllm_cli.registry import KEY_FIELDS, plugin_settings


def selected_plugin_settings(config_cls: type, values: Mapping[str, Any], kinds: Iterable[str]) -> list[tuple]:
    """(kind, key, settings model) for each selected plugin that declares settings."""
    found = []
    for kind in kinds:
        field = KEY_FIELDS[kind]
        key = values.get(field) or config_cls.model_fields[field].default
        model = plugin_settings(kind, str(key))
        if model is not None:
            found.append((kind, str(key), model))
    return found


def extend_config(config_cls: type, values: Mapping[str, Any], kinds: Iterable[str]) -> type:
    """``config_cls`` plus the settings of the plugins ``values`` selects; a clash with an existing name is an error."""
    extra: dict[str, Any] = {}
    for kind, key, model in selected_plugin_settings(config_cls, values, kinds):
        for name, info in model.model_fields.items():
            if name in config_cls.model_fields or name in extra:
                raise ConfigError(
                    f"{kind[:-1]} plugin '{key}' declares setting '{name}', which clashes with an existing setting; "
                    f"rename it in the plugin"
                )
            info = info._copy() if hasattr(info, "_copy") else info
            info.json_schema_extra = {"entity": f"plugin:{key}"}
            extra[name] = (info.annotation, info)
    if not extra:
        return config_cls
    return create_model(config_cls.__name__, __base__=config_cls, **extra)


def extender(kinds: Iterable[str]):
    kinds = tuple(kinds)
    return lambda config_cls, values: extend_config(config_cls, values, kinds)
