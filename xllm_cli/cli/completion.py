"""Value completion for flags, so TAB offers values and not only flag names.

What completes how (``completer_for`` wires the first three into each step's options, see cli/options.py):

- ``--dataset-key``, ``--collator-key``, ``--trainer-key``, ``--experiment-key``: the registry's keys, built-ins and
  installed plugins, read from entry-point metadata (no plugin is imported); zsh and fish show the providing package.
- ``--deepspeed-stage`` 0-3 and ``--gptq-bits``: fixed lists; ``--optim``: the optimizer names transformers accepts.
- Fields typed as a ``Literal`` (``--bnb-4bit-quant-type``, ``--tokenizer-padding-side``, ...): their choices, through
  Typer's Choice type.
- Path fields and ``--config``: no candidates from us, which makes each generated script fall back to the shell's own
  file and folder completion (bash ``complete -o default``, zsh ``_files``, fish's file list).

This runs on every TAB press, so it imports nothing heavy: the registry reads metadata only, and the optimizer names
are a copy (``cli/optimizers.py``) that a test keeps equal to transformers' list.
"""

from __future__ import annotations

from collections.abc import Callable

from xllm_cli.registry import KEY_FIELDS

Completer = Callable[[str], list]
_KIND_OF_FIELD = {field: kind for kind, field in KEY_FIELDS.items()}
FIXED_CHOICES = {
    "deepspeed_stage": ["0", "1", "2", "3"],
    "gptq_bits": ["2", "3", "4", "8"],
}


def registry_keys(kind: str, incomplete: str = "") -> list[tuple[str, str]]:
    """(key, providing package) for every registered key of ``kind`` starting with ``incomplete``."""
    from xllm_cli.registry import available

    try:
        entries = available(kind)
    except Exception:  # a broken plugin install must not break TAB; the command itself reports it
        return []
    return [(key, entry.provider) for key, entry in entries.items() if key.startswith(incomplete)]


def _registry_completer(kind: str) -> Completer:
    return lambda incomplete: registry_keys(kind, incomplete)


def _fixed(choices: list[str]) -> Completer:
    return lambda incomplete: [c for c in choices if c.startswith(incomplete)]


def optimizer_names() -> list[str]:
    # transformers' OptimizerNames values, listed here because importing transformers costs seconds per TAB.
    # tests/test_completion.py checks this list against transformers so it cannot drift.
    from xllm_cli.cli.optimizers import OPTIMIZER_NAMES

    return OPTIMIZER_NAMES


def completer_for(name: str) -> Completer | None:
    """The value completer of config field ``name``, or None (Typer's default: choices, or the shell's files)."""
    if name in _KIND_OF_FIELD:
        return _registry_completer(_KIND_OF_FIELD[name])
    if name in FIXED_CHOICES:
        return _fixed(FIXED_CHOICES[name])
    if name == "optim":
        return lambda incomplete: [o for o in optimizer_names() if o.startswith(incomplete)]
    return None
