"""A step's command, built from the settings it reads: one ``--kebab-case`` option per field, grouped by section.

Options default to None so that only what the user typed counts as a flag and the lower sources (env, .env, config
file) still apply. The help is plain text in the terminal's width (click's formatter, no rich tables): it reads well at
80 columns and renders in milliseconds.

Nothing heavy is imported here: this runs for ``--help`` and for every TAB press.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from typer._coercion import PassThroughRuntimeParam  # private, but pinned by the lock: see without_bool_validators

from xllm_cli.cli.completion import completer_for
from xllm_cli.settings.catalog import FieldSpec
from xllm_cli.settings.names import flag

MAIN_PANEL = "Main options"
METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}
RUN_PANEL = "Run"
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
# Options of every step that are not settings: how to run, not what to do.
RUN_OPTIONS: dict[str, Any] = {
    "config_file": Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            help="YAML, TOML or JSON file of settings (lowest priority after defaults).",
            rich_help_panel=RUN_PANEL,
            dir_okay=False,
            metavar="FILE",
        ),
    ],
    "show_config": Annotated[
        bool,
        typer.Option(
            "--show-config", help="Print the resolved settings and their sources, then exit.", rich_help_panel=RUN_PANEL
        ),
    ],
    "verbose": Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and library warnings.", rich_help_panel=RUN_PANEL)
    ],
    "quiet": Annotated[
        bool, typer.Option("--quiet", "-q", help="Plain output, no progress bars.", rich_help_panel=RUN_PANEL)
    ],
}


# Only for the steps that train: the estimate of the run these settings describe.
ESTIMATE_OPTION = Annotated[
    bool,
    typer.Option(
        "--estimate",
        help="Print the memory per device and a rough step time for these settings, then exit (no weights loaded).",
        rich_help_panel=RUN_PANEL,
    ),
]


def shown_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, str):
        return repr(value) if value.strip() != value or not value else value
    return str(value)


def field_option(spec: FieldSpec, panel: str) -> inspect.Parameter:
    """The option of one setting, defaulting to None: not typed on the command line."""
    python_type: Any = {"bool": bool, "int": int, "float": float}.get(spec.kind, str)
    decls = [f"{flag(spec.name)}/--no-{flag(spec.name)[2:]}"] if python_type is bool else [flag(spec.name)]
    kwargs: dict[str, Any] = {"help": spec.help, "rich_help_panel": panel, "show_default": shown_default(spec.default)}
    if spec.choices:
        python_type = Literal[spec.choices]  # Typer turns a Literal into a click.Choice
    elif python_type is not bool:
        kwargs["metavar"] = "SECRET" if spec.secret else METAVARS.get(python_type, "TEXT")
    completer = completer_for(spec.name)
    if completer is not None:
        kwargs["autocompletion"] = completer
    elif spec.name in PATH_FIELDS:
        # The shell completes file and folder names; the value stays the text typed: a Path would turn ./my-model
        # into my-model, which then reads as a Hub id.
        python_type = Path
        kwargs.update(path_type=str, metavar="PATH")
    annotation = Annotated[Optional[python_type], typer.Option(*decls, **kwargs)]
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def without_bool_validators(command: Any) -> Any:
    """Typer coerces every option's value through a pydantic validator built on first use, even a flag's missing value:
    importing pydantic for that is most of a step's ``--help``. A flag needs no validator."""
    for each in [command, *getattr(command, "commands", {}).values()]:
        for param in each.params:
            plain_flag(param)
    return command


def plain_flag(param: Any) -> Any:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and descriptor.annotation is bool and param._runtime_param is None:
        param._runtime_param = PassThroughRuntimeParam(annotation=bool, parameter_info=descriptor.parameter_info)
    return param


class StepCommand(typer.core.TyperCommand):
    """Plain help, grouped by panel: the step's main options first, then each section, then how to run."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Resilient parsing (a TAB press, the plugin pre-pass of ``steps.command_for``) keeps the text typed: the
        readers only need raw values, and Typer's coercion builds a pydantic validator per option on first use, about
        a third of the time of ``xllm train --help``. A real parse coerces as usual."""
        if not ctx.resilient_parsing:
            return super().parse_args(ctx, args)
        opts, rest, _ = self.make_parser(ctx).parse_args(args=args)
        ctx.params = {param.name: opts.get(param.name) for param in self.get_params(ctx) if param.expose_value}
        ctx.args = rest
        return rest

    def get_help_option(self, ctx: Any) -> Any:
        return plain_flag(super().get_help_option(ctx))  # made per context, so not among the params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                panel = getattr(param, "rich_help_panel", None) or RUN_PANEL
                panels.setdefault(panel, []).append(_plain_record(param, record))
        order = [MAIN_PANEL, *(p for p in panels if p not in (MAIN_PANEL, RUN_PANEL)), RUN_PANEL]
        for panel in order:
            if panel in panels:
                with formatter.section(panel):
                    formatter.write_dl(panels[panel])


def _plain_record(param: Any, record: tuple[str, str]) -> tuple[str, str]:
    """click's help record without type-name noise for flags and with ``[default: x]`` unquoted."""
    decls, help_text = record
    if getattr(param, "secondary_opts", None):
        decls = " / ".join(param.opts + param.secondary_opts)
    shown = getattr(param, "show_default", None)
    if isinstance(shown, str):
        help_text = help_text.replace(f"[default: ({shown})]", f"[default: {shown}]")
    return decls, help_text


def build_command(
    name: str,
    help: str,
    fields: list[tuple[FieldSpec, str]],
    callback: Callable[..., Any],
    run_options: dict[str, Any] | None = None,
) -> typer.core.TyperCommand:
    """The command of step ``name``: the run options (``RUN_OPTIONS`` and the step's own ``run_options``), then one
    option per (setting, help panel), calling ``callback(ctx, **values)``."""
    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for option, annotation in {**RUN_OPTIONS, **(run_options or {})}.items():
        default = None if option == "config_file" else False
        parameters.append(
            inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
    parameters += [field_option(spec, panel) for spec, panel in fields]

    def command(ctx: typer.Context, **values: Any) -> Any:
        return callback(ctx, **values)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    context = {"help_option_names": ["-h", "--help"]}
    app.command(name=name, help=help, cls=StepCommand, no_args_is_help=False, context_settings=context)(command)
    return without_bool_validators(typer.main.get_command(app))
