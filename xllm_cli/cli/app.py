"""The ``xllm`` command: the Typer app, its steps (``cli/steps.py``) and its small extra commands.

No heavy library is imported on this path: ``xllm --help``, a step's ``--help``, ``--show-config``, validation errors
and shell completion must answer in a fraction of a second.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from xllm_cli.cli import commands
from xllm_cli.cli.options import plain_flag, without_bool_validators
from xllm_cli.cli.steps import STEPS, command_for


class StepsGroup(typer.core.TyperGroup):
    """The top-level group. A step's command is built from the settings when it runs (for the arguments that follow
    it, which may select plugins with settings of their own); listing the steps needs only their one-line help."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name, step in STEPS.items():  # stand-ins for the listing and "did you mean" suggestions
            self.commands.setdefault(name, typer.core.TyperCommand(name=name, help=step.help))

    def list_commands(self, ctx) -> list[str]:
        return [*STEPS, *(name for name in super().list_commands(ctx) if name not in STEPS)]

    def get_help_option(self, ctx):
        return plain_flag(super().get_help_option(ctx))  # made per context, so not among the params

    def resolve_command(self, ctx, args: list[str]):
        if args and args[0] in STEPS:
            return args[0], command_for(STEPS[args[0]], args[1:]), args[1:]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=StepsGroup,
    name="xllm",
    help="Fine-tune large language models: download -> train -> fuse -> quantize.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from xllm_cli.versions import print_versions

        print_versions()
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show versions of xllm, its libraries and the devices seen.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,  # a bool default: Typer then skips building a pydantic validator for it on every command line
) -> None:
    """Fine-tune large language models: download -> train -> fuse -> quantize."""


commands.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: the original spelling accepted, then one clear line for every failure."""
    from xllm_cli.cli import console
    from xllm_cli.cli.argv import normalize_argv
    from xllm_cli.cli.errors import describe

    args = sys.argv[1:] if argv is None else list(argv)
    console.install(verbose=bool({"--verbose", "-v"} & set(args)))
    try:
        args = normalize_argv(args)
        command = without_bool_validators(typer.main.get_command(app))
        code = command.main(args=args, prog_name="xllm", standalone_mode=False)
    except BaseException as error:  # noqa: BLE001 - every failure becomes one line and an exit code
        code = console.report(describe(error), error)
    sys.exit(code if isinstance(code, int) else 0)
