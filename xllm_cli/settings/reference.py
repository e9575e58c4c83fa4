"""What is generated from the settings model so it cannot drift: the configuration reference (``docs/generate.py``)
and the command line's catalog of fields (``catalog.json``; ``python -m xllm_cli.settings.reference`` rewrites it)."""

from __future__ import annotations

import sys
from typing import Any, Literal, get_args, get_origin

from pydantic import SecretStr

from xllm_cli.settings import catalog
from xllm_cli.settings.config import XllmConfig
from xllm_cli.settings.index import STEP_SECTIONS
from xllm_cli.settings.names import env_names, flag
from xllm_cli.settings.sections import SECTIONS


def type_name(annotation: Any) -> str:
    args = [a for a in get_args(annotation) if a is not type(None)]
    optional = len(args) < len(get_args(annotation))
    if annotation is SecretStr or SecretStr in args:
        return "secret"
    if get_origin(annotation) is Literal or (args and get_origin(args[0]) is Literal):
        literal = annotation if get_origin(annotation) is Literal else args[0]
        text = " \\| ".join(str(choice) for choice in get_args(literal))
    else:
        base = args[0] if args else annotation
        text = getattr(base, "__name__", str(base))
    return f"{text} or unset" if optional else text


def default_text(value: Any) -> str:
    return "unset" if value is None else repr(value) if isinstance(value, str) else str(value)


def reference_markdown(config_cls: type = XllmConfig) -> str:
    lines = []
    for section in SECTIONS:
        steps = [step for step, sections in STEP_SECTIONS.items() if section in sections]
        lines += [
            f"#### {section.title} (`{section.key}`)",
            "",
            f"Read by: {', '.join(f'`xllm {step}`' for step in steps)}.",
            "",
            "| setting | default | type | flag | env | meaning |",
            "|---|---|---|---|---|---|",
        ]
        for name, info in section.model_fields.items():
            flags = f"`{flag(name)}`" + (
                f" / `--no-{flag(name)[2:]}`" if info.annotation in (bool, bool | None) else ""
            )
            env = " ".join(f"`{e}`" for e in env_names(name))
            description = (info.description or "").replace("|", "\\|")
            default = default_text(info.default)
            lines.append(f"| `{name}` | `{default}` | {type_name(info.annotation)} | {flags} | {env} | {description} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def catalog_text() -> str:
    """``catalog.json`` as the sections define it today."""
    titles = {section.key: section.title for section in SECTIONS}
    steps = {step: [section.key for section in sections] for step, sections in STEP_SECTIONS.items()}
    specs = [
        catalog.spec_of(name, info, section.key) for section in SECTIONS for name, info in section.model_fields.items()
    ]
    return catalog.render(titles, steps, specs)


if __name__ == "__main__":
    catalog.CATALOG_FILE.write_text(catalog_text())
    print(f"wrote {catalog.CATALOG_FILE}", file=sys.stderr)
