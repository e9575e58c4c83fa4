"""Finding and opening a model, the same way for download, train, fuse and quantize: where it is (a local folder, or
a Hub repository fetched with the files the step needs), how it is opened (token and ``trust_remote_code`` passed
alike everywhere), its tokenizer, and the dtype it is computed and written in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.collators.templates import set_chat_template
from xllm_cli.errors import ConfigError, first_line
from xllm_cli.hub import download_repo
from xllm_cli.settings.config import XllmConfig
from xllm_cli.settings.names import flag
from xllm_cli.settings.sections import PrecisionSettings


def looks_local(name_or_path: str) -> bool:
    """A path as the user typed it (./x, ../x, /x, ~/x): meant as a folder, never as a Hub id."""
    return name_or_path in (".", "..") or name_or_path.startswith(("./", "../", "/", "~"))


def is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().is_dir()


def check_local_paths(config: XllmConfig) -> None:
    """A local-looking model or tokenizer path that is not a folder is an error here, not a Hub lookup of its last
    component (which would end in a network or 'repository not found' error about a name the user never typed)."""
    for name in ("model_name_or_path", "tokenizer_name_or_path"):
        value = getattr(config, name, None)
        if not value or not looks_local(value):
            continue
        path = Path(value).expanduser()
        if not path.exists():
            raise ConfigError(f"{flag(name)} {value}: no such folder")
        if not path.is_dir():
            raise ConfigError(f"{flag(name)} {value}: not a folder (give the model's folder)")


def resolve_model(config: XllmConfig) -> Path:
    """The folder of ``model_name_or_path``: the local folder, or the Hub repository fetched into the Hugging Face
    cache (its code too with ``--trust-remote-code``, which the load then runs)."""
    check_local_paths(config)
    name = config.model_name_or_path
    if is_local(name):
        return Path(name).expanduser()
    return download_repo(name, config.secret("huggingface_hub_token"), "model", config.trust_remote_code)


def model_settings(folder: Path, name: str) -> dict[str, Any]:
    """The ``config.json`` of a model folder, or one line saying the folder is not a model."""
    import json

    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"--model-name-or-path {name}: no config.json, not a model folder")
    return json.loads(path.read_text())


def download_model(config: XllmConfig) -> Path | None:
    """``xllm download``'s model part: the model (and a separate tokenizer) unless they are local folders; returns
    the model snapshot."""
    check_local_paths(config)
    token = config.secret("huggingface_hub_token")
    snapshot = None
    if is_local(config.model_name_or_path):
        console.info(f"model: local folder {config.model_name_or_path}, nothing to download")
    else:
        snapshot = resolve_model(config)
        console.info(f"model: {config.model_name_or_path} -> {snapshot}")
    tokenizer = config.tokenizer_name_or_path
    if tokenizer and tokenizer != config.model_name_or_path and not is_local(tokenizer):
        folder = download_repo(tokenizer, token, "tokenizer", flag="--tokenizer-name-or-path")
        console.info(f"tokenizer: {tokenizer} -> {folder}")
    return snapshot


# --- dtype policy --------------------------------------------------------------------------------------------------


def read_model_config(config: XllmConfig) -> Any:
    """The transformers config of ``--model-name-or-path`` (a local folder, the Hub cache, or ``config.json`` alone
    from the Hub, never weights), read with the run's token and remote-code choice. Raises what transformers raises
    (OSError, ValueError, KeyError): each caller decides whether an unreadable config is an error yet."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(
        config.model_name_or_path,
        trust_remote_code=config.trust_remote_code,
        token=config.secret("huggingface_hub_token"),
    )


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def compute_dtype(precision: PrecisionSettings, cuda: bool | None = None, bf16: bool | None = None) -> Any:
    """The dtype a model runs in: float32 when forced or on CPU (half precision there is slow and lossy), else fp16
    when forced or without bf16 support, else bf16. ``cuda``/``bf16`` describe another device than this one (the
    estimate's target); unset, they are this machine's."""
    import torch

    if precision.force_fp32 or not (has_cuda() if cuda is None else cuda):
        return torch.float32
    if precision.force_fp16 or not (bf16_supported() if bf16 is None else bf16):
        return torch.float16
    return torch.bfloat16


def storage_dtype(precision: PrecisionSettings) -> Any:
    """The dtype a merged model is written in, whatever the machine: fp32 or fp16 when forced, else bf16."""
    import torch

    if precision.force_fp32:
        return torch.float32
    return torch.float16 if precision.force_fp16 else torch.bfloat16


# --- opening ----------------------------------------------------------------------------------------------------------


def open_model(source: str | Path, config: XllmConfig, dtype: Any, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with the token and ``trust_remote_code`` of ``config``; a model that
    cannot be read is one line naming it."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            trust_remote_code=config.trust_remote_code,
            token=config.secret("huggingface_hub_token"),
            **kwargs,
        )
    except OSError as error:
        raise ConfigError(
            f"cannot load the model '{source}': {first_line(error)}",
            hint="check --model-name-or-path, and run 'xllm download' first",
        ) from None


def load_tokenizer(config: XllmConfig, source: str | Path | None = None, for_training: bool = True) -> Any:
    """The tokenizer of ``source`` (default: ``tokenizer_name_or_path``, else the model), with the padding side and
    chat template of the config. ``for_training`` also guarantees a pad token (EOS when it has none); a tokenizer
    written next to a model keeps its own."""
    from transformers import AutoTokenizer

    source = source or config.tokenizer_name_or_path or config.model_name_or_path
    kwargs: dict[str, Any] = {
        "trust_remote_code": config.trust_remote_code,
        "token": config.secret("huggingface_hub_token"),
    }
    if config.tokenizer_use_fast is not None:
        kwargs["use_fast"] = config.tokenizer_use_fast
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as error:  # OSError, ValueError, a tokenizer class missing its package: all the same to a user
        raise ConfigError(
            f"cannot load the tokenizer from '{source}': {type(error).__name__}: {first_line(error)}",
            hint="check --tokenizer-name-or-path / --model-name-or-path, and run 'xllm download' first",
        ) from None
    if config.tokenizer_padding_side:
        tokenizer.padding_side = config.tokenizer_padding_side
    if config.chat_template:
        set_chat_template(tokenizer, config.chat_template)
        console.info(f"chat template: {config.chat_template} (saved with the model's tokenizer)")
    if for_training and tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer of '{source}' has neither a pad nor an EOS token; give it a pad token")
        # Safe because padding is excluded from the loss by the attention mask, never by comparing with the pad id.
        tokenizer.pad_token = tokenizer.eos_token
        console.info(
            f"the tokenizer has no pad token: padding with EOS ({tokenizer.eos_token!r}); EOS is still learned"
        )
    return tokenizer


def save_tokenizer(config: XllmConfig, source: str | Path, output: Path, add_bos_token: bool = False) -> None:
    """Write the tokenizer of ``source`` next to a model's weights (settings applied); ``add_bos_token`` is written
    into its config."""
    import json

    load_tokenizer(config, source, for_training=False).save_pretrained(output)
    if add_bos_token:
        config_file = output / "tokenizer_config.json"
        settings = json.loads(config_file.read_text()) if config_file.is_file() else {}
        settings["add_bos_token"] = True
        config_file.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
