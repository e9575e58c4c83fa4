"""The cheapest change that makes a run fit, found by estimating each candidate (not by rule of thumb).

Candidates in order of what they cost: gradient checkpointing (a third more compute), a smaller per-device batch with
more accumulation (same effective batch, less parallelism), an 8-bit optimizer, LoRA instead of full fine-tuning,
QLoRA, then ZeRO-3 and its CPU offload. The first single change that fits is the answer; when none does alone, they
are added up in the same order until the run fits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xllm_cli.estimate.hardware import Target
from xllm_cli.settings.config import XllmConfig
from xllm_cli.settings.names import flag


def flags(update: dict[str, Any], config: XllmConfig) -> str:
    """The command-line flags that change ``config`` into ``update`` (settings already so are left out)."""

    words = []
    for name, value in update.items():
        if getattr(config, name) == value:
            continue
        if isinstance(value, bool):
            words.append(flag(name) if value else f"--no-{flag(name)[2:]}")
        else:
            words.append(f"{flag(name)} {value if value != '' else repr(value)}")
    return " ".join(words)


def candidates(config: XllmConfig, target: Target) -> list[list[dict[str, Any]]]:
    """Groups of alternative changes, cheapest group first; within a group, the mildest first."""
    groups: list[list[dict[str, Any]]] = []
    if not config.use_gradient_checkpointing:
        groups.append([{"use_gradient_checkpointing": True}])
    batch, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    smaller = [size for size in range(batch - 1, 0, -1) if batch % size == 0]
    if smaller:
        groups.append(
            [
                {"per_device_train_batch_size": size, "gradient_accumulation_steps": accumulation * batch // size}
                for size in smaller
            ]
        )
    if not any(word in config.optim for word in ("8bit", "4bit", "sgd", "lomo", "adafactor")):
        groups.append([{"optim": "paged_adamw_8bit"}])
    quantized = config.load_in_4bit or config.load_in_8bit or config.from_gptq
    if not config.apply_lora:
        groups.append([{"apply_lora": True}])
    if config.load_in_8bit and config.llm_int8_has_fp16_weight:
        groups.append([{"llm_int8_has_fp16_weight": False}])  # 8-bit weights for real
    if (not quantized or config.load_in_8bit) and config.deepspeed_stage != 3:
        groups.append([{"apply_lora": True, "load_in_4bit": True, "load_in_8bit": False}])
    if not quantized and not config.deepspeed_config_path:
        zero3: dict[str, Any] = {"deepspeed_stage": 3}
        if config.fsdp_strategy:
            zero3["fsdp_strategy"] = ""
        options = [] if config.deepspeed_stage == 3 or target.num_devices == 1 else [zero3]
        if not (config.deepspeed_offload and config.deepspeed_stage == 3):
            options.append({**zero3, "deepspeed_offload": True})
        groups.append(options)
    return groups


def cheapest_fit(config: XllmConfig, target: Target, total_of: Callable[[Any], int]) -> tuple[str | None, int | None]:
    """(flags to add, the total they give) for the cheapest change that fits; (None, None) when nothing does.
    ``total_of(config)``: the estimated total of a changed config (the estimator, passed in)."""

    def total(update: dict[str, Any]) -> int:
        return total_of(config.model_copy(update=update))

    groups = candidates(config, target)
    for group in groups:
        for update in group:
            value = total(update)
            if value <= target.device_memory:
                return flags(update, config), value
    chosen: list[dict[str, Any]] = []
    for group in groups:
        chosen.append(group[-1])  # the strongest of the group
        if total(_merged(chosen)) <= target.device_memory:
            break
    else:
        return None, None
    # Drop what the last, decisive change made unnecessary (cheapest first: they were added before it), then soften
    # each remaining one to the mildest of its group that still fits.
    for update in list(chosen[:-1]):
        without = [other for other in chosen if other is not update]
        if total(_merged(without)) <= target.device_memory:
            chosen = without
    for index, update in enumerate(chosen):
        group = next(group for group in groups if update in group)
        for milder in group[: group.index(update)]:
            softer = [*chosen[:index], milder, *chosen[index + 1 :]]
            if total(_merged(softer)) <= target.device_memory:
                chosen = softer
                break
    merged = _merged(chosen)
    return flags(merged, config), total(merged)


def _merged(updates: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for update in updates:
        merged.update(update)
    return merged
