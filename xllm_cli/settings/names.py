"""How a setting is spelled outside Python: its flag and its environment variables."""

from __future__ import annotations

ENV_PREFIX = "XLLM_"
# Conventional variable names other tools already use, accepted after XLLM_<FIELD>.
CONVENTIONAL_ENV = {
    "huggingface_hub_token": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
    "wandb_api_key": ("WANDB_API_KEY",),
    "local_rank": ("LOCAL_RANK",),  # set by torchrun and the deepspeed launcher
}


def flag(name: str) -> str:
    """``lora_rank`` -> ``--lora-rank``."""
    return "--" + name.replace("_", "-")


def env_names(name: str) -> tuple[str, ...]:
    """Every environment variable that sets ``name``, the xllm one first."""
    return (ENV_PREFIX + name.upper(), *CONVENTIONAL_ENV.get(name, ()))
