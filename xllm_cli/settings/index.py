"""Indexes over the sections: which sections each step reads, and which section each field belongs to."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from xllm_cli.settings.catalog import CUSTOM_SECTION, PLUGIN_SECTION, section_title  # noqa: F401 - re-exported
from xllm_cli.settings.sections import (
    SECTIONS,
    AdapterSettings,
    CollatorSettings,
    DataSettings,
    DistributedSettings,
    EstimateSettings,
    FuseSettings,
    GptqSettings,
    HubSettings,
    LoadingSettings,
    LoraSettings,
    ModelSettings,
    PrecisionSettings,
    QuantizationSettings,
    RunSettings,
    SavingSettings,
    Section,
    TokenizerSettings,
    TrackingSettings,
    TrainingSettings,
)

# The sections each step reads: its --help, completion and --show-config show these (and the settings of the plugins
# it loads); a flag of another step's section is refused naming that step.
STEP_SECTIONS: dict[str, tuple[type[Section], ...]] = {
    "download": (RunSettings, ModelSettings, TokenizerSettings, DataSettings),
    "train": (
        RunSettings,
        ModelSettings,
        TokenizerSettings,
        PrecisionSettings,
        LoadingSettings,
        DataSettings,
        CollatorSettings,
        LoraSettings,
        QuantizationSettings,
        TrainingSettings,
        EstimateSettings,
        SavingSettings,
        DistributedSettings,
        HubSettings,
        FuseSettings,
        TrackingSettings,
    ),
    "fuse": (
        RunSettings,
        ModelSettings,
        TokenizerSettings,
        PrecisionSettings,
        AdapterSettings,
        FuseSettings,
        SavingSettings,
        HubSettings,
    ),
    "quantize": (
        RunSettings,
        ModelSettings,
        TokenizerSettings,
        PrecisionSettings,
        LoadingSettings,
        DataSettings,
        CollatorSettings,
        GptqSettings,
    ),
}
# Field name -> the key of its section, and its pydantic field, for the built-in fields.
FIELD_SECTIONS: dict[str, str] = {name: section.key for section in SECTIONS for name in section.model_fields}
FIELDS: dict[str, Any] = {name: info for section in SECTIONS for name, info in section.model_fields.items()}


def section_of(config_cls: type[BaseModel], name: str) -> str:
    """The section key of a field: a built-in section, ``plugin:<key>``, or ``custom`` for a subclass's own field."""
    if name in FIELD_SECTIONS:
        return FIELD_SECTIONS[name]
    extra = config_cls.model_fields[name].json_schema_extra
    section = extra.get("section") if isinstance(extra, dict) else None
    return str(section) if section else CUSTOM_SECTION


def step_fields(step: str, config_cls: type[BaseModel] | None = None) -> list[str]:
    """The fields ``step`` reads: its sections' fields, then the plugin and custom fields of ``config_cls``."""
    names = [name for section in STEP_SECTIONS[step] for name in section.model_fields]
    extra = config_cls.model_fields if config_cls is not None else {}
    return names + [name for name in extra if name not in FIELD_SECTIONS]


def steps_reading(name: str) -> list[str]:
    """The steps whose sections include field ``name``."""
    section = FIELD_SECTIONS.get(name)
    return [step for step, sections in STEP_SECTIONS.items() if any(s.key == section for s in sections)]
