"""The estimate as text: the full table ``xllm train --estimate`` prints, and the one line a real run starts with."""

from __future__ import annotations

from xllm_cli.estimate.result import Estimate
from xllm_cli.settings.config import XllmConfig
from xllm_cli.sizes import GB


def size(value: float) -> str:
    """Bytes as a person reads them: 13.20 GB, 412.3 MB, 96 KB (powers of ten)."""
    for unit, scale, digits in (("GB", GB, 2), ("MB", 10**6, 1)):
        if abs(value) >= scale:
            return f"{value / scale:,.{digits}f} {unit}"
    return f"{value / 1e3:,.0f} KB"


def table_unit(total: int) -> tuple[str, int]:
    return ("GB", GB) if total >= GB else ("MB", 10**6)


def count(value: float) -> str:
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return str(int(value))


def method(config: XllmConfig) -> str:
    if not config.apply_lora:
        return "full fine-tuning"
    targets = "all linear layers" if config.raw_lora_target_modules.strip() == "all" else config.raw_lora_target_modules
    if config.load_in_4bit:
        double = ", double quantization" if config.bnb_4bit_use_double_quant else ""
        base = f" on a 4-bit {config.bnb_4bit_quant_type} base{double} (QLoRA)"
    elif config.load_in_8bit:
        fp16 = " keeping 16-bit weights (--llm-int8-has-fp16-weight)" if config.llm_int8_has_fp16_weight else ""
        base = f" on an 8-bit base{fp16}"
    elif config.from_gptq:
        base = " on a GPTQ base"
    else:
        base = ""
    return f"LoRA r={config.lora_rank} on {targets}{base}"


def run_line(result: Estimate) -> str:
    config = result.config
    checkpointing = "gradient checkpointing" if config.use_gradient_checkpointing else "no gradient checkpointing"
    accumulation = config.gradient_accumulation_steps
    batch = f"batch {config.per_device_train_batch_size} × {config.max_length} tokens" + (
        f" × {accumulation} accumulated" if accumulation > 1 else ""
    )
    return f"{method(config)}, {result.dtype}, {batch}, {checkpointing}, {result.engine}"


def render(result: Estimate) -> str:
    config, memory, target = result.config, result.memory, result.target
    kinds = ", ".join(f"{kind} {count(value)}" for kind, value in result.parameters_by_kind.items() if value)
    share = result.trainable / result.parameters if result.parameters else 0
    toggle = "without" if config.use_gradient_checkpointing else "with --use-gradient-checkpointing"
    unit, scale = table_unit(memory.total)

    def amount(value: float) -> str:
        return f"{value / scale:,.2f}"

    activations_note = "saved for backward"
    if result.activations_toggled is not None:
        activations_note += f"; {toggle}: {amount(result.activations_toggled)}"

    rows = [
        ("weights", memory.weights, ""),
        ("gradients", memory.gradients, "one per trainable parameter, in its dtype"),
        ("optimizer states", memory.optimizer, f"{config.optim}: states {result.optimizer}"),
        ("activations", memory.activations, activations_note),
        ("other at the peak", memory.other, _other_note(memory.other)),
    ]
    if memory.overhead:
        rows.append(("CUDA overhead", memory.overhead, "context, workspaces, fragmentation: a constant, not measured"))
    lines = [
        f"estimate for {config.model_name_or_path}: {run_line(result)}",
        f"parameters: {count(result.parameters)} ({kinds}); trainable {count(result.trainable)} ({share:.2%})",
        "",
        f"{'per device':<20}{unit:>9}",
        *(f"  {name:<18}{amount(value):>9}   {note}".rstrip() for name, value, note in rows),
        f"  {'total':<18}{amount(memory.total):>9}",
    ]
    if memory.offloaded:
        lines.append(f"  {'in CPU memory':<18}{amount(memory.offloaded):>9}   offloaded, not in the total")
    lines += ["", verdict(result), time_line(result)]
    lines += [f"note: {note}" for note in result.notes]
    if target.assumed:
        lines.append("note: no GPU is visible here: estimated for a CUDA GPU with bfloat16")
    lines.append("GB = 10^9 bytes. What is counted and how close it comes: docs/estimate.md")
    return "\n".join(lines)


def _other_note(other: int) -> str:
    if other < 0:
        return "gradients grow while activations are freed: they never peak together"
    return "logits and loss, recomputation, backward, optimizer-step and communication buffers"


def verdict(result: Estimate) -> str:
    target = result.target
    memory = result.memory
    if target.device_memory is None:
        return "verdict: no device memory to compare with; pass --device-memory (e.g. 24GB or 80GiB)"
    if result.fits:
        return f"verdict: fits {device(result)}, {memory.total / target.device_memory:.0%} of it"
    return f"verdict: does not fit {device(result)}: {shortfall(result)}"


def device(result: Estimate) -> str:
    target = result.target
    return size(target.device_memory) + (f" ({target.device_name})" if target.device_name else "")


def shortfall(result: Estimate) -> str:
    over = f"over by {size(result.memory.total - result.target.device_memory)}"
    if result.suggestion:
        return f"{over}; the cheapest change that fits: {result.suggestion} ({size(result.suggested_total)})"
    return f"{over}; no change tried here makes it fit (see docs/estimate.md)"


def time_line(result: Estimate) -> str:
    step = result.step
    flops = f"{step.flops / 1e12:,.1f} TFLOP per step ({step.tokens:,} tokens)"
    if step.seconds is None:
        return f"time (rough): {flops}; pass --device-tflops for a step time"
    device = result.target.device_name or "the device"
    return (
        f"time (rough): {flops}; at {step.mfu:.0%} of {device}'s {step.tflops:,.0f} TFLOPs: "
        f"{step.seconds:,.2f} s per step, {step.tokens / step.seconds:,.0f} tokens/s per device"
    )


def startup_line(result: Estimate) -> str:
    memory = result.memory
    parts = f"weights {size(memory.weights)}, activations {size(memory.activations)}"
    of = f" of {device(result)}" if result.target.device_memory else ""
    return f"estimated peak {size(memory.total)}/device{of} ({parts}; details: xllm train --estimate)"


def startup_warning(result: Estimate) -> str | None:
    if result.fits is not False:
        return None
    return f"the estimated peak {size(result.memory.total)}/device does not fit {device(result)}: {shortfall(result)}"
