"""Accept the original tool's spelling alongside ours.

Users paste ``--deepspeed_stage 2 --apply_lora True --stabilize False`` from the original docs, and the deepspeed
launcher appends ``--local_rank=3``. These are rewritten to ``--deepspeed-stage 2 --apply-lora --no-stabilize
--local-rank 3`` before Typer parses the command line.
"""

from __future__ import annotations

from collections.abc import Iterable

from xllm_cli.errors import ConfigError

TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}


def bool_fields_of(config_cls: type) -> list[str]:
    return [name for name, info in config_cls.model_fields.items() if info.annotation in (bool, bool | None)]


def normalize_argv(argv: list[str], bool_fields: Iterable[str] | None = None) -> list[str]:
    """Rewrite snake_case flags to kebab-case and ``--flag True/False`` (or ``=True``) to ``--flag/--no-flag``.

    ``bool_fields`` defaults to XllmConfig's; the settings are only imported when a token could be a boolean's value,
    so ``xllm --help`` does not pay for them.
    """
    bool_flags: set[str] | None = None

    def is_bool_flag(name: str) -> bool:
        nonlocal bool_flags
        if bool_flags is None:
            if bool_fields is None:
                from xllm_cli.settings.catalog import fields

                names: Iterable[str] = [name for name, spec in fields().items() if spec.kind == "bool"]
            else:
                names = bool_fields
            bool_flags = {"--" + field.replace("_", "-") for field in names}
        return name in bool_flags

    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            out.extend(argv[i - 1 :])
            break
        if not arg.startswith("--") or len(arg) <= 2:
            out.append(arg)
            continue
        name, eq, value = arg.partition("=")
        name = "--" + name[2:].replace("_", "-")
        next_is_word = not eq and i < len(argv) and argv[i].lower() in TRUE_WORDS | FALSE_WORDS
        if (eq or next_is_word) and is_bool_flag(name):
            if next_is_word:
                value, eq = argv[i], "="
                i += 1
            if eq:
                word = value.lower()
                if word not in TRUE_WORDS | FALSE_WORDS:
                    raise ConfigError(f"{name} takes no value or one of True/False, got '{value}'")
                out.append(name if word in TRUE_WORDS else "--no-" + name[2:])
                continue
        out.append(f"{name}={value}" if eq else name)
    return _local_rank_after_step(_join_repeated(out))


# Flags that take a comma list, where repeating the flag adds to the list (instead of the last one winning).
LIST_FLAGS = ("--dataset-source",)


def _join_repeated(args: list[str]) -> list[str]:
    """``--dataset-source a --dataset-source b`` -> ``--dataset-source a,b`` (in the first one's place)."""
    end = args.index("--") if "--" in args else len(args)
    out, rest = list(args[:end]), args[end:]
    for flag in LIST_FLAGS:
        values, first, i = [], None, 0
        while i < len(out):
            name, eq, value = out[i].partition("=")
            if name != flag or (not eq and i + 1 >= len(out)):
                i += 1
                continue
            taken = 1 if eq else 2
            values.append(value if eq else out[i + 1])
            first = i if first is None else first
            if len(values) > 1:
                del out[i : i + taken]
            else:
                i += taken
        if len(values) > 1:
            out[first : first + (1 if "=" in out[first] else 2)] = [flag, ",".join(values)]
    return out + rest


def _local_rank_after_step(args: list[str]) -> list[str]:
    """Move a ``--local-rank`` given before the step behind it.

    The deepspeed launcher inserts ``--local_rank=N`` right after the script, so ``deepspeed $(which xllm) train``
    runs ``xllm --local_rank=0 train ...``; the option belongs to the step, not to ``xllm`` itself.
    """
    leading: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("--local-rank"):
        takes_next = args[i] == "--local-rank" and i + 1 < len(args)
        leading += args[i : i + 1 + takes_next]
        i += 1 + takes_next
    if not leading or i >= len(args):
        return args
    return [args[i], *leading, *args[i + 1 :]]
