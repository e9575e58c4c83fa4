"""The four steps: what each one is, the library function it calls, and how its command line becomes a config.

Only the table is imported for ``xllm --help``; a step's command is built (from the settings) when it is asked for.
One parser serves the binary and the Python API: ``run_step`` builds the step's command (with the options of the
plugins the command line, env, .env or config file select), lets it parse ``args`` and hands the resolved config to
the library function, or to the caller's own function (``cli_run_train`` passes its datasets that way).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xllm_cli.registry import GROUPS


@dataclass(frozen=True)
class Step:
    name: str
    help: str
    target: str  # "module:function", the library function that takes the resolved config
    plugin_kinds: tuple[str, ...]
    main_options: tuple[str, ...]  # shown first in --help: what a user sets on every run
    estimate: str | None = None  # "module:function" printing the memory estimate of the run (--estimate), if any

    def library_function(self, target: str | None = None) -> Callable[[Any], Any]:
        module, _, function = (target or self.target).partition(":")
        return getattr(importlib.import_module(module), function)


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step(
            "download",
            "Prepare the dataset as JSON lines and download the model and tokenizer into the Hugging Face cache.\n\n"
            "Run it once, on one process; `xllm train` on any number of ranks then reads only local files.",
            "xllm_cli.download:download",
            ("datasets",),
            ("model_name_or_path", "dataset_key", "dataset_source", "train_local_path_to_data"),
        ),
        Step(
            "train",
            "Fine-tune the model on the prepared data (run `xllm download` first with the same settings, or give "
            "--dataset-source: a missing prepared file is then prepared first).\n\n"
            "Will it fit? `xllm train --estimate ...` prints the memory per device and a rough step time, loading no "
            "weights.\n\n"
            "Multi-GPU: `deepspeed --num_gpus N $(which xllm) train ...` or "
            "`torchrun --nproc_per_node N $(which xllm) train ...`.",
            "xllm_cli.training.run:train",
            tuple(GROUPS),  # every kind of plugin takes part in training
            ("model_name_or_path", "dataset_key", "train_local_path_to_data", "apply_lora", "output_dir"),
            estimate="xllm_cli.training.preflight:print_estimate",
        ),
        Step(
            "fuse",
            "Merge a LoRA adapter (local folder or hub id) into its 16-bit base, shard by shard, and save a normal "
            "checkpoint.",
            "xllm_cli.fuse:fuse",
            (),
            ("model_name_or_path", "lora_model_local_path", "lora_hub_model_id", "fused_model_local_path"),
        ),
        Step(
            "quantize",
            "Quantize a model (typically the fused one) with GPTQ, calibrated on a dataset, and report the perplexity "
            "cost.\n\nNeeds the GPTQ extra: pip install 'xllm-cli[gptq]'.",
            "xllm_cli.quantize:quantize",
            ("datasets",),
            ("model_name_or_path", "quantized_model_path", "gptq_bits", "dataset_key"),
        ),
    )
}
Runner = Callable[[Any], Any]
_commands: dict[tuple, Any] = {}


def _run(ctx: Any, step: Step, base_cls: type | None, values: dict[str, Any]) -> Any:
    """The body of every step command: resolve the settings from every source, then run (or show them)."""
    from xllm_cli.cli import console
    from xllm_cli.settings.config import XllmConfig
    from xllm_cli.settings.index import step_fields
    from xllm_cli.settings.sources import resolve_config

    console.configure(verbose=values.pop("verbose"), quiet=values.pop("quiet"))
    values = {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}
    config_file = values.pop("config_file")
    show_config = values.pop("show_config")
    estimate_only = values.pop("estimate", False)
    config_cls = base_cls or XllmConfig
    resolved = resolve_config(values, config_file=config_file, config_cls=config_cls, plugin_kinds=step.plugin_kinds)
    if show_config:
        from xllm_cli.cli.show_config import print_config

        print_config(resolved, step_fields(step.name, type(resolved.config)))
        return None
    if estimate_only:
        return step.library_function(step.estimate)(resolved.config)
    runner: Runner = ctx.obj if callable(ctx.obj) else step.library_function()
    return runner(resolved.config)


def _command(step: Step, base_cls: type | None, plugins: tuple) -> Any:
    """The command of ``step`` with the settings of ``base_cls`` (None: XllmConfig, without importing it) and of the
    selected ``plugins``, built once per combination."""
    key = (step.name, base_cls, plugins)
    if key not in _commands:
        from xllm_cli.cli.options import ESTIMATE_OPTION, MAIN_PANEL, build_command
        from xllm_cli.settings import catalog
        from xllm_cli.settings.plugins import plugin_fields

        builtins = catalog.fields()
        specs = [
            spec for key in catalog.step_sections()[step.name] for spec in builtins.values() if spec.section == key
        ]
        custom = [(n, i) for n, i in (base_cls.model_fields if base_cls else {}).items() if n not in builtins]
        specs += [catalog.spec_of(name, info, catalog.CUSTOM_SECTION) for name, info in custom]
        taken = {spec.name for spec in specs}
        specs += [
            catalog.spec_of(name, info, info.json_schema_extra["section"])
            for name, info in plugin_fields(plugins, taken)
        ]
        fields = [
            (spec, MAIN_PANEL if spec.name in step.main_options else catalog.section_title(spec.section))
            for spec in specs
        ]
        _commands[key] = build_command(
            step.name,
            step.help,
            fields,
            lambda ctx, **values: _run(ctx, step, base_cls, values),
            run_options={"estimate": ESTIMATE_OPTION} if step.estimate else None,
        )
    return _commands[key]


def command_for(step: Step, args: Sequence[str], base_cls: type | None = None) -> Any:
    """The command that parses ``args`` for ``step``: with the options of the plugins these arguments (or env, .env
    and the config file) select, so that their settings are real options, in --help and completion too."""
    base = _command(step, base_cls, ())
    if not step.plugin_kinds:
        return base
    from xllm_cli.errors import XllmError
    from xllm_cli.settings.layers import merged, read_layers
    from xllm_cli.settings.plugins import selected_plugin_settings

    # A first, forgiving pass: which plugin keys and config file do these arguments name?
    ctx = base.make_context(step.name, list(args), resilient_parsing=True, ignore_unknown_options=True)
    flags = {key: str(value) if isinstance(value, Path) else value for key, value in ctx.params.items()}
    try:
        values, _ = merged(read_layers(flags, flags.pop("config_file", None), os.environ))
        plugins = selected_plugin_settings(values, step.plugin_kinds)
    except XllmError:
        return base  # the real run reports it with its one line
    return _command(step, base_cls, plugins)


def run_step(name: str, args: Sequence[str], base_cls: type | None = None, runner: Runner | None = None) -> Any:
    """Parse ``args`` exactly as ``xllm <name>`` does and call ``runner`` (default: the step's library function) with
    the resolved config. Raises what the command raises (usage errors, ``XllmError``) for the caller to report."""
    command = command_for(STEPS[name], args, base_cls)
    return command.main(args=list(args), prog_name=f"xllm {name}", standalone_mode=False, obj=runner)
