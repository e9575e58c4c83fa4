"""``--show-config``: the resolved settings of a step as a table, with the source of each value and secrets masked."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from xllm_cli.settings.index import section_of, section_title
from xllm_cli.settings.sources import ResolvedConfig


def display_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else "''"
    return "unset" if value is None else repr(value) if isinstance(value, str) else str(value)


def print_config(resolved: ResolvedConfig, names: list[str]) -> None:
    """One row per setting the step reads, in the order of its --help sections."""
    from rich.console import Console
    from rich.table import Table

    config = resolved.config
    config_cls = type(config)
    table = Table(title=f"xllm settings ({config_cls.__name__})", show_lines=False)
    for column in ("section", "setting", "value", "source"):
        table.add_column(column, overflow="fold" if column == "value" else None)
    for name in names:
        section = section_title(section_of(config_cls, name))
        table.add_row(section, name, display_value(getattr(config, name)), resolved.source_of(name))
    Console(width=160).print(table)
