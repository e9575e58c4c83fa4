"""Value completion for flags: registry keys (from entry-point metadata, no plugin import) and fixed choices.

Runs on every TAB press, so it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable

from xllm_cli.registry import KEY_FIELDS

_KIND_OF_FIELD = {field: kind for kind, field in KEY_FIELDS.items()}
FIXED_CHOICES = {
    "deepspeed_stage": ["0", "1", "2", "3"],
    "gptq_bits": ["2", "3", "4", "8"],
}


def _registry_keys(kind: str) -> Callable[[str], list[str]]:
    def complete(incomplete: str) -> list[str]:
        from xllm_cli.registry import available

        try:
            keys = available(kind)
        except Exception:
            return []
        return [key for key in keys if key.startswith(incomplete)]

    return complete


def _fixed(choices: list[str]) -> Callable[[str], list[str]]:
    return lambda incomplete: [c for c in choices if c.startswith(incomplete)]


def optimizer_names() -> list[str]:
    # transformers' OptimizerNames values, listed here because importing transformers costs seconds per TAB.
    # tests/test_completion.py checks this list against transformers so it cannot drift.
    from xllm_cli._optimizers import OPTIMIZER_NAMES

    return OPTIMIZER_NAMES


def completer_for(name: str) -> Callable[[str], list[str]] | None:
    if name in _KIND_OF_FIELD:
        return _registry_keys(_KIND_OF_FIELD[name])
    if name in FIXED_CHOICES:
        return _fixed(FIXED_CHOICES[name])
    if name == "optim":
        return lambda incomplete: [o for o in optimizer_names() if o.startswith(incomplete)]
    return None
