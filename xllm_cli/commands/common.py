"""Builds a step's Typer command from the settings model: one ``--kebab-case`` option per field, grouped into help
panels by entity, each showing its real default. Options default to None so that only what the user typed counts
as a flag and the lower sources (env, .env, config file) still apply.

Nothing heavy is imported here: this runs for ``--help`` and for every TAB press.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import typer
from pydantic import SecretStr

from xllm_cli.config.fields import XllmConfig, entity_title, field_entity
from xllm_cli.config.validation import flag

ALL_PLUGIN_KINDS = ("datasets", "collators", "trainers", "experiments")
# Value completion for fields whose values come from somewhere (registries, lists); filled in by completion.py.
COMPLETERS: dict[str, Callable[..., list]] = {}
PATH_FIELDS = {
    "deepspeed_config_path",
    "path_to_env_file",
    "cache_dir",
    "dataset_source",
    "train_local_path_to_data",
    "eval_local_path_to_data",
    "tokenizer_name_or_path",
    "model_name_or_path",
    "output_dir",
    "resume_from_checkpoint",
    "lora_model_local_path",
    "fused_model_local_path",
    "quantization_dataset_id",
    "quantized_model_path",
}


def _plain_type(annotation: Any) -> tuple[Any, list[str] | None]:
    """(click-friendly python type, choices) for a field annotation."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, getattr(__import__("types"), "UnionType", Union)) and args:
        annotation = args[0]
    if get_origin(annotation) is Literal:
        return str, [str(choice) for choice in get_args(annotation)]
    if annotation is SecretStr:
        return str, None
    return annotation, None


def shown_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value)
    return repr(value) if isinstance(value, str) else str(value)


def field_option(name: str, config_cls: type = XllmConfig) -> inspect.Parameter:
    from xllm_cli.completion import completer_for

    info = config_cls.model_fields[name]
    python_type, choices = _plain_type(info.annotation)
    decls = [f"{flag(name)}/--no-{flag(name)[2:]}"] if python_type is bool else [flag(name)]
    kwargs: dict[str, Any] = {
        "help": info.description,
        "rich_help_panel": entity_title(field_entity(config_cls, name)),
        "show_default": shown_default(info.default),
    }
    if choices:
        python_type = Literal[tuple(choices)]  # Typer turns a Literal into a click.Choice
    completer = completer_for(name)
    if completer is not None:
        kwargs["autocompletion"] = completer
    elif name in PATH_FIELDS:
        # The shell completes file and folder names; the value stays the text typed: a Path would turn
        # ./my-model into my-model, which then reads as a Hub id.
        python_type = Path
        kwargs["path_type"] = str
    annotation = Annotated[Optional[python_type], typer.Option(*decls, **kwargs)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def fields_for(entities: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    wanted = set(entities)
    names = [n for n in XllmConfig.model_fields if field_entity(XllmConfig, n) in wanted]
    return names + [n for n in extra if n not in names]


COMMON_OPTIONS = {
    "config_file": Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            help="YAML, TOML or JSON file of settings (lowest priority after defaults).",
            rich_help_panel="Run",
            dir_okay=False,
        ),
    ],
    "show_config": Annotated[
        bool,
        typer.Option(
            "--show-config", help="Print the resolved settings and their sources, then exit.", rich_help_panel="Run"
        ),
    ],
    "verbose": Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and library warnings.", rich_help_panel="Run")
    ],
    "quiet": Annotated[
        bool, typer.Option("--quiet", "-q", help="Plain output, no progress bars.", rich_help_panel="Run")
    ],
}

ESTIMATE_OPTION = Annotated[
    bool,
    typer.Option(
        "--estimate",
        help="Print the memory per device and a rough step time for these settings, then exit (no weights loaded).",
        rich_help_panel="Run",
    ),
]


def keys_on_command_line(kinds: Iterable[str]) -> dict[str, str]:
    """The plugin keys typed on the command line for ``kinds``, e.g. ``{"dataset_key": "counting"}``."""
    from xllm_cli.commands import COMMAND_LINE
    from xllm_cli.registry import KEY_FIELDS

    wanted = {flag(KEY_FIELDS[kind]): KEY_FIELDS[kind] for kind in kinds}
    found: dict[str, str] = {}
    for i, arg in enumerate(COMMAND_LINE):
        name, eq, value = arg.partition("=")
        if name in wanted and (eq or i + 1 < len(COMMAND_LINE)):
            found[wanted[name]] = value if eq else COMMAND_LINE[i + 1]
    return found


def plugin_config_for_command_line(kinds: Iterable[str]) -> type:
    """XllmConfig plus the settings of the plugins selected by flags, which then become real options of the step.

    Plugins selected only through env, .env or a config file are handled when the settings are resolved (their flags
    are parsed from the extra arguments); only a flag makes a plugin's settings appear in ``--help``.
    """
    selected = keys_on_command_line(kinds)
    if not selected:
        return XllmConfig
    from xllm_cli.config.plugins import extend_config

    return extend_config(XllmConfig, selected, kinds)


def step_command(
    app: typer.Typer,
    step: str,
    help: str,
    fields: list[str],
    body: Callable[[Any], None],
    plugin_kinds: tuple[str, ...] = (),
    estimate: Callable[[Any], None] | None = None,
) -> None:
    """Register ``xllm <step>``: resolve the configuration from every source, then call ``body(config)`` (or, with
    ``--estimate``, ``estimate(config)``: a step that trains gets that flag)."""

    def command(ctx: typer.Context, **values: Any) -> None:
        from xllm_cli import console
        from xllm_cli.config.plugins import extender
        from xllm_cli.config.sources import resolve_config
        from xllm_cli.config.validation import check_for_command
        from xllm_cli.errors import ConfigError

        console.configure(verbose=values.pop("verbose"), quiet=values.pop("quiet"))
        values = {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}
        config_file = values.pop("config_file")
        show_config = values.pop("show_config")
        estimate_only = values.pop("estimate", False)
        resolved = resolve_config(
            values,
            config_file=config_file,
            extend=extender(plugin_kinds) if plugin_kinds else None,
            extra_args=list(ctx.args),
            known_flags=[p.opts[0] for p in ctx.command.params if p.opts],
        )
        try:
            check_for_command(resolved.config, step)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if show_config:
            from xllm_cli.config.show import print_config

            print_config(resolved, fields)
            return
        if estimate_only:
            estimate(resolved.config)
            return
        body(resolved.config)

    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for name, annotation in COMMON_OPTIONS.items():
        default = None if name == "config_file" else False
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
    if estimate is not None:
        parameters.append(
            inspect.Parameter("estimate", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=ESTIMATE_OPTION)
        )
    parameters += [field_option(name) for name in fields]
    config_cls = plugin_config_for_command_line(plugin_kinds)
    parameters += [
        field_option(name, config_cls) for name in config_cls.model_fields if name not in XllmConfig.model_fields
    ]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = help
    context_settings = {"allow_extra_args": True, "ignore_unknown_options": True} if plugin_kinds else {}
    app.command(name=step, help=help, context_settings=context_settings, no_args_is_help=False)(command)
