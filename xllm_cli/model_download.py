"""Download a model's weights, config and tokenizer into the Hugging Face cache, once, before training.

Only what training reads is fetched: every safetensors shard and its index (or, for a repository without safetensors,
the PyTorch .bin shards and their index), the configs and the tokenizer files. Other formats (TensorFlow, Flax, ONNX,
GGUF, Mistral's ``consolidated`` files, ``original/`` folders), READMEs and images are skipped. The original tool
fetched only the index of a sharded checkpoint; here the shards the index names are fetched too.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.errors import ConfigError, XllmError

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
# Top-level files a model or tokenizer load reads besides the weights.
SUPPORT_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.model",  # sentencepiece (tokenizer.model, spiece.model)
    "*.tiktoken",
)
TOKENIZER_PATTERNS = tuple(p for p in SUPPORT_PATTERNS if p not in ("config.json", "generation_config.json"))
REMOTE_CODE_PATTERNS = ("*.py",)


def _matching(files: Iterable[str], patterns: Iterable[str]) -> list[str]:
    return [name for name in files if "/" not in name and any(fnmatch.fnmatch(name, p) for p in patterns)]


def weight_files(files: list[str], read_index: Any) -> list[str]:
    """The weight files to fetch: safetensors (shards named by the index) first, .bin only without safetensors."""
    for index, single, suffix in (
        (SAFETENSORS_INDEX, "model.safetensors", ".safetensors"),
        (BIN_INDEX, "pytorch_model.bin", ".bin"),
    ):
        if index in files:
            shards = sorted(set(read_index(index)["weight_map"].values()))
            missing = [shard for shard in shards if shard not in files]
            if missing:
                raise XllmError(f"{index} names shards the repository does not have: {', '.join(missing[:3])}")
            return [index, *shards]
        if single in files:
            return [single]
        loose = [n for n in files if "/" not in n and n.endswith(suffix) and not n.startswith("consolidated")]
        if loose:
            return sorted(loose)
    return []


def select_files(files: list[str], read_index: Any, trust_remote_code: bool = False) -> list[str]:
    """Everything training reads from a model repository, nothing more."""
    weights = weight_files(files, read_index)
    if not weights:
        raise XllmError("the repository has no safetensors or PyTorch .bin weights training could load")
    support = _matching(files, SUPPORT_PATTERNS + (REMOTE_CODE_PATTERNS if trust_remote_code else ()))
    return sorted(set(support) - set(weights)) + weights


def is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().is_dir()


def looks_local(name_or_path: str) -> bool:
    """A path as the user typed it (./x, ../x, /x, ~/x): meant as a folder, never as a Hub id."""
    return name_or_path in (".", "..") or name_or_path.startswith(("./", "../", "/", "~"))


def check_model_paths(config: Any) -> None:
    """A local-looking model or tokenizer path that is not a folder is an error here, not a Hub lookup of its last
    component (which would end in a network or 'repository not found' error about a name the user never typed)."""
    for name in ("model_name_or_path", "tokenizer_name_or_path"):
        value = getattr(config, name, None)
        if not value or not looks_local(value):
            continue
        path = Path(value).expanduser()
        if not path.exists():
            raise ConfigError(f"--{name.replace('_', '-')} {value}: no such folder")
        if not path.is_dir():
            raise ConfigError(f"--{name.replace('_', '-')} {value}: not a folder (give the model's folder)")


def _describe_hub_error(error: Exception, repo_id: str) -> XllmError:
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, GatedRepoError):
        return XllmError(
            f"'{repo_id}' is gated on the Hugging Face Hub: accept its terms on the model page, then give a token",
            hint="--huggingface-hub-token, or HF_TOKEN in the environment or .env",
        )
    if isinstance(error, RepositoryNotFoundError):
        return XllmError(
            f"model '{repo_id}' is not on the Hugging Face Hub and is not a local folder (or it is private)",
            hint="check --model-name-or-path; private repositories need --huggingface-hub-token",
        )
    if isinstance(error, RevisionNotFoundError):
        return XllmError(f"model '{repo_id}': revision not found on the Hub")
    if isinstance(error, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return XllmError(
            f"model '{repo_id}' is not in the Hugging Face cache and the Hub cannot be reached (offline)",
            hint="unset HF_HUB_OFFLINE or check the network, or point --model-name-or-path at a local folder",
        )
    first_line = (str(error).strip().splitlines() or [""])[0]
    return XllmError(f"downloading '{repo_id}' failed: {type(error).__name__}: {first_line}")


def _fetch(repo_id: str, files: list[str], sizes: dict[str, int], revision: str, token: str | None) -> Path:
    """Parallel download of exactly ``files`` at ``revision``, with huggingface_hub's progress bars on a terminal."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    total = sum(sizes.get(name, 0) for name in files)
    console.info(f"downloading {len(files)} files ({total / 2**20:,.1f} MiB) of {repo_id}: {', '.join(files)}")
    bars_were_off = are_progress_bars_disabled()
    if not (console.live() and console.is_main_process()):
        disable_progress_bars()  # plain logs: the file list above and the result line below say enough
    try:
        # Exact names as patterns: ``fnmatch`` on a name without wildcards matches only that name.
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=files, token=token)
    finally:
        if not bars_were_off:
            enable_progress_bars()
    return Path(folder)


def download_repo(repo_id: str, token: str | None, patterns: str = "model", trust_remote_code: bool = False) -> Path:
    """Fetch the files a model (``patterns="model"``) or only a tokenizer (``"tokenizer"``) needs; returns the
    snapshot folder in the Hugging Face cache."""
    from huggingface_hub import HfApi, hf_hub_download

    try:
        info = HfApi().model_info(repo_id, files_metadata=True, token=token)
        files = [sibling.rfilename for sibling in info.siblings or []]
        sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}

        def read_index(name: str) -> dict:
            return json.loads(Path(hf_hub_download(repo_id, name, revision=info.sha, token=token)).read_text())

        if patterns == "tokenizer":
            selected = _matching(files, TOKENIZER_PATTERNS)
        else:
            selected = select_files(files, read_index, trust_remote_code)
        return _fetch(repo_id, selected, sizes, info.sha, token)
    except XllmError:
        raise
    except Exception as error:
        raise _describe_hub_error(error, repo_id) from None


def download_model(config: Any) -> Path | None:
    """Download the model (and a separate tokenizer) unless they are local folders; returns the model snapshot."""
    check_model_paths(config)
    token = config.secret("huggingface_hub_token")
    snapshot = None
    if is_local(config.model_name_or_path):
        console.info(f"model: local folder {config.model_name_or_path}, nothing to download")
    else:
        snapshot = download_repo(config.model_name_or_path, token, "model", config.trust_remote_code)
        console.info(f"model: {config.model_name_or_path} -> {snapshot}")
    tokenizer = config.tokenizer_name_or_path
    if tokenizer and tokenizer != config.model_name_or_path and not is_local(tokenizer):
        console.info(f"tokenizer: {tokenizer} -> {download_repo(tokenizer, token, 'tokenizer')}")
    return snapshot
