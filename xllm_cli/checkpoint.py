"""Writing model checkpoints the way ``save_pretrained`` does, without holding the model: shards, index, config,
tokenizer, and an output folder that only replaces the old one when complete. Used by fuse and quantize."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xllm_cli.cleanup import sigterm_unwinds
from xllm_cli.errors import ConfigError, XllmError
from xllm_cli.sizes import parse_size

# The resolved settings `xllm train` writes beside the model it trained (secrets masked); fuse reads them back.
TRAINING_SETTINGS_FILE = "xllm_config.json"

SAFETENSORS_INDEX = "model.safetensors.index.json"


def parse_shard_size(text: str) -> int:
    """'10GB', '500MB', '100KB', '2GiB' or a byte count -> bytes; a bad value names --max-shard-size."""
    try:
        return parse_size(text, unit_required=False)
    except ValueError:
        raise ConfigError(f"--max-shard-size must be a size like 10GB, 500MB or 100KB, got {text!r}") from None


def base_weight_files(folder: Path) -> tuple[list[str], dict[str, str] | None]:
    """(weight files in order, {tensor name: file}) of a checkpoint folder; the map is None without safetensors."""
    from safetensors import safe_open

    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = list(dict.fromkeys(weight_map.values()))
        missing = [name for name in files if not (folder / name).is_file()]
        if missing:
            raise XllmError(f"{index} names shards that are missing: {', '.join(missing[:3])}")
        return files, dict(weight_map)
    if (folder / "model.safetensors").is_file():
        with safe_open(folder / "model.safetensors", "pt") as shard:
            return ["model.safetensors"], dict.fromkeys(shard.keys(), "model.safetensors")  # noqa: SIM118
    binaries = sorted(p.name for p in folder.glob("pytorch_model*.bin"))
    if not binaries:
        raise ConfigError(f"{folder}: no model weights (model.safetensors or pytorch_model.bin)")
    return binaries, None


class ShardWriter:
    """Collect tensors into shards of at most ``max_bytes`` and write each as soon as it is full.

    Names follow transformers (``model-00001-of-00003.safetensors`` + ``model.safetensors.index.json``, or
    ``pytorch_model-...bin`` + ``pytorch_model.bin.index.json``; a single ``model.safetensors`` when one shard fits),
    so ``from_pretrained`` loads the folder as it loads its own output.
    """

    def __init__(self, folder: Path, max_bytes: int, safetensors: bool = True):
        self.folder, self.max_bytes, self.safetensors = Path(folder), max_bytes, safetensors
        self.pending: dict[str, Any] = {}
        self.pending_bytes = 0
        self.written: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: Any) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self._flush()
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        path = self.folder / f"shard-{len(self.written):05d}.partial"
        if self.safetensors:
            from safetensors.torch import save_file

            save_file(self.pending, str(path), metadata={"format": "pt"})
        else:
            import torch

            torch.save(self.pending, path)
        self.written.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0  # the shard is on disk: drop it from memory

    def finish(self) -> list[str]:
        """Write the last shard, give the shards their final names and write the index; returns the file names."""
        if self.pending or not self.written:
            self._flush()
        prefix, suffix = ("model", "safetensors") if self.safetensors else ("pytorch_model", "bin")
        count = len(self.written)
        names = (
            [f"{prefix}.{suffix}"]
            if count == 1
            else [f"{prefix}-{i:05d}-of-{count:05d}.{suffix}" for i in range(1, count + 1)]
        )
        weight_map = {}
        for (path, tensors), name in zip(self.written, names, strict=True):
            path.rename(self.folder / name)
            weight_map.update(dict.fromkeys(tensors, name))
        if count > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.folder / f"{prefix}.{suffix}.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return names


def copy_model_files(base_dir: Path, output: Path, dtype) -> None:
    """config.json (with the dtype written), generation config and any remote code, as the base has them."""
    model_config = json.loads((base_dir / "config.json").read_text())
    model_config.pop("torch_dtype", None)
    model_config["dtype"] = str(dtype).removeprefix("torch.")
    (output / "config.json").write_text(json.dumps(model_config, indent=2, sort_keys=True) + "\n")
    for file in base_dir.iterdir():
        if file.name == "generation_config.json" or file.suffix == ".py":
            shutil.copy2(file, output / file.name)


@contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``output``; only when the block succeeds does it replace ``output``. On any
    failure (SIGTERM included) the temporary folder is removed."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output} exists and is not a folder")
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with sigterm_unwinds():
            yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = output.parent / f".{output.name}.previous-{os.getpid()}"
    if output.exists():
        output.rename(previous)
    staging.rename(output)
    shutil.rmtree(previous, ignore_errors=True)
