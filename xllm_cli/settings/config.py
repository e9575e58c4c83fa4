"""``XllmConfig``: every section composed into one flat settings model."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from xllm_cli.errors import ConfigError
from xllm_cli.settings.layers import Layer, read_dotenv, read_variables, reject_unknown
from xllm_cli.settings.names import flag
from xllm_cli.settings.sections import SECTIONS


class XllmConfig(BaseSettings, *reversed(SECTIONS)):  # reversed: pydantic lists fields in reverse MRO order
    """Every setting of xllm. Sources, highest first: flags, environment, ``.env``, ``--config`` file, defaults."""

    model_config = SettingsConfigDict(
        env_prefix="XLLM_",
        env_file=".env",
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
        case_sensitive=False,
        # Errors must never echo a secret back.
        hide_input_in_errors=True,
        # The validator is built on first use: --help and completion only read the fields.
        defer_build=True,
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # ``XllmConfig()`` in a user's script reads the same sources, the same way, as the CLI.
        return (init_settings, *environment_sources(settings_cls, init_settings.init_kwargs))

    @model_validator(mode="after")
    def _rules_across_sections(self) -> XllmConfig:
        if self.deepspeed_stage == 3 and self.bitsandbytes:
            raise ValueError(
                f"{flag('deepspeed_stage')} 3 cannot shard bitsandbytes weights ({flag('load_in_4bit')}/"
                f"{flag('load_in_8bit')}): use stage 2 with QLoRA, or stage 3 with a 16-bit base"
            )
        return self


class _LayerSource(PydanticBaseSettingsSource):
    """Adapts one of the readers above to pydantic-settings, for ``XllmConfig()`` built directly in Python."""

    def __init__(self, settings_cls: type[BaseSettings], read: Callable[[], dict[str, Any]]):
        super().__init__(settings_cls)
        self._read = read

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._read()


def environment_sources(settings_cls: type[BaseSettings], init_kwargs: Mapping[str, Any]) -> tuple:
    fields = settings_cls.model_fields

    def env() -> dict[str, Any]:
        return {k: v for k, v in read_variables(os.environ).items() if k in fields}

    def dotenv() -> dict[str, Any]:
        path = Path(init_kwargs.get("path_to_env_file") or env().get("path_to_env_file") or ".env")
        layer = read_dotenv(path)
        reject_unknown({".env": Layer(layer, path)}, fields)
        return layer

    return _LayerSource(settings_cls, env), _LayerSource(settings_cls, dotenv)


# Rules between settings that one step alone has: they are checked when that step runs, not by XllmConfig itself,
# because one .env or config file usually serves every step and may hold settings the step at hand does not read.
def check_training_rules(config: XllmConfig) -> None:
    if (config.load_in_4bit or config.load_in_8bit or config.from_gptq) and not config.apply_lora:
        which = "load_in_4bit" if config.load_in_4bit else "load_in_8bit" if config.load_in_8bit else "from_gptq"
        raise ConfigError(
            f"{flag(which)} trains only adapters: add --apply-lora (quantized weights cannot be fine-tuned)"
        )
    if config.fuse_after_training and not config.apply_lora:
        raise ConfigError("--fuse-after-training needs --apply-lora: there is no adapter to fuse otherwise")


def check_fuse_rules(config: XllmConfig) -> None:
    if not (config.lora_hub_model_id or config.lora_model_local_path):
        raise ConfigError(f"fuse needs an adapter: give {flag('lora_model_local_path')} or {flag('lora_hub_model_id')}")
