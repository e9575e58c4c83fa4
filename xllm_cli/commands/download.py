"""``xllm download``: fetch and prepare the data and the model once, before any GPU work."""

from __future__ import annotations

import typer

HELP = """Prepare the dataset as JSON lines and download the model and tokenizer into the Hugging Face cache.

Run it once, on one process; `xllm train` on any number of ranks then reads only local files.
"""


def run(config) -> None:
    from xllm_cli.download import download

    download(config)


def register(app: typer.Typer) -> None:
    # Imported here: the settings model is built only when this step is run or its help is shown.
    from xllm_cli.commands.common import fields_for, step_command

    step_command(
        app, "download", HELP, fields_for(("general", "dataset", "tokenizer", "model")), run, plugin_kinds=("datasets",)
    )
