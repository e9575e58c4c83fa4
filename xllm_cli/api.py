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

Arguments are read exactly as ``xllm train`` reads them (``--kebab-case`` or the original ``--snake_case Value``
spelling, ``--local_rank=N`` from the deepspeed launcher, ``--config FILE``, env, ``.env``), fields of your subclass
included.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xllm_cli.config.fields import XllmConfig
from xllm_cli.training.run import train

__all__ = ["cli_run_train", "config_from_argv", "train"]


def config_from_argv(config_cls: type[XllmConfig] = XllmConfig, argv: Sequence[str] | None = None) -> Any:
    """Resolve ``config_cls`` from command-line arguments and every other source, as the CLI does."""
    from xllm_cli.config.argv import normalize_argv, parse_extra_flags
    from xllm_cli.config.sources import resolve_config

    fields = config_cls.model_fields
    bool_fields = [name for name, info in fields.items() if info.annotation in (bool, bool | None)]
    args = normalize_argv(list(sys.argv[1:] if argv is None else argv), bool_fields)
    config_file, args = _take_option(args, "--config")
    flags = parse_extra_flags(args, fields, known_flags=["--config"])
    return resolve_config(flags, config_file=config_file, config_cls=config_cls).config


def cli_run_train(
    config_cls: type[XllmConfig] = XllmConfig,
    train_dataset: Sequence[dict[str, Any]] | None = None,
    eval_dataset: Sequence[dict[str, Any]] | None = None,
    argv: Sequence[str] | None = None,
) -> Path:
    """Parse the command line into ``config_cls`` and train on ``train_dataset`` (or the prepared files).

    A bad argument or setting ends the script with one clear line and the CLI's exit code, like ``xllm train``.
    """
    from xllm_cli import console
    from xllm_cli.errors import XllmError

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = bool({"--verbose", "-v"} & set(args))
    args = [arg for arg in args if arg not in ("--verbose", "-v")]
    console.configure(verbose=verbose)
    if not verbose:
        console.filter_library_noise()  # the same quiet output as `xllm train`
    try:
        config = config_from_argv(config_cls, args)
        return train(config, train_dataset=train_dataset, eval_dataset=eval_dataset)
    except XllmError as failure:
        console.error(str(failure), hint=failure.hint)
        raise SystemExit(failure.exit_code) from None


def _take_option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """(value of ``name``, the other arguments); accepts ``name value`` and ``name=value``."""
    rest: list[str] = []
    value: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == name and i + 1 < len(args):
            value, i = args[i + 1], i + 2
            continue
        if arg.startswith(name + "="):
            value = arg.partition("=")[2]
        else:
            rest.append(arg)
        i += 1
    return value, rest
