"""One module per step; each builds its Typer command from the settings model and calls the library layer."""
