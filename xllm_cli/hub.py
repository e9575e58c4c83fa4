"""The Hugging Face Hub, the ways xllm uses it: download what a step needs of a model repository, fetch an adapter,
push a finished folder; and one mapping of every failure to a line that names the repository and the flag.

Only what training reads is fetched from a model repository: every safetensors shard and its index (or, for a
repository without safetensors, the PyTorch .bin shards and their index), the configs and the tokenizer files, and the
repository's code with ``--trust-remote-code``. Other formats (TensorFlow, Flax, ONNX, GGUF, Mistral's
``consolidated`` files, ``original/`` folders), READMEs and images are skipped.

The token is handed to huggingface_hub only; it never appears in a message. ``HF_ENDPOINT`` is honoured (the tests
point it at a loopback server).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.errors import XllmError, first_line

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


# What an adapter folder holds besides its weights: its config, and the tokenizer training saved with it.
ADAPTER_PATTERNS = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "*.json",
    "*.jinja",
    "*.model",
    "*.txt",
    "*.yaml",
    "*.tiktoken",
)


def hub_failure(error: Exception, action: str, repo_id: str, flag: str, write: bool = False) -> XllmError:
    """One line for a failed hub call, naming the repository and the flag that chose it (never the token)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{action} '{repo_id}'"
    token_hint = "--huggingface-hub-token, or HF_TOKEN in the environment or .env"
    if isinstance(error, GatedRepoError):
        return XllmError(f"{where}: the repository is gated; accept its terms on its Hub page first", hint=token_hint)
    if isinstance(error, RepositoryNotFoundError):
        return XllmError(
            f"{where}: not a local folder, and not on the Hugging Face Hub (or private and the token cannot see it)",
            hint=f"check {flag}; private repositories need {token_hint}",
        )
    if isinstance(error, RevisionNotFoundError):
        return XllmError(f"{where}: revision not found on the Hub", hint=f"check {flag}")
    if isinstance(error, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return XllmError(
            f"{where}: not in the Hugging Face cache and the Hub cannot be reached (offline or network down)",
            hint=f"unset HF_HUB_OFFLINE or check the network and HF_ENDPOINT, or point {flag} at a local folder",
        )
    if isinstance(error, HfHubHTTPError) and error.response is not None and error.response.status_code in (401, 403):
        access = "write access" if write else "access to it"
        return XllmError(
            f"{where}: the Hub refused the token (HTTP {error.response.status_code})",
            hint=f"a token with {access}: {token_hint}",
        )
    return XllmError(f"{where} failed: {type(error).__name__}: {first_line(error)}")


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


def download_repo(
    repo_id: str,
    token: str | None,
    patterns: str = "model",
    trust_remote_code: bool = False,
    flag: str = "--model-name-or-path",
) -> Path:
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
        raise hub_failure(error, f"downloading {patterns}", repo_id, flag) from None


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool,
    token: str | None,
    commit_message: str,
    flag: str = "--hub-model-id",
    ignore_patterns: Iterable[str] = (),
) -> str:
    """Create ``repo_id`` if needed (private or public) and upload every file of ``folder`` in one commit.

    Returns the repository URL. ``flag`` names the setting that chose the repository, for the error message.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    api = HfApi(token=token)
    visibility = "private" if private else "public"
    console.info(f"pushing {folder} to the Hub: {repo_id} ({visibility})")
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message,
            ignore_patterns=list(ignore_patterns) or None,
            repo_type="model",
        )
    except Exception as error:
        raise hub_failure(error, "pushing to", repo_id, flag, write=True) from None
    console.info(f"pushed to {url}")
    return str(url)


def download_adapter(repo_id: str, token: str | None, flag: str = "--lora-hub-model-id") -> Path:
    """Fetch a LoRA adapter (config, weights and any tokenizer saved with it) into the Hugging Face cache."""
    from huggingface_hub import snapshot_download

    console.info(f"downloading adapter {repo_id}")
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(ADAPTER_PATTERNS), token=token))
    except Exception as error:
        raise hub_failure(error, "downloading adapter", repo_id, flag) from None
    if not (folder / "adapter_config.json").is_file():
        raise XllmError(f"'{repo_id}' is not a LoRA adapter: it has no adapter_config.json", hint=f"check {flag}")
    return folder
