"""What ``--help`` and TAB completion need of the settings, without pydantic.

Importing pydantic's model machinery and building the sections costs more than half of a step's ``--help``, which
only reads each field's section, type, choices, default and help. ``catalog.json`` holds exactly that for the
built-in fields; it is generated from the sections (``python -m xllm_cli.settings.reference``) and
``tests/test_startup.py`` keeps it equal to them. Plugin settings and a user's own ``XllmConfig`` subclass are pydantic
fields read at run time: ``spec_of`` describes those the same way.
"""

from __future__ import annotations

import functools
import json
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

CATALOG_FILE = Path(__file__).with_name("catalog.json")
PLUGIN_SECTION = "plugin:"  # plugin settings are in section "plugin:<key>"
CUSTOM_SECTION = "custom"  # fields a subclass of XllmConfig adds in a user's script


@dataclass(frozen=True)
class FieldSpec:
    """One setting as the command line shows it."""

    name: str
    section: str  # the key of its section (``lora``), ``plugin:<key>`` or ``custom``
    kind: str  # bool, int, float or str
    choices: tuple[str, ...] = ()
    default: Any = None
    help: str = ""
    secret: bool = False


def spec_of(name: str, info: Any, section: str) -> FieldSpec:
    """The spec of a pydantic field ``info`` (read by its attributes: pydantic is not imported here)."""
    annotation = info.annotation
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and args:
        annotation = args[0]
    choices: tuple[str, ...] = ()
    secret = getattr(annotation, "__name__", "") == "SecretStr"
    if get_origin(annotation) is Literal:
        kind, choices = "str", tuple(str(choice) for choice in get_args(annotation))
    elif annotation in (bool, int, float):
        kind = annotation.__name__
    else:
        kind = "str"
    return FieldSpec(name, section, kind, choices, info.default, info.description or "", secret)


@functools.cache
def _catalog() -> dict[str, Any]:
    return json.loads(CATALOG_FILE.read_text())


def section_titles() -> dict[str, str]:
    """Section key -> title, in the order of the sections."""
    return _catalog()["sections"]


def section_title(key: str) -> str:
    if key.startswith(PLUGIN_SECTION):
        return f"Plugin {key.removeprefix(PLUGIN_SECTION)}"
    if key == CUSTOM_SECTION:
        return "Your settings"
    return section_titles()[key]


def step_sections() -> dict[str, list[str]]:
    """Step -> the keys of the sections it reads, in order."""
    return _catalog()["steps"]


@functools.cache
def fields() -> dict[str, FieldSpec]:
    """Every built-in field, by name, in the order of the sections."""
    return {entry["name"]: FieldSpec(**{**entry, "choices": tuple(entry["choices"])}) for entry in _catalog()["fields"]}


def render(titles: dict[str, str], steps: dict[str, list[str]], specs: list[FieldSpec]) -> str:
    """The text of ``catalog.json`` for these sections, steps and fields."""
    rows = ",\n  ".join(json.dumps(asdict(spec)) for spec in specs)  # a field a line: reviewable diffs
    head = json.dumps({"sections": titles, "steps": steps})[:-1]
    return f'{head}, "fields": [\n  {rows}\n]}}\n'
