"""``train(config)``: everything ``xllm train`` does, as one Python call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xllm_cli import registry
from xllm_cli.settings.config import XllmConfig


def train(
    config: XllmConfig,
    train_dataset: Sequence[dict[str, Any]] | None = None,
    eval_dataset: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """Fine-tune as configured and return the folder of the final model (the adapter, with LoRA).

    ``train_dataset`` / ``eval_dataset`` replace the prepared files: sequences of training samples
    (``{"text_parts": [...]}`` or ``{"messages": [...]}``) or of raw samples, which the configured dataset class turns
    into training samples with ``get_sample``.
    """
    experiment_cls = registry.load("experiments", config.experiment_key)
    experiment = experiment_cls(config, train_dataset=train_dataset, eval_dataset=eval_dataset)
    experiment.build()
    return experiment.run()
