"""The Hugging Face Hub, the few ways xllm uses it: push a finished folder to a repository, fetch an adapter.

Shared by fuse, quantize and train. The token comes from the config (``config.secret("huggingface_hub_token")``) and
is handed to huggingface_hub only; it never appears in a message. ``HF_ENDPOINT`` is honoured (the tests point it at a
loopback server).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xllm_cli import console
from xllm_cli.errors import XllmError

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


def _hub_failure(error: Exception, action: str, repo_id: str, flag: str) -> XllmError:
    """One line for a failed hub call, naming the repository and the flag that chose it (never the token)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if isinstance(error, GatedRepoError):
        return XllmError(f"{action} '{repo_id}': the repository is gated; accept its terms on the Hub first")
    if isinstance(error, RepositoryNotFoundError):
        return XllmError(
            f"{action} '{repo_id}': repository not found (or private and the token cannot see it)",
            hint=f"check {flag}; private repositories need --huggingface-hub-token or HF_TOKEN",
        )
    if isinstance(error, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return XllmError(
            f"{action} '{repo_id}': the Hugging Face Hub cannot be reached (offline or network down)",
            hint="unset HF_HUB_OFFLINE or check the network and HF_ENDPOINT",
        )
    if isinstance(error, HfHubHTTPError) and error.response is not None and error.response.status_code in (401, 403):
        return XllmError(
            f"{action} '{repo_id}': the Hub refused the token (HTTP {error.response.status_code})",
            hint="a token with write access: --huggingface-hub-token, HF_TOKEN or .env",
        )
    first_line = (str(error).strip().splitlines() or [""])[0]
    return XllmError(f"{action} '{repo_id}' failed: {type(error).__name__}: {first_line}")


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
        raise _hub_failure(error, "pushing to", repo_id, flag) from None
    console.info(f"pushed to {url}")
    return str(url)


def download_adapter(repo_id: str, token: str | None, flag: str = "--lora-hub-model-id") -> Path:
    """Fetch a LoRA adapter (config, weights and any tokenizer saved with it) into the Hugging Face cache."""
    from huggingface_hub import snapshot_download

    console.info(f"downloading adapter {repo_id}")
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(ADAPTER_PATTERNS), token=token))
    except Exception as error:
        raise _hub_failure(error, "downloading adapter", repo_id, flag) from None
    if not (folder / "adapter_config.json").is_file():
        raise XllmError(f"'{repo_id}' is not a LoRA adapter: it has no adapter_config.json", hint=f"check {flag}")
    return folder
