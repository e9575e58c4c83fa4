"""One registry for the four plugin kinds: datasets, collators, trainers and experiments.

Built-ins are listed here by import path; third-party packages add theirs through the entry-point groups
``xllm.datasets``, ``xllm.collators``, ``xllm.trainers`` and ``xllm.experiments``; a script can ``register`` a class
in-process. Listing keys reads metadata only: nothing is imported until a key is used (``load``), which keeps
``--help`` and shell completion fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xllm_cli.errors import ConfigError, XllmError, did_you_mean

GROUPS = {
    "datasets": "xllm.datasets",
    "collators": "xllm.collators",
    "trainers": "xllm.trainers",
    "experiments": "xllm.experiments",
}
# The config field that selects each kind, for messages and for plugin settings.
KEY_FIELDS = {
    "datasets": "dataset_key",
    "collators": "collator_key",
    "trainers": "trainer_key",
    "experiments": "experiment_key",
}
BUILTIN_PROVIDER = "xllm-cli"  # the distribution that ships the built-ins
BUILTINS: dict[str, dict[str, str]] = {
    "datasets": {
        "soda": "xllm_cli.data.soda:SodaDataset",
        "general": "xllm_cli.data.general:GeneralDataset",
        "chat": "xllm_cli.data.chat:ChatDataset",
        "demo": "xllm_cli.data.demo:DemoDataset",
    },
    "collators": {
        "lm": "xllm_cli.collators.lm:LMCollator",
        "completion": "xllm_cli.collators.completion:CompletionCollator",
    },
    "trainers": {"lm": "xllm_cli.training.trainer:LMTrainer"},
    "experiments": {"base": "xllm_cli.training.experiment:Experiment"},
}
# What a class must provide to be accepted as each kind (checked when it is loaded).
CONTRACTS: dict[str, tuple[str, ...]] = {
    "datasets": ("get_data", "get_sample"),
    "collators": ("__call__",),
    "trainers": ("compute_loss",),
    "experiments": ("build", "run"),
}

_in_process: dict[str, dict[str, Any]] = {kind: {} for kind in GROUPS}


@dataclass(frozen=True)
class Entry:
    key: str
    target: str  # "module:attribute", or "<in-process>"
    provider: str  # the distribution that provides it


def _check_kind(kind: str) -> None:
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind {kind!r}; expected one of {', '.join(GROUPS)}")


def register(kind: str, key: str, cls: Any) -> None:
    """Register a class from your own code (e.g. a script launched by deepspeed), overriding any other entry."""
    _check_kind(kind)
    check_contract(kind, key, cls)
    _in_process[kind][key] = cls


def available(kind: str) -> dict[str, Entry]:
    """Every key of a kind with its provider, from built-ins, entry-point metadata and in-process registrations."""
    from importlib.metadata import entry_points

    _check_kind(kind)
    entries = {key: Entry(key, target, BUILTIN_PROVIDER) for key, target in BUILTINS[kind].items()}
    for point in entry_points(group=GROUPS[kind]):
        provider = point.dist.name if point.dist is not None else "unknown package"
        if point.name in entries and entries[point.name].target != point.value:
            raise ConfigError(
                f"{kind[:-1]} key '{point.name}' is claimed by two packages: {entries[point.name].provider} and "
                f"{provider}; uninstall one of them"
            )
        entries[point.name] = Entry(point.name, point.value, provider)
    for key in _in_process[kind]:
        entries[key] = Entry(key, "<in-process>", "registered in-process")
    return dict(sorted(entries.items()))


def load(kind: str, key: str) -> Any:
    """Import and return the class registered under ``key``, checked against the kind's contract."""
    if key in _in_process.get(kind, {}):
        return _in_process[kind][key]
    entries = available(kind)
    if key not in entries:
        raise ConfigError(
            f"unknown {KEY_FIELDS[kind].replace('_', '-')} '{key}'{did_you_mean(key, entries)} "
            f"(available: {', '.join(entries)})"
        )
    entry = entries[key]
    module_name, _, attribute = entry.target.partition(":")
    import importlib

    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else []:
            obj = getattr(obj, part)
    except Exception as error:
        raise XllmError(
            f"{kind[:-1]} plugin '{key}' from package {entry.provider} failed to import ({entry.target}): "
            f"{type(error).__name__}: {error}"
        ) from error
    check_contract(kind, key, obj)
    return obj


def check_contract(kind: str, key: str, cls: Any) -> None:
    missing = [name for name in CONTRACTS[kind] if not callable(getattr(cls, name, None))]
    if missing:
        raise XllmError(
            f"{kind[:-1]} plugin '{key}' ({getattr(cls, '__qualname__', cls)}) does not implement "
            f"{', '.join(missing)}: see the {kind[:-1]} contract in docs/plugins.md"
        )


def plugin_settings(kind: str, key: str) -> Any:
    """The pydantic model of extra settings a plugin declares (``settings_model`` attribute), or None."""
    if kind in BUILTINS and key in BUILTINS[kind] and key not in _in_process[kind]:
        return None  # built-ins keep their settings in XllmConfig itself
    return getattr(load(kind, key), "settings_model", None)
