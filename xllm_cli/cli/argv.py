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
                from xllm_cli.settings.sections import FIELDS

                names: Iterable[str] = [name for name, info in FIELDS.items() if info.annotation in (bool, bool | None)]
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
    return _local_rank_after_step(out)


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
