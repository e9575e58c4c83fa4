"""``fuse`` as a plain Python call: merge a LoRA adapter into its 16-bit (or fp32) base and save a normal checkpoint.

Why streaming: peft's ``merge_and_unload`` needs the whole model in memory (140 GB for a 70B model in bf16). The
weights of a LoRA-merged model are ``W + scale * B @ A`` per target layer and untouched elsewhere, so xllm reads the
base one safetensors shard at a time (tensor by tensor), adds the deltas, writes, and frees: peak memory is about one
shard plus the adapter. What the streaming path does not implement (DoRA, modules_to_save, embedding LoRA, biases,
per-module ranks, ...) falls back to peft, which says so. Both paths give the same weights (the delta is computed
exactly as peft computes it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.checkpoint import (
    TRAINING_SETTINGS_FILE,
    ShardWriter,
    base_weight_files,
    copy_model_files,
    parse_shard_size,
    staged_folder,
)
from xllm_cli.console import progress
from xllm_cli.errors import ConfigError, XllmError
from xllm_cli.hub import download_adapter, push_folder
from xllm_cli.models import model_settings, open_model, resolve_model, save_tokenizer, storage_dtype
from xllm_cli.settings.config import XllmConfig, check_fuse_rules

DEFAULT_OUTPUT = "./fused_model"
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")
# adapter_config.json settings whose merge is not ``W + scale * B @ A``: peft merges those.
_PEFT_ONLY_SETTINGS = {
    "use_dora": "DoRA",
    "lora_bias": "LoRA bias terms",
    "rank_pattern": "per-module ranks (rank_pattern)",
    "alpha_pattern": "per-module alphas (alpha_pattern)",
    "modules_to_save": "modules_to_save (fully trained modules)",
    "layer_replication": "layer replication",
    "use_qalora": "QA-LoRA",
    "alora_invocation_tokens": "activated LoRA",
    "trainable_token_indices": "trainable token indices",
    "target_parameters": "LoRA on parameters (target_parameters)",
    "megatron_config": "Megatron layers",
}


@dataclass
class LoraAdapter:
    """A LoRA adapter as the streaming merge needs it: per base weight name, its A and B (fp32, as peft uses them)."""

    folder: Path
    settings: dict[str, Any]
    pairs: dict[str, tuple[Any, Any]]
    other_keys: list[str]

    @property
    def scaling(self) -> float:
        """peft's scale: alpha / r, or rsLoRA's alpha / sqrt(r)."""
        rank, alpha = self.settings["r"], self.settings.get("lora_alpha", self.settings["r"])
        return alpha / rank**0.5 if self.settings.get("use_rslora") else alpha / rank

    def delta(self, weight_name: str):
        """``scale * B @ A`` exactly as peft's ``get_delta_weight`` computes it (fp32)."""
        lora_a, lora_b = self.pairs[weight_name]
        delta = lora_b @ lora_a
        if self.settings.get("fan_in_fan_out"):
            delta = delta.T
        return delta * self.scaling


def load_adapter(folder: Path) -> LoraAdapter:
    import torch

    settings_file = folder / "adapter_config.json"
    if not settings_file.is_file():
        raise ConfigError(
            f"{folder} is not a LoRA adapter: it has no adapter_config.json",
            hint="check --lora-model-local-path / --lora-hub-model-id",
        )
    settings = json.loads(settings_file.read_text())
    if (folder / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        tensors = load_file(folder / "adapter_model.safetensors")
    elif (folder / "adapter_model.bin").is_file():
        tensors = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise XllmError(f"{folder}: no adapter_model.safetensors or adapter_model.bin")
    halves: dict[str, dict[str, Any]] = {}
    other_keys = []
    for key, tensor in tensors.items():
        match = _LORA_KEY.match(key)
        if match is None:
            other_keys.append(key)
            continue
        # peft computes in fp32 whatever the adapter was saved in (autocast_adapter_dtype), so does xllm.
        halves.setdefault(match["module"] + ".weight", {})[match["side"]] = tensor.to(torch.float32)
    pairs = {name: (half["A"], half["B"]) for name, half in halves.items() if len(half) == 2}
    other_keys += [name for name, half in halves.items() if len(half) != 2]
    return LoraAdapter(folder, settings, pairs, other_keys)


def streaming_blocker(adapter: LoraAdapter, base_tensors: dict[str, str] | None) -> str | None:
    """Why the streaming path cannot merge this adapter into this base (None: it can)."""
    settings = adapter.settings
    if settings.get("peft_type", "LORA") != "LORA":
        return f"the adapter is {settings.get('peft_type')}, not LoRA"
    for key, what in _PEFT_ONLY_SETTINGS.items():
        if settings.get(key):
            return f"the adapter uses {what}"
    if adapter.other_keys:
        return f"the adapter has weights besides LoRA A/B, e.g. '{adapter.other_keys[0]}' (embedding LoRA?)"
    if base_tensors is None:
        return "the base checkpoint is not in safetensors format"
    missing = [name for name in adapter.pairs if name not in base_tensors]
    if missing:
        return f"the base checkpoint has no tensor '{missing[0]}' (tied or renamed weights)"
    return None


def check_shapes(adapter: LoraAdapter, base_dir: Path, base_tensors: dict[str, str]) -> None:
    """Fail before writing anything when the adapter was trained on another base."""
    from safetensors import safe_open

    by_file: dict[str, list[str]] = {}
    for name in adapter.pairs:
        by_file.setdefault(base_tensors[name], []).append(name)
    for file, names in by_file.items():
        with safe_open(base_dir / file, "pt") as shard:
            for name in names:
                lora_a, lora_b = adapter.pairs[name]
                shape = list(shard.get_slice(name).get_shape())
                expected = [lora_b.shape[0], lora_a.shape[1]]
                if adapter.settings.get("fan_in_fan_out"):
                    expected.reverse()
                if shape != expected:
                    raise ConfigError(
                        f"the adapter does not fit the base: '{name}' is {shape} in the base, the adapter "
                        f"expects {expected}",
                        hint="--model-name-or-path must be the model the adapter was trained on",
                    )


def stream_merge(adapter: LoraAdapter, base_dir: Path, files: list[str], output: Path, dtype, writer_args) -> None:
    """Read the base shard by shard, add the deltas, write shards of ``max_shard_size``; one shard in memory."""
    from safetensors import safe_open

    writer = ShardWriter(output, *writer_args)
    merged = 0
    with progress("fuse (streaming)", total=len(files), unit="shards") as advance:
        for file in files:
            with safe_open(base_dir / file, "pt") as shard:
                for name in shard.keys():  # noqa: SIM118 - safe_open has keys(), no iteration
                    tensor = shard.get_tensor(name)
                    if tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    if name in adapter.pairs:
                        tensor += adapter.delta(name)  # in place, like peft: one rounding to dtype
                        merged += 1
                    writer.add(name, tensor)
            advance()
    writer.finish()
    console.info(f"merged LoRA into {merged} weight matrices")


def peft_merge(config: XllmConfig, adapter_dir: Path, base_dir: Path, output: Path, dtype, writer_args) -> None:
    """The whole model in memory: load base + adapter with peft, ``merge_and_unload``, save."""
    from peft import PeftModel

    console.step("loading the base model and the adapter with peft")
    model = open_model(base_dir, config, dtype)
    tokenizer_size = _adapter_tokenizer_size(adapter_dir)
    if tokenizer_size and tokenizer_size > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(tokenizer_size)  # training added tokens; the adapter's embeddings match
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    console.step("saving the merged model")
    if config.save_safetensors:
        model.save_pretrained(output, max_shard_size=config.max_shard_size)
        return
    model.config.save_pretrained(output)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(output)
    writer = ShardWriter(output, *writer_args)
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # tied weights are stored once
            continue
        seen.add(tensor.data_ptr())
        writer.add(name, tensor)
    writer.finish()


def _adapter_tokenizer_size(adapter_dir: Path) -> int | None:
    if not (adapter_dir / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(adapter_dir))


def quantized_training(adapter_dir: Path) -> str | None:
    """'4-bit' or '8-bit' when the settings xllm saved with the adapter (``xllm_config.json``) loaded the base
    quantized (QLoRA); None for an adapter trained on a 16-bit base or by another tool."""
    saved = adapter_dir / TRAINING_SETTINGS_FILE
    try:
        settings = json.loads(saved.read_text()) if saved.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(settings, dict):
        return None
    return (
        "4-bit" if settings.get("load_in_4bit") is True else "8-bit" if settings.get("load_in_8bit") is True else None
    )


def explain_qlora(bits: str, dtype_name: str) -> None:
    console.warn(
        f"the adapter was trained on a {bits} base (QLoRA); it is merged into the {dtype_name} base, never into a "
        f"quantized one (rounding the merged weights back to {bits} would destroy the small LoRA update). "
        f"Training saw quantize(W) + BA, the fused model computes W + BA: the difference is the {bits} "
        "quantization error of W, so outputs differ slightly from the adapter on the quantized base. This is "
        "expected; evaluate the fused model (or quantize it with `xllm quantize`) rather than expecting identical "
        "logits."
    )


def resolve_adapter(config: XllmConfig) -> Path:
    if config.lora_model_local_path:
        folder = Path(config.lora_model_local_path).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"--lora-model-local-path: no such folder: {folder}")
        return folder

    return download_adapter(config.lora_hub_model_id, config.secret("huggingface_hub_token"))


def resolve_base(config: XllmConfig) -> Path:
    """The base model's folder; a quantized base is refused (the merge needs its full-precision weights)."""
    folder = resolve_model(config)
    name = config.model_name_or_path
    quantization = model_settings(folder, name).get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "quantized")
        raise ConfigError(
            f"--model-name-or-path {name} is a {method} model; fuse merges into the 16-bit base, never a quantized one",
            hint="point --model-name-or-path at the original full-precision model the adapter was trained on",
        )
    return folder


def fuse(config: XllmConfig) -> Path:
    """Merge the adapter into ``model_name_or_path``; write ``fused_model_local_path``; push when asked."""
    check_fuse_rules(config)
    dtype = storage_dtype(config)
    dtype_name = str(dtype).removeprefix("torch.")
    writer_args = (parse_shard_size(config.max_shard_size), config.save_safetensors)
    adapter_dir = resolve_adapter(config)
    base_dir = resolve_base(config)
    adapter = load_adapter(adapter_dir)
    if bits := quantized_training(adapter_dir):
        explain_qlora(bits, dtype_name)
    files, base_tensors = base_weight_files(base_dir)
    reason = streaming_blocker(adapter, base_tensors)
    output = Path(config.fused_model_local_path or DEFAULT_OUTPUT).expanduser()
    if not config.fused_model_local_path:
        console.info(f"--fused-model-local-path unset: writing to {output}")
    console.info(f"fusing {adapter_dir} into {base_dir} ({dtype_name})")
    with staged_folder(output) as staging:
        if reason is None:
            console.info(f"streaming merge: W + {adapter.scaling:g} * B @ A for {len(adapter.pairs)} weights")
            check_shapes(adapter, base_dir, base_tensors)
            del base_tensors
            stream_merge(adapter, base_dir, files, staging, dtype, writer_args)
            copy_model_files(base_dir, staging, dtype)
        else:
            console.warn(f"{reason}: merging with peft instead, which holds the whole model in memory")
            del adapter
            peft_merge(config, adapter_dir, base_dir, staging, dtype, writer_args)
        tokenizer_source = config.tokenizer_name_or_path or (
            adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
        )
        save_tokenizer(config, tokenizer_source, staging, add_bos_token=config.push_to_hub_bos_add_bos_token)
    console.info(f"fused model: {output}")
    if config.push_to_hub_bos_add_bos_token and not config.push_to_hub:
        console.info("--push-to-hub-bos-add-bos-token: the tokenizer config says add_bos_token true")
    if config.push_to_hub:
        push_folder(
            output,
            config.hub_model_id,
            private=config.hub_private_repo,
            token=config.secret("huggingface_hub_token"),
            commit_message="xllm fuse: LoRA merged into its base",
        )
    return output
