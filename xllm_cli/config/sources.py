"""Where settings come from, highest first: flags > environment > .env > --config file > defaults.

Every source is read into a plain ``{field: value}`` layer so the resolved configuration can tell where each value
came from (``--show-config``), and so a typo is caught with the closest valid name instead of being ignored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from xllm_cli.config.fields import XllmConfig
from xllm_cli.config.validation import flag
from xllm_cli.errors import ConfigError, did_you_mean

ENV_PREFIX = "XLLM_"
# Conventional variable names other tools already use, accepted after XLLM_<FIELD>.
CONVENTIONAL_ENV = {
    "huggingface_hub_token": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
    "wandb_api_key": ("WANDB_API_KEY",),
    "local_rank": ("LOCAL_RANK",),  # set by torchrun and the deepspeed launcher
}
SOURCE_ORDER = ("default", "config file", ".env", "env", "flag")

C = TypeVar("C", bound=BaseModel)


def env_names(name: str) -> tuple[str, ...]:
    return (ENV_PREFIX + name.upper(), *CONVENTIONAL_ENV.get(name, ()))


def read_variables(variables: Mapping[str, str], fields: Mapping[str, Any]) -> dict[str, str]:
    """Pick the settings out of environment-style variables: ``XLLM_<FIELD>`` or a conventional name.

    ``XLLM_`` names that match no field are kept (lower-cased, without the prefix) so the caller can reject them
    once it knows every field, plugin settings included.
    """
    upper = {key.upper(): value for key, value in variables.items()}
    layer: dict[str, str] = {
        key[len(ENV_PREFIX) :].lower(): value for key, value in upper.items() if key.startswith(ENV_PREFIX)
    }
    for name, names in CONVENTIONAL_ENV.items():
        found = next((upper[n] for n in names if n in upper), None)
        if name not in layer and found is not None:
            layer[name] = found
    return layer


def read_dotenv(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return read_variables({key: value for key, value in dotenv_values(path).items() if value is not None}, {})


def _line_of(path: Path, pattern: str, flags: int = 0) -> int | None:
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if re.search(pattern, text, flags):
            return number
    return None


def read_config_file(path: str | Path, entities: Mapping[str, str]) -> dict[str, Any]:
    """Read a YAML, TOML or JSON file of settings. Keys may be flat or grouped in sections named by entity."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no such file {path}")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"--config {path}: unknown file type '{suffix}'; use .yaml, .yml, .toml or .json")
    except ConfigError:
        raise
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
    except Exception as error:  # yaml.YAMLError, tomllib.TOMLDecodeError
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: invalid {suffix.lstrip('.').upper()}: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting names to values, got {type(data).__name__}")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in entities and isinstance(value, dict):
            flat.update(value)
        else:
            flat[str(key)] = value
    return flat


def reject_unknown(layers: Mapping[str, tuple[dict[str, Any], Path | None]], fields: Mapping[str, Any]) -> None:
    """One line for the first setting that matches no field, naming its source, line and the closest name."""
    for origin, (layer, path) in layers.items():
        for key in layer:
            if key in fields:
                continue
            if origin == "config file":
                line = _line_of(path, rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[:=]")
                where = f"{path}:{line}" if line else str(path)
                raise ConfigError(f"{where}: unknown setting '{key}'{did_you_mean(key, fields)}")
            if origin == "flag":
                raise ConfigError(f"unknown setting '{key}'{did_you_mean(key, fields)}")
            env_key = ENV_PREFIX + key.upper()
            known = [ENV_PREFIX + name.upper() for name in fields]
            message = f"unknown setting {env_key}{did_you_mean(env_key, known)}"
            if origin == ".env":
                line = _line_of(path, rf"^\s*(export\s+)?{re.escape(env_key)}\s*=", flags=re.IGNORECASE)
                raise ConfigError(f"{path}:{line}: {message}" if line else f"{path}: {message}")
            # The process environment is shared with other tools: warn, don't stop.
            from xllm_cli import console

            console.warn(f"environment: {message}")


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
        return {k: v for k, v in read_variables(os.environ, fields).items() if k in fields}

    def dotenv() -> dict[str, Any]:
        path = init_kwargs.get("path_to_env_file") or env().get("path_to_env_file")
        layer = read_dotenv(path or fields["path_to_env_file"].default)
        reject_unknown({".env": (layer, Path(path or ".env"))}, fields)
        return layer

    return _LayerSource(settings_cls, env), _LayerSource(settings_cls, dotenv)


@dataclass
class ResolvedConfig:
    """The validated configuration and, for each field, the source its value came from."""

    config: Any
    sources: dict[str, str] = field(default_factory=dict)

    def source_of(self, name: str) -> str:
        return self.sources.get(name, "default")


def resolve_config(
    flags: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    config_cls: type[C] = XllmConfig,  # type: ignore[assignment]
    extend: Callable[[type[C], Mapping[str, Any]], type[C]] | None = None,
    extra_args: list[str] | None = None,
    known_flags: list[str] | None = None,
) -> ResolvedConfig:
    """Merge the four sources and validate. Raises ``ConfigError`` with one line on any problem.

    ``extend`` receives the merged raw values and may return a subclass of ``config_cls`` with more fields (the
    settings of the plugins those values select); unknown names are rejected only after that. ``extra_args`` are
    command-line flags Typer did not know, parsed against the plugin settings.
    """
    from xllm_cli.config.fields import ENTITIES

    flags = {key: value for key, value in (flags or {}).items() if value is not None}
    environ = os.environ if environ is None else environ
    file_layer = read_config_file(config_file, ENTITIES) if config_file else {}
    env_layer = read_variables(environ, config_cls.model_fields)
    env_file = Path(
        flags.get("path_to_env_file")
        or env_layer.get("path_to_env_file")
        or file_layer.get("path_to_env_file")
        or config_cls.model_fields["path_to_env_file"].default
    )
    dotenv_layer = read_dotenv(env_file)
    layers = {
        "config file": (file_layer, Path(config_file) if config_file else None),
        ".env": (dotenv_layer, env_file),
        "env": (env_layer, None),
        "flag": (flags, None),
    }
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for origin, (layer, _) in layers.items():
        for key, value in layer.items():
            merged[key] = value
            sources[key] = origin
    base_fields = config_cls.model_fields
    if extend is not None:
        config_cls = extend(config_cls, merged)
    fields = config_cls.model_fields
    if extra_args:
        from xllm_cli.config.argv import parse_extra_flags

        plugin_fields = {name: info for name, info in fields.items() if name not in base_fields}
        plugin_flags = parse_extra_flags(extra_args, plugin_fields, known_flags or [])
        merged.update(plugin_flags)
        flags.update(plugin_flags)
        sources.update(dict.fromkeys(plugin_flags, "flag"))
    reject_unknown(layers, fields)
    known = {key: value for key, value in merged.items() if key in fields}
    return ResolvedConfig(validate(config_cls, known, sources), {k: v for k, v in sources.items() if k in fields})


def validate(config_cls: type[C], values: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> C:
    """``model_validate`` without reading the environment again, with pydantic's errors turned into one line."""
    try:
        return config_cls.model_validate(dict(values))
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, sources or {})) from None


def describe_validation_error(error: ValidationError, sources: Mapping[str, str]) -> str:
    messages = []
    for item in error.errors(include_input=False, include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["loc"]:
            name = str(item["loc"][0])
            origin = sources.get(name)
            origin = None if origin == "flag" else origin  # the flag name already says where
            where = {"env": f"env {env_names(name)[0]}", ".env": f".env {env_names(name)[0]}"}.get(origin, origin)
            message = f"{flag(name)}{f' (from {where})' if where else ''}: {message}"
        messages.append(message)
    return "; ".join(messages)
