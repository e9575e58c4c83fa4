"""Before a run loads anything: its memory estimate (``xllm train --estimate``), and the start-up line of a real run
that says how much memory it will take and warns when that is more than the device has."""

from __future__ import annotations

import logging
from typing import Any

from xllm_cli import console
from xllm_cli.errors import XllmError
from xllm_cli.estimate import detect_target, estimate, load_model_config
from xllm_cli.estimate.meta import SimulationError
from xllm_cli.estimate.report import render, startup_line, startup_warning
from xllm_cli.models import check_local_paths
from xllm_cli.settings.config import XllmConfig, check_training_rules
from xllm_cli.training.architecture import attention_implementation, model_class
from xllm_cli.training.gpu import check_gpu_options


def check_training_settings(config: XllmConfig) -> None:
    """What a training run refuses before any work: the rules between its settings, a local model path that is not a
    folder, an attention implementation the model lacks."""
    check_training_rules(config)
    check_local_paths(config)
    check_gpu_options(config)
    attention_implementation(config, model_class(config))


def run_estimate(config: XllmConfig, assume_gpu: bool, suggest: bool = True) -> Any:
    """The estimate for ``config`` on the devices of the settings (or this machine's)."""
    check_training_settings(config)
    target = detect_target(config.device_memory, config.num_devices, config.device_tflops, assume_gpu=assume_gpu)
    try:
        return estimate(config, load_model_config(config), target, suggest=suggest)
    except SimulationError as error:
        raise XllmError(
            f"cannot simulate a training step of {config.model_name_or_path} on the meta device: {error}",
            hint="its forward pass depends on the data's values (e.g. mixture-of-experts routing); see docs/estimate.md",
        ) from None


def print_estimate(config: XllmConfig) -> None:
    print(render(run_estimate(config, assume_gpu=True)))


def announce_estimate(config: XllmConfig) -> None:
    """One line with the estimated peak, and a warning before loading when it exceeds the device. Never fails the
    run: an estimate that cannot be made is a debug message."""
    if not console.is_main_process():
        return
    try:
        result = run_estimate(config, assume_gpu=False)
    except Exception as error:  # noqa: BLE001 - the estimate is advice; the run goes on without it
        logging.getLogger(__name__).debug("no memory estimate: %s", error)
        return
    console.info(startup_line(result))
    warning = startup_warning(result)
    if warning:
        console.warn(f"{warning}; loading anyway")
