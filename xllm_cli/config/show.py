"""``--show-config``: the resolved settings as a table, with the source of each value and secrets masked."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from xllm_cli.config.fields import ENTITIES, entity_title, field_entity
from xllm_cli.config.sources import ResolvedConfig


def display_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else "''"
    return "unset" if value is None else repr(value) if isinstance(value, str) else str(value)


def print_config(resolved: ResolvedConfig, names: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    config = resolved.config
    config_cls = type(config)
    names = names + [
        n for n in config_cls.model_fields if n not in names and field_entity(config_cls, n).startswith("plugin:")
    ]
    table = Table(title=f"xllm settings ({config_cls.__name__})", show_lines=False)
    table.add_column("entity")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("source")
    order = list(ENTITIES)
    names = sorted(names, key=lambda n: order.index(e) if (e := field_entity(config_cls, n)) in order else 99)
    for name in names:
        table.add_row(
            entity_title(field_entity(config_cls, name)),
            name,
            display_value(getattr(config, name)),
            resolved.source_of(name),
        )
    Console(width=160).print(table)
