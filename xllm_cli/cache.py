"""xllm's cache folder: what can be rebuilt from the inputs (today, the tokenized training data), kept out of the
user's folders.

Where: ``--cache-dir`` (env ``XLLM_CACHE_DIR``), else the platform's user cache folder, as huggingface_hub and
datasets do: ``$XDG_CACHE_HOME/xllm`` when ``XDG_CACHE_HOME`` is set, else ``~/.cache/xllm`` on Linux,
``~/Library/Caches/xllm`` on macOS and ``%LOCALAPPDATA%\\xllm\\Cache`` on Windows.

Layout: ``<cache>/tokenized/<data file name>-<16 hex digits of the key>/`` per entry (``training.tokenize`` says what
the key covers), plus ``<name>.tmp-<host>-<pid>/`` while a process writes one (``cleanup.built_atomically``). Only
names of these two forms, inside ``tokenized/``, are ever deleted: a cache folder pointed at a folder holding other
files leaves those files alone. ``tokenized/CACHEDIR.TAG`` tells backup tools to skip the folder.

Nothing heavy is imported here: ``xllm cache`` runs on the fast command-line path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xllm_cli.cleanup import is_stale, partial_owner, pid_alive, this_host
from xllm_cli.errors import XllmError

TOKENIZED = "tokenized"
ENTRY = re.compile(r"^.+-[0-9a-f]{16}$")
ENTRY_COMPLETE_FILE = "meta.json"
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by xllm (tokenized training data, rebuilt when needed).\n"
    "# For information about cache directory tags, see https://bford.info/cachedir/\n"
)


def default_cache_dir() -> Path:
    """The platform's user cache folder for xllm (``--cache-dir`` unset)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec ignores a relative value
        return Path(xdg) / "xllm"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "xllm"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "xllm" / "Cache"
    return Path.home() / ".cache" / "xllm"


def cache_dir(setting: str | None) -> Path:
    """The cache folder for the ``cache_dir`` setting (None or empty: the platform default)."""
    return Path(setting).expanduser() if setting else default_cache_dir()


def tokenized_dir(setting: str | None) -> Path:
    return cache_dir(setting) / TOKENIZED


def make_tokenized_dir(setting: str | None) -> Path:
    """``tokenized_dir``, created (with its CACHEDIR.TAG) if needed."""
    folder = tokenized_dir(setting)
    folder.mkdir(parents=True, exist_ok=True)
    tag = folder / "CACHEDIR.TAG"
    if not tag.exists():
        tag.write_text(CACHEDIR_TAG)
    return folder


@dataclass
class Item:
    """One thing in ``tokenized/``: a complete entry, a partial one, or something xllm did not write."""

    path: Path
    kind: str  # "entry", "partial" or "foreign"
    size: int
    age_seconds: float  # since last used (an entry's meta.json is touched on every reuse) or last written

    @property
    def removable(self) -> bool:
        return self.kind == "entry" or (self.kind == "partial" and is_stale(self.path))

    def state(self) -> str:
        if self.kind == "entry":
            return f"used {describe_age(self.age_seconds)} ago"
        if self.kind == "foreign":
            return "not an xllm cache entry: left alone"
        host, pid = partial_owner(self.path) or ("?", 0)
        if host != this_host():
            return f"being written on {host} (process {pid}), or left there"
        if pid_alive(pid):
            return f"being written by process {pid}"
        return f"left by process {pid}, which no longer runs"


def folder_size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(file.lstat().st_size for file in path.rglob("*") if not file.is_dir() or file.is_symlink())


def classify(path: Path) -> str:
    if path.is_symlink() or not path.is_dir():
        return "foreign"
    if partial_owner(path) is not None:
        return "partial"
    return "entry" if ENTRY.match(path.name) and (path / ENTRY_COMPLETE_FILE).is_file() else "foreign"


def list_items(setting: str | None) -> list[Item]:
    """Everything in ``tokenized/`` but its CACHEDIR.TAG, most recently used first."""
    folder = tokenized_dir(setting)
    if not folder.is_dir():
        return []
    now = time.time()
    items = []
    for path in folder.iterdir():
        if path.name == "CACHEDIR.TAG":
            continue
        kind = classify(path)
        stamp = path / ENTRY_COMPLETE_FILE if kind == "entry" else path
        try:
            items.append(Item(path, kind, folder_size(path), max(0.0, now - stamp.lstat().st_mtime)))
        except FileNotFoundError:  # renamed or removed by a run or another clear meanwhile
            continue
    return sorted(items, key=lambda item: item.age_seconds)


def clear(setting: str | None, older_than_days: float | None = None) -> tuple[list[Item], list[Item]]:
    """Delete the entries (unused for more than ``older_than_days`` days, when given) and stale partial folders.

    Returns (removed, kept): partial folders of running processes and anything xllm did not write are kept.
    """
    removed, kept = [], []
    for item in list_items(setting):
        too_recent = older_than_days is not None and item.age_seconds <= older_than_days * 86400
        if item.removable and not (item.kind == "entry" and too_recent):
            try:
                shutil.rmtree(item.path)
            except FileNotFoundError:  # removed by another clear meanwhile
                pass
            except OSError as error:
                raise XllmError(f"could not remove {item.path}: {error.strerror or error}") from None
            removed.append(item)
        else:
            kept.append(item)
    return removed, kept


def mark_used(entry: Path) -> None:
    """Record a reuse (for ``xllm cache`` and ``clear --older-than``); a read-only cache is fine."""
    with contextlib.suppress(OSError):
        os.utime(entry / ENTRY_COMPLETE_FILE)


def describe_size(size: float) -> str:
    units = ["B", "KiB", "MiB", "GiB"]
    while size >= 1024 and len(units) > 1:
        size /= 1024
        units.pop(0)
    return f"{size:.0f} B" if units[0] == "B" else f"{size:.1f} {units[0]}"


def describe_age(seconds: float) -> str:
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return "less than a minute"
