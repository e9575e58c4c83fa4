"""One module per step; each builds its Typer command from the settings model and calls the library layer."""

# The command line being run (after the original-spelling rewrite), set by ``xllm_cli.app.main``: a step built on
# demand reads the plugin keys selected on it to add those plugins' settings as options (and to its --help).
COMMAND_LINE: list[str] = []
