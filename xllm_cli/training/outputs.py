"""After training: the final model, the resolved config, the log and loss curve, the push, the fuse and the summary.

Only the main process writes (the final save of a sharded model needs every process, so that one call is shared).
Files are written under a temporary name in the same folder and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.checkpoint import TRAINING_SETTINGS_FILE
from xllm_cli.console import is_main_process
from xllm_cli.fuse import fuse
from xllm_cli.settings.config import XllmConfig
from xllm_cli.training.loss_curve import loss_points, render_svg

LOG_FILE = "training_log.json"
LOSS_CURVE_FILE = "loss_curve.svg"


def finish_run(config: XllmConfig, trainer: Any, tokenizer: Any, result: Any, tokens_per_second: float) -> Path:
    """Everything after the last step, for the run ``trainer`` finished with ``result``; returns the model folder."""
    output_dir = Path(config.output_dir)
    save_final_model(config, trainer, tokenizer, output_dir)
    if is_main_process():
        write_atomically(output_dir / TRAINING_SETTINGS_FILE, json.dumps(masked_config(config), indent=2))
        write_atomically(output_dir / LOG_FILE, json.dumps(trainer.state.log_history, indent=2))
        plot_loss_curve(trainer.state.log_history, output_dir / LOSS_CURVE_FILE)
    if config.push_to_hub:
        console.info(f"pushing the final model to {config.hub_model_id}")
        trainer.push_to_hub(commit_message="xllm: final model", blocking=True)
    if config.report_to_wandb:
        import wandb

        wandb.finish()
        # A later run in the same process (the Python API) must read WANDB_DIR and the key afresh.
        wandb.teardown()
    print_summary(config, trainer.state, result, tokens_per_second, output_dir)
    if config.fuse_after_training and is_main_process():
        fuse_trained_adapter(config, output_dir)
    return output_dir


def save_final_model(config: XllmConfig, trainer: Any, tokenizer: Any, output_dir: Path) -> None:
    """The trained model (only the adapter with LoRA) and its tokenizer, straight into ``output_dir``."""
    # One name for every process (a sharded save is collective); leftovers of a crashed save are cleared first.
    staging = output_dir / ".xllm-final-staging"
    if is_main_process():
        shutil.rmtree(staging, ignore_errors=True)
    if config.uses_deepspeed or config.fsdp_strategy.strip():
        # Gathers sharded weights: every process takes part. Checkpoints on node-local disks are written on every
        # node (save_on_each_node); the final model only once, by the main process.
        on_each_node, trainer.args.save_on_each_node = trainer.args.save_on_each_node, False
        try:
            trainer.save_model(str(staging))
        finally:
            trainer.args.save_on_each_node = on_each_node
    elif is_main_process():
        model = trainer.accelerator.unwrap_model(trainer.model)
        kwargs = {} if hasattr(model, "peft_config") else {"max_shard_size": config.max_shard_size}
        model.save_pretrained(str(staging), **kwargs)
        tokenizer.save_pretrained(str(staging))
    if not is_main_process():
        return
    for item in staging.iterdir():
        target = output_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()


def masked_config(config: XllmConfig) -> dict[str, Any]:
    """The resolved settings; pydantic's JSON dump writes secrets as asterisks."""
    return config.model_dump(mode="json")


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def plot_loss_curve(log_history: list[dict[str, Any]], path: Path) -> Path | None:
    """Train (and eval) loss against steps as an SVG file (``training/loss_curve.py``); None when nothing was logged."""
    series = loss_points(log_history)
    if not series:
        return None
    write_atomically(path, render_svg(series))
    return path


def print_summary(config: XllmConfig, state: Any, result: Any, tokens_per_second: float, output_dir: Path) -> None:
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    runtime = result.metrics.get("train_runtime", 0.0) if result is not None else 0.0
    what = "adapter" if config.apply_lora else "model"
    lines = [
        f"trained {state.global_step} steps in {runtime:.1f}s",
        f"{tokens_per_second:,.0f} tokens/s (non-padding)",
        f"final loss {losses[-1]:.4f}" if losses else "no loss logged",
        f"{what}: {output_dir}",
        f"loss curve: {output_dir / LOSS_CURVE_FILE}",
    ]
    console.info("done: " + "; ".join(lines))


def fuse_trained_adapter(config: XllmConfig, adapter_dir: Path) -> Path:

    # push_to_hub already sent the adapter to hub_model_id; the fused model stays local rather than replace it there
    # (push it with `xllm fuse --push-to-hub --hub-model-id <another repo>`).
    update = {"lora_model_local_path": str(adapter_dir), "lora_hub_model_id": None, "push_to_hub": False}
    return fuse(config.model_copy(update=update))
