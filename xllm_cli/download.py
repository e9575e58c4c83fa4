"""``download`` as a plain Python call: prepare the dataset, then fetch the model, once, before training.

With 8 processes under DeepSpeed nobody wants 8 downloads: run this once, on one process, and ``train`` on any number
of ranks reads only local files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xllm_cli import console
from xllm_cli.cleanup import sigterm_unwinds
from xllm_cli.data.prepare import PreparedData, prepare_dataset
from xllm_cli.models import check_local_paths, download_model
from xllm_cli.settings.config import XllmConfig


@dataclass
class DownloadResult:
    """What ``download`` produced: the prepared data (None when ``prepare_dataset`` is off) and the model snapshot
    in the Hugging Face cache (None for a local model folder)."""

    data: PreparedData | None = None
    model_path: Path | None = None


def download(config: XllmConfig) -> DownloadResult:
    check_local_paths(config)  # before preparing data: a mistyped local path fails at once
    result = DownloadResult()
    if config.prepare_dataset:
        with sigterm_unwinds():  # SIGTERM, like Ctrl-C, removes the half-written files (prepare_dataset's finally)
            result.data = prepare_dataset(config)
    else:
        console.info("--no-prepare-dataset: the dataset is left as it is")
    result.model_path = download_model(config)
    return result
