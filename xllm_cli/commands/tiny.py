"""``xllm tiny``: write a tiny random model (Llama-style, or another architecture) and tokenizer, to smoke-test a
configuration on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xllm_cli.tiny import ARCHITECTURES  # a table of settings: nothing heavy is imported with it


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
    from xllm_cli.tiny import create_tiny_model

    create_tiny_model(
        path,
        hidden_size=hidden_size,
        num_layers=num_layers,
        architecture=architecture,
        tie_word_embeddings=tie_word_embeddings,
    )
    from xllm_cli.model_download import looks_local

    # Written as a path (./tiny), which every step reads as a folder, never as a Hub id.
    shown = str(path) if looks_local(str(path)) else f"./{path}"
    print(f"tiny {architecture} model written to {shown} (use --model-name-or-path {shown})")


def register(app: typer.Typer) -> None:
    app.command(name="tiny")(tiny)
