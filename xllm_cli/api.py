"""The Python API for your own training script: your config class, your in-memory data, the same command line.

    # train.py -- run with `python train.py --model-name-or-path ... --apply-lora` or
    # `deepspeed --num_gpus 8 train.py --deepspeed-stage 2 ...`
    from xllm_cli import XllmConfig
    from xllm_cli.api import cli_run_train

    class MyConfig(XllmConfig):
        my_prompt_prefix: str = "Q: "

    samples = [{"text_parts": ["Q: 2+2?", "4"]}, ...]
    if __name__ == "__main__":
        cli_run_train(config_cls=MyConfig, train_dataset=samples)

The command line is parsed by the very command ``xllm train`` runs (``--kebab-case`` or the original ``--snake_case
Value`` spelling, ``--local_rank=N`` from the deepspeed launcher, ``--config FILE``, ``--help``, ``--show-config``,
``--quiet``, env, ``.env``), with the fields of your subclass as options of their own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xllm_cli.cli import console
from xllm_cli.cli.argv import bool_fields_of, normalize_argv
from xllm_cli.cli.errors import describe
from xllm_cli.cli.steps import run_step
from xllm_cli.settings.config import XllmConfig
from xllm_cli.training.run import train

__all__ = ["cli_run_train", "config_from_argv", "train"]


def _run_train_command(config_cls: type[XllmConfig], argv: Sequence[str] | None, runner: Any) -> Any:
    """``xllm train``'s command on ``argv`` with ``runner`` as its body; a failure ends the script with the CLI's one
    line and exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    console.install(verbose=bool({"--verbose", "-v"} & set(args)))
    try:
        result = run_step("train", normalize_argv(args, bool_fields_of(config_cls)), config_cls, runner)
    except BaseException as error:  # noqa: BLE001 - the same table as the CLI
        raise SystemExit(console.report(describe(error), error)) from None
    return None if isinstance(result, int) else result  # an int: --help or --show-config answered


def config_from_argv(config_cls: type[XllmConfig] = XllmConfig, argv: Sequence[str] | None = None) -> Any:
    """``config_cls`` resolved from the command line and every other source, exactly as ``xllm train`` resolves it.

    Returns None when the command line only asked for ``--help`` or ``--show-config`` (answered on the terminal)."""
    return _run_train_command(config_cls, argv, runner=lambda config: config)


def cli_run_train(
    config_cls: type[XllmConfig] = XllmConfig,
    train_dataset: Sequence[dict[str, Any]] | None = None,
    eval_dataset: Sequence[dict[str, Any]] | None = None,
    argv: Sequence[str] | None = None,
) -> Path | None:
    """Parse the command line into ``config_cls`` and train on ``train_dataset`` (or the prepared files).

    Returns the folder of the final model, or None when the command line asked for ``--help``/``--show-config``."""
    return _run_train_command(
        config_cls, argv, runner=lambda config: train(config, train_dataset=train_dataset, eval_dataset=eval_dataset)
    )
