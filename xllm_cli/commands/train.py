"""``xllm train``: full, LoRA or QLoRA fine-tuning, on one device or many (deepspeed/torchrun)."""

from __future__ import annotations

import typer

HELP = """Fine-tune the model on the prepared data (run `xllm download` first with the same settings, or give
--dataset-source: a missing prepared file is then prepared first).

Will it fit? `xllm train --estimate ...` prints the memory per device and a rough step time, loading no weights.

Multi-GPU: `deepspeed --num_gpus N $(which xllm) train ...` or `torchrun --nproc_per_node N $(which xllm) train ...`.
"""


def run(config) -> None:
    from xllm_cli.training.run import train

    train(config)


def estimate(config) -> None:
    from xllm_cli.training.preflight import print_estimate

    print_estimate(config)


def register(app: typer.Typer) -> None:
    # Imported here: the settings model is built only when this step is run or its help is shown.
    from xllm_cli.commands.common import ALL_PLUGIN_KINDS, fields_for, step_command
    from xllm_cli.config.fields import ENTITIES

    step_command(app, "train", HELP, fields_for(ENTITIES), run, plugin_kinds=ALL_PLUGIN_KINDS, estimate=estimate)
