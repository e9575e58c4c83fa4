"""``xllm plugins``: every registered dataset, collator, trainer and experiment key, and who provides it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

KINDS = ("datasets", "collators", "trainers", "experiments")


def plugins(
    kind: Annotated[
        Optional[str],
        typer.Argument(help="Only this kind: datasets, collators, trainers or experiments.", show_default=False),
    ] = None,
    key: Annotated[
        Optional[str],
        typer.Argument(
            help="Show this plugin's settings (flags, env names, defaults, help); imports it.", show_default=False
        ),
    ] = None,
) -> None:
    """List registered plugin keys with the package that provides each (reads metadata only; imports no plugin)."""
    from xllm_cli.errors import ConfigError, did_you_mean
    from xllm_cli.registry import available

    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown kind '{kind}'{did_you_mean(kind, KINDS)} (choose from {', '.join(KINDS)})")
    if kind is not None and key is not None:
        _print_settings(kind, key)
        return
    for name in (kind,) if kind else KINDS:
        print(f"{name}:")
        for entry in available(name).values():
            print(f"  {entry.key:<16} {entry.provider:<28} {entry.target}")


def _print_settings(kind: str, key: str) -> None:
    """The settings a plugin declares (its ``settings_model``): the help its flags cannot show in ``--help``, which
    must stay fast and therefore never imports a plugin."""
    from xllm_cli.config.sources import env_names
    from xllm_cli.config.validation import flag
    from xllm_cli.registry import load, plugin_settings

    load(kind, key)  # unknown key, import failure, contract: the usual one-line errors
    model = plugin_settings(kind, key)
    fields = model.model_fields if model is not None else {}
    print(f"{kind[:-1]} '{key}': " + (f"{len(fields)} setting(s)" if fields else "no settings of its own"))
    for name, info in fields.items():
        default = "required" if info.is_required() else repr(info.default)
        print(f"  {flag(name):<28} {env_names(name)[0]:<32} default {default}")
        if info.description:
            print(f"      {info.description}")


def register(app: typer.Typer) -> None:
    app.command(name="plugins")(plugins)
