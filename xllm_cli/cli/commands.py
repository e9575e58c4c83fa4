"""The commands beside the four steps: ``xllm plugins`` (what is installed), ``xllm cache`` (``cli/cache.py``) and
``xllm tiny`` (a model to try things on). Each is a thin layer over a library function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xllm_cli.registry import GROUPS
from xllm_cli.tiny_configs import ARCHITECTURES

KINDS = tuple(GROUPS)


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
    """The settings a plugin declares (its ``settings_model``), imported on purpose: ``--help`` shows them only when
    the plugin is selected, and must stay fast."""
    from xllm_cli.registry import load, plugin_settings
    from xllm_cli.settings.names import env_names, flag

    load(kind, key)  # unknown key, import failure, contract: the usual one-line errors
    model = plugin_settings(kind, key)
    fields = model.model_fields if model is not None else {}
    print(f"{kind[:-1]} '{key}': " + (f"{len(fields)} setting(s)" if fields else "no settings of its own"))
    for name, info in fields.items():
        default = "required" if info.is_required() else repr(info.default)
        print(f"  {flag(name):<28} {env_names(name)[0]:<32} default {default}")
        if info.description:
            print(f"      {info.description}")


def _architectures() -> list[str]:
    return list(ARCHITECTURES)


def tiny(
    path: Annotated[Path, typer.Argument(help="Folder to write the model and tokenizer to.")],
    hidden_size: Annotated[int, typer.Option(help="Hidden size.")] = 64,
    num_layers: Annotated[int, typer.Option(help="Decoder layers.")] = 2,
    architecture: Annotated[
        str,
        typer.Option(
            help=f"Model type, as config.json names it: {', '.join(ARCHITECTURES)}.",
            autocompletion=_architectures,
        ),
    ] = "llama",
    tie_word_embeddings: Annotated[
        Optional[bool],
        typer.Option(
            "--tie-word-embeddings/--no-tie-word-embeddings",
            help="Share the input embeddings with the output head; unset keeps the architecture's default.",
            show_default="architecture's default",
        ),
    ] = None,
) -> None:
    """Create a tiny model (random weights, a tokenizer built locally) loadable like any checkpoint. No network."""
    from xllm_cli.models import looks_local
    from xllm_cli.tiny import create_tiny_model

    create_tiny_model(
        path,
        hidden_size=hidden_size,
        num_layers=num_layers,
        architecture=architecture,
        tie_word_embeddings=tie_word_embeddings,
    )
    # Written as a path (./tiny), which every step reads as a folder, never as a Hub id.
    shown = str(path) if looks_local(str(path)) else f"./{path}"
    print(f"tiny {architecture} model written to {shown} (use --model-name-or-path {shown})")


def register(app: typer.Typer) -> None:
    from xllm_cli.cli.cache import cache_app

    app.command(name="plugins")(plugins)
    app.add_typer(cache_app, name="cache")
    app.command(name="tiny")(tiny)
