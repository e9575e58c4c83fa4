"""The click that Typer runs on. Typer 0.29 vendors its own copy (``typer._click``); these are the names xllm needs
from it, in one place, so a Typer upgrade that moves them breaks one import, not the error handling."""

from typer import Abort, Exit
from typer._click.exceptions import NoArgsIsHelpError, NoSuchOption, UsageError

__all__ = ["Abort", "Exit", "NoArgsIsHelpError", "NoSuchOption", "UsageError"]
