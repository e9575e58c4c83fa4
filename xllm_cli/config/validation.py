"""Rules between fields, checked before any heavy work. Each failure is one line that names the flags involved."""

from __future__ import annotations

import re
from typing import Any

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
GB = 10**9
MEMORY_UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
MEMORY_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]*)\s*$", re.IGNORECASE)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_combinations(config: Any) -> None:
    """Raise ``ValueError`` with a one-line message for the first contradictory combination."""
    c = config
    if c.load_in_4bit and c.load_in_8bit:
        raise ValueError(f"{flag('load_in_4bit')} and {flag('load_in_8bit')} cannot be used together: pick one")
    if c.from_gptq and (c.load_in_4bit or c.load_in_8bit):
        bnb = flag("load_in_4bit") if c.load_in_4bit else flag("load_in_8bit")
        raise ValueError(f"{flag('from_gptq')} cannot be combined with {bnb}: a GPTQ model is already quantized")
    if c.use_flash_attention_2 and c.attn_implementation not in ("auto", "flash_attention_2"):
        raise ValueError(
            f"{flag('use_flash_attention_2')} contradicts {flag('attn_implementation')} {c.attn_implementation}: "
            "pick one"
        )
    if c.force_fp16 and c.force_fp32:
        raise ValueError(f"{flag('force_fp16')} and {flag('force_fp32')} cannot be used together: pick one")
    if c.deepspeed_stage not in (0, 1, 2, 3):
        raise ValueError(f"{flag('deepspeed_stage')} must be 0, 1, 2 or 3, got {c.deepspeed_stage}")
    uses_deepspeed = c.deepspeed_stage > 0 or bool(c.deepspeed_config_path)
    if uses_deepspeed and c.fsdp_strategy.strip():
        raise ValueError(
            f"DeepSpeed ({flag('deepspeed_stage')}/{flag('deepspeed_config_path')}) and FSDP "
            f"({flag('fsdp_strategy')}) cannot be used together: pick one engine"
        )
    if getattr(c, "deepspeed_offload", False) and (c.deepspeed_config_path or c.deepspeed_stage not in (2, 3)):
        raise ValueError(
            f"{flag('deepspeed_offload')} applies to the predefined configs of {flag('deepspeed_stage')} 2 or 3; "
            f"with {flag('deepspeed_config_path')} put offload in your own file"
        )
    if c.deepspeed_stage == 3 and (c.load_in_4bit or c.load_in_8bit):
        raise ValueError(
            f"{flag('deepspeed_stage')} 3 cannot shard bitsandbytes weights ({flag('load_in_4bit')}/"
            f"{flag('load_in_8bit')}): use stage 2 with QLoRA, or stage 3 with a 16-bit base"
        )
    if c.push_to_hub and not c.hub_model_id:
        raise ValueError(f"{flag('push_to_hub')} needs {flag('hub_model_id')} (e.g. --hub-model-id me/my-model)")
    check_lora_target_modules(c.raw_lora_target_modules)
    if c.gptq_bits not in (2, 3, 4, 8):
        raise ValueError(f"{flag('gptq_bits')} must be 2, 3, 4 or 8, got {c.gptq_bits}")
    if c.gptq_group_size != -1 and c.gptq_group_size <= 0:
        raise ValueError(f"{flag('gptq_group_size')} must be -1 or a positive number, got {c.gptq_group_size}")


def check_lora_target_modules(raw: str) -> None:
    if raw.strip() == "all":
        return
    names = [part.strip() for part in raw.split(",")]
    bad = [name for name in names if not _MODULE_NAME.match(name)]
    if not names or bad:
        shown = ", ".join(repr(n) for n in bad) or repr(raw)
        raise ValueError(
            f"{flag('raw_lora_target_modules')} must be 'all' or a comma list of module names "
            f"(e.g. q_proj,v_proj); bad entry {shown}"
        )


def check_for_command(config: Any, command: str) -> None:
    """Rules that depend on the step being run."""
    if command == "fuse" and not (config.lora_hub_model_id or config.lora_model_local_path):
        raise ValueError(f"fuse needs an adapter: give {flag('lora_model_local_path')} or {flag('lora_hub_model_id')}")


def parse_size(text: str) -> int:
    """Bytes in ``24GB`` (10^9), ``80GiB`` (2^30), ``512MB``, ``1.5TB`` ...; a unit is required (a bare 24 is more likely
    24 GB than 24 bytes). ``ValueError`` with the accepted forms."""
    match = _SIZE.match(str(text))
    unit = match.group("unit").lower() if match else None
    if match is None or unit not in MEMORY_UNITS:
        raise ValueError(f"'{text}' is not a memory size; write it like 24GB, 80GiB or 512MB")
    size = int(float(match.group("number")) * MEMORY_UNITS[unit])
    if size <= 0:
        raise ValueError(f"'{text}' is not a memory size above zero")
    return size
