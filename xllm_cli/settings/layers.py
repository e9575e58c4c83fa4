"""The four sources of settings read into plain layers, lowest first: config file, .env, environment, flags.

Reading needs no settings model: the command line reads the layers once to learn which plugins (and so which options)
a run has, before any model class is built. ``sources.py`` merges and validates them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.errors import ConfigError, did_you_mean, first_line
from xllm_cli.settings import catalog
from xllm_cli.settings.names import CONVENTIONAL_ENV, ENV_PREFIX

# Keys a config file may group settings under: the section keys, and the group names of earlier versions.
CONFIG_FILE_GROUPS = (*catalog.section_titles(), "general", "dataset", "bitsandbytes", "gptq_quantization", "wandb")


def read_variables(variables: Mapping[str, str]) -> dict[str, str]:
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

    return read_variables({key: value for key, value in dotenv_values(path).items() if value is not None})


def line_of(path: Path, pattern: str, flags: int = 0) -> int | None:
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if re.search(pattern, text, flags):
            return number
    return None


def _parse_config_text(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib

        return tomllib.loads(text)
    if suffix == ".json":
        return json.loads(text)
    raise ConfigError(f"--config {path}: unknown file type '{suffix}'; use .yaml, .yml, .toml or .json")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON file of settings. Keys may be flat or grouped under section names."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no such file {path}")
    kind = path.suffix.lower().lstrip(".").upper()
    try:
        data = _parse_config_text(path, path.read_text())
    except ConfigError:
        raise
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
    except Exception as error:  # yaml.YAMLError, tomllib.TOMLDecodeError
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        reason = getattr(error, "problem", None) or first_line(error)
        raise ConfigError(f"{where}: invalid {kind}: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting names to values, got {type(data).__name__}")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in CONFIG_FILE_GROUPS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[str(key)] = value
    return flat


@dataclass
class Layer:
    """The settings one source gives, and the file it was read from (for messages)."""

    values: dict[str, Any]
    path: Path | None = None


def read_layers(
    flags: Mapping[str, Any], config_file: str | Path | None, environ: Mapping[str, str]
) -> dict[str, Layer]:
    """The four sources, lowest first, each as read (unknown names not yet rejected)."""
    flags = {key: value for key, value in flags.items() if value is not None}
    file_layer = read_config_file(config_file) if config_file else {}
    env_layer = read_variables(environ)
    env_file = Path(
        flags.get("path_to_env_file")
        or env_layer.get("path_to_env_file")
        or file_layer.get("path_to_env_file")
        or catalog.fields()["path_to_env_file"].default
    )
    return {
        "config file": Layer(file_layer, Path(config_file) if config_file else None),
        ".env": Layer(read_dotenv(env_file), env_file),
        "env": Layer(env_layer),
        "flag": Layer(flags),
    }


def merged(layers: Mapping[str, Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    """(value of each name, the source it came from), higher sources overriding lower ones."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for origin, layer in layers.items():
        for key, value in layer.values.items():
            values[key] = value
            sources[key] = origin
    return values, sources


def reject_unknown(layers: Mapping[str, Layer], fields: Iterable[str]) -> None:
    """One line for the first setting that matches no field, naming its source, line and the closest name."""
    fields = list(fields)
    for origin, layer in layers.items():
        for key in layer.values:
            if key in fields:
                continue
            if origin == "config file":
                line = line_of(layer.path, rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[:=]")
                where = f"{layer.path}:{line}" if line else str(layer.path)
                raise ConfigError(f"{where}: unknown setting '{key}'{did_you_mean(key, fields)}")
            if origin == "flag":
                raise ConfigError(f"unknown setting '{key}'{did_you_mean(key, fields)}")
            env_key = ENV_PREFIX + key.upper()
            known = [ENV_PREFIX + name.upper() for name in fields]
            message = f"unknown setting {env_key}{did_you_mean(env_key, known)}"
            if origin == ".env":
                line = line_of(layer.path, rf"^\s*(export\s+)?{re.escape(env_key)}\s*=", flags=re.IGNORECASE)
                raise ConfigError(f"{layer.path}:{line}: {message}" if line else f"{layer.path}: {message}")
            # The process environment is shared with other tools: warn, don't stop.
            console.warn(f"environment: {message}")
