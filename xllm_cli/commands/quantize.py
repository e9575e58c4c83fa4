"""``xllm quantize``: GPTQ post-training quantization."""

from __future__ import annotations

import typer

HELP = """Quantize a model (typically the fused one) with GPTQ, calibrated on a dataset, and report the perplexity cost.

Needs the GPTQ extra: pip install 'xllm-cli[gptq]'.
"""


def run(config) -> None:
    from xllm_cli.quantize import quantize

    quantize(config)


def register(app: typer.Typer) -> None:
    # Imported here: the settings model is built only when this step is run or its help is shown.
    from xllm_cli.commands.common import fields_for, step_command

    entities = ("general", "gptq_quantization", "gptq", "dataset", "model", "tokenizer")
    step_command(app, "quantize", HELP, fields_for(entities, ("max_length",)), run, plugin_kinds=("datasets",))
