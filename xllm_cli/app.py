"""The ``xllm`` command: a Typer app whose steps live in ``xllm_cli/commands``.

No heavy library is imported at module level anywhere on this path: ``xllm --help``, ``--show-config``, validation
errors and shell completion must answer in a fraction of a second.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from xllm_cli.commands import COMMAND_LINE, cache, download, fuse, plugins, quantize, tiny, train

# The four steps are built on demand: their options come from the settings model, which `xllm --help` and TAB on the
# step names do not need.
STEPS = {"download": download, "train": train, "fuse": fuse, "quantize": quantize}


class LazyStepsGroup(typer.core.TyperGroup):
    """Builds a step's command the first time it is asked for; lists the steps from their help text alone."""

    _listing_help = False
    _built: dict[str, typer.core.TyperCommand] = {}

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # Stand-ins so that "did you mean" suggestions know the steps' names.
        for name, module in STEPS.items():
            self.commands.setdefault(name, typer.core.TyperCommand(name=name, help=module.HELP))

    def list_commands(self, ctx) -> list[str]:
        return [*STEPS, *(name for name in super().list_commands(ctx) if name not in STEPS)]

    def get_command(self, ctx, name: str):
        if name not in STEPS:
            return super().get_command(ctx, name)
        if self._listing_help:  # the top-level help needs the one-line summary only
            return self.commands[name]
        if name not in self._built:
            step_app = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False)
            STEPS[name].register(step_app)
            self._built[name] = typer.main.get_command(step_app)
        return self._built[name]

    def format_help(self, ctx, formatter) -> None:
        self._listing_help = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing_help = False


app = typer.Typer(
    cls=LazyStepsGroup,
    name="xllm",
    help="Fine-tune large language models: [bold]download[/] -> [bold]train[/] -> [bold]fuse[/] -> [bold]quantize[/].",
    no_args_is_help=True,
    rich_markup_mode="rich",
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
        Optional[bool],
        typer.Option(
            "--version",
            help="Show versions of xllm, its libraries and the devices seen.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = None,
) -> None:
    """Fine-tune large language models: download -> train -> fuse -> quantize."""


for module in (plugins, cache, tiny):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: original-spelling compatibility, then one clear line for every failure."""
    from typer import Abort, Exit

    try:  # Typer >= 0.29 vendors its own copy of click
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older Typer on plain click
        from click.exceptions import NoArgsIsHelpError, UsageError

    from xllm_cli import console
    from xllm_cli.cleanup import Terminated
    from xllm_cli.config.argv import normalize_argv
    from xllm_cli.errors import XllmError

    args = sys.argv[1:] if argv is None else list(argv)
    if not {"--verbose", "-v"} & set(args):
        console.filter_library_noise()
    try:
        args = normalize_argv(args)
        COMMAND_LINE[:] = args
        command = typer.main.get_command(app)
        code = command.main(args=args, prog_name="xllm", standalone_mode=False)
    except Exit as done:
        code = done.exit_code
    except Terminated as stop:  # SIGTERM during work that removes its partial files first (cleanup.py)
        console.error("terminated by SIGTERM")
        code = stop.code
    except Abort:
        console.error("aborted")
        code = 130
    except NoArgsIsHelpError:  # bare `xllm`: the help it printed is the answer, no empty error line after it
        code = 2
    except UsageError as usage:
        step = usage.ctx.command_path if usage.ctx is not None else "xllm"
        console.error(usage.format_message(), hint=f"see '{step} --help'")
        code = 2
    except XllmError as failure:
        if console.verbose():
            import traceback

            traceback.print_exc()
        console.error(str(failure), hint=failure.hint)
        code = failure.exit_code
    except KeyboardInterrupt:
        console.error("interrupted")
        code = 130
    except Exception as failure:  # a bug or a library failure: one line, the traceback under --verbose
        if console.verbose():
            import traceback

            traceback.print_exc()
        message = str(failure).strip().splitlines()
        console.error(
            f"{type(failure).__name__}: {message[0] if message else ''}",
            hint=None if console.verbose() else "run again with --verbose for the traceback",
        )
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
