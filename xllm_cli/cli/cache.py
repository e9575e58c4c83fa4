"""``xllm cache``: where xllm's cache folder is, what it holds, and ``xllm cache clear``.

Reads folder listings only (no heavy import): it answers as fast as ``--help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

HELP = "Show where xllm's cache is (tokenized data), how big, and its entries; `xllm cache clear` empties it."

CacheDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--cache-dir",
        help="The cache folder (default: env XLLM_CACHE_DIR, .env, --config, else the user cache folder).",
        show_default=False,
        file_okay=False,
    ),
]
ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", help="Settings file to read cache_dir from, as the steps do.", dir_okay=False),
]

cache_app = typer.Typer(help=HELP, rich_markup_mode=None, pretty_exceptions_enable=False)


def resolve_cache_dir(cache_dir: Path | None, config_file: Path | None) -> tuple[Path, str]:
    """The cache folder the steps would use with these options (flag, env, .env, config file, default), and the
    source it came from."""
    from xllm_cli.cache import cache_dir as folder_for
    from xllm_cli.settings.sources import resolve_config

    flags = {"cache_dir": str(cache_dir)} if cache_dir is not None else {}
    resolved = resolve_config(flags, config_file=config_file)
    source = resolved.source_of("cache_dir")
    setting = resolved.config.cache_dir
    described = {"flag": "--cache-dir", "env": "env XLLM_CACHE_DIR"}.get(source, source)
    if not setting:
        described = "default; set --cache-dir or XLLM_CACHE_DIR to move it"
    return folder_for(setting), described


@cache_app.callback(invoke_without_command=True)
def cache(ctx: typer.Context, cache_dir: CacheDirOption = None, config: ConfigOption = None) -> None:
    """Show where the cache is, its size, and one line per entry: name, size, last use."""
    if ctx.invoked_subcommand is not None:
        return
    from xllm_cli.cache import describe_size, list_items, tokenized_dir

    folder, source = resolve_cache_dir(cache_dir, config)
    print(f"cache: {folder} ({source})")
    items = list_items(str(folder))
    if not items:
        print(f"tokenized data: none ({tokenized_dir(str(folder))} is empty or absent)")
        return
    entries = [item for item in items if item.kind == "entry"]
    total = sum(item.size for item in items)
    print(f"tokenized data: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {describe_size(total)} in all")
    width = max(len(item.path.name) for item in items)
    for item in items:
        print(f"  {item.path.name:<{width}}  {describe_size(item.size):>10}  {item.state()}")


@cache_app.command()
def clear(
    ctx: typer.Context,
    older_than: Annotated[
        Optional[float],
        typer.Option("--older-than", metavar="DAYS", min=0, help="Only entries unused for more than DAYS days."),
    ] = None,
    cache_dir: CacheDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete the cache's entries (rebuilt when needed); what xllm did not write, or a running process writes, stays."""
    from xllm_cli.cache import clear as clear_items
    from xllm_cli.cache import describe_size

    parent = ctx.parent.params if ctx.parent is not None else {}
    folder, _ = resolve_cache_dir(cache_dir or parent.get("cache_dir"), config or parent.get("config"))
    removed, kept = clear_items(str(folder), older_than)
    if removed:
        print(f"removed {len(removed)} item(s), {describe_size(sum(item.size for item in removed))}, from {folder}")
    else:
        print(f"nothing to remove in {folder}")
    recent = [item for item in kept if item.kind == "entry"]
    if recent:
        print(f"kept {len(recent)} entr{'y' if len(recent) == 1 else 'ies'} used in the last {older_than:g} day(s)")
    for item in kept:
        if item.kind != "entry":
            print(f"kept {item.path}: {item.state()}")
