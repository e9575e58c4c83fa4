"""``xllm fuse``: merge a LoRA adapter into its base model."""

from __future__ import annotations

import typer

HELP = """Merge a LoRA adapter (local folder or hub id) into its 16-bit base, shard by shard, and save a normal checkpoint."""

HUB_FIELDS = ("push_to_hub", "hub_model_id", "hub_private_repo")


def run(config) -> None:
    from xllm_cli.fuse import fuse

    fuse(config)


def register(app: typer.Typer) -> None:
    # Imported here: the settings model is built only when this step is run or its help is shown.
    from xllm_cli.commands.common import fields_for, step_command

    step_command(app, "fuse", HELP, fields_for(("general", "fuse", "model", "tokenizer"), HUB_FIELDS), run)
