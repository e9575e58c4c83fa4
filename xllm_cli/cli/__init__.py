"""The command line: everything a terminal needs (Typer, rich). The library below never imports this package."""
