"""``xllm tiny``: write a tiny random Llama-style model and tokenizer, to smoke-test a configuration on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def tiny(
    path: Annotated[Path, typer.Argument(help="Folder to write the model and tokenizer to.")],
    hidden_size: Annotated[int, typer.Option(help="Hidden size.")] = 64,
    num_layers: Annotated[int, typer.Option(help="Decoder layers.")] = 2,
) -> None:
    """Create a tiny model (random weights, a tokenizer built locally) loadable like any checkpoint. No network."""
    from xllm_cli.tiny import create_tiny_model

    create_tiny_model(path, hidden_size=hidden_size, num_layers=num_layers)
    print(f"tiny model written to {path} (use --model-name-or-path {path})")


def register(app: typer.Typer) -> None:
    app.command(name="tiny")(tiny)
