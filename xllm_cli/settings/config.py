"""``XllmConfig``: every section composed into one flat settings model."""

from __future__ import annotations

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
        from xllm_cli.settings.sources import environment_sources

        return (init_settings, *environment_sources(settings_cls, init_settings.init_kwargs))

    @model_validator(mode="after")
    def _rules_across_sections(self) -> XllmConfig:
        if self.deepspeed_stage == 3 and self.bitsandbytes:
            raise ValueError(
                f"{flag('deepspeed_stage')} 3 cannot shard bitsandbytes weights ({flag('load_in_4bit')}/"
                f"{flag('load_in_8bit')}): use stage 2 with QLoRA, or stage 3 with a 16-bit base"
            )
        return self
