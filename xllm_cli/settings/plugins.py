"""Plugin settings: a dataset, collator, trainer or experiment plugin may declare a pydantic model of the extra
settings it reads (``settings_model``). They join the config model of the run, with flags, env, .env and
config-file support like built-in fields, in a section of their own (``plugin:<key>``)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from xllm_cli.errors import ConfigError
from xllm_cli.registry import KEY_FIELDS, plugin_settings
from xllm_cli.settings.catalog import PLUGIN_SECTION, fields

# (kind, key, settings model) of a selected plugin that declares settings.
PluginSettings = tuple[str, str, type]


def selected_plugin_settings(values: Mapping[str, Any], kinds: Iterable[str]) -> tuple[PluginSettings, ...]:
    """The settings models of the plugins ``values`` select (their key field, or its default) among ``kinds``."""
    found = []
    for kind in kinds:
        key = str(values.get(KEY_FIELDS[kind]) or fields()[KEY_FIELDS[kind]].default)
        model = plugin_settings(kind, key)
        if model is not None:
            found.append((kind, key, model))
    return tuple(found)


def with_plugin_settings(config_cls: type, values: Mapping[str, Any], kinds: Iterable[str]) -> type:
    """``config_cls`` plus the settings of the plugins ``values`` selects; a clash with an existing name is an error.

    The same selection gives the same class, so a command built for it can be reused."""
    return _extended(config_cls, selected_plugin_settings(values, kinds))


@functools.cache
def _extended(config_cls: type, selected: tuple[PluginSettings, ...]) -> type:
    from pydantic import create_model  # only when a plugin has settings: --help without one never needs pydantic

    extra = {name: (info.annotation, info) for name, info in plugin_fields(selected, set(config_cls.model_fields))}
    return create_model(config_cls.__name__, __base__=config_cls, **extra) if extra else config_cls


def plugin_fields(selected: Iterable[PluginSettings], taken: set[str]) -> list[tuple[str, Any]]:
    """(name, field) of each plugin setting, marked with its plugin's section; a name in ``taken`` is an error."""
    fields = []
    for kind, key, model in selected:
        for name, info in model.model_fields.items():
            if name in taken:
                raise ConfigError(
                    f"{kind[:-1]} plugin '{key}' declares setting '{name}', which clashes with an existing setting; "
                    f"rename it in the plugin"
                )
            taken.add(name)
            info = info._copy() if hasattr(info, "_copy") else info
            info.json_schema_extra = {"section": f"{PLUGIN_SECTION}{key}"}
            fields.append((name, info))
    return fields
