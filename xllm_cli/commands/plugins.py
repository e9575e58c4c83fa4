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
) -> None:
    """List registered plugin keys with the package that provides each (reads metadata only; imports no plugin)."""
    from xllm_cli.errors import ConfigError, did_you_mean
    from xllm_cli.registry import available

    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown kind '{kind}'{did_you_mean(kind, KINDS)} (choose from {', '.join(KINDS)})")
    for name in (kind,) if kind else KINDS:
        print(f"{name}:")
        for entry in available(name).values():
            print(f"  {entry.key:<16} {entry.provider:<28} {entry.target}")


def register(app: typer.Typer) -> None:
    app.command(name="plugins")(plugins)
