"""xllm's training fields -> transformers ``TrainingArguments``, and the one place a training run changes the
process environment (``set_up_environment``: CPU threads, the Hub token, W&B's variables, a warning filter)."""

from __future__ import annotations

import os
from typing import Any

from xllm_cli import console
from xllm_cli.models import compute_dtype, has_cuda
from xllm_cli.settings.config import XllmConfig
from xllm_cli.training.distributed import distributed_arguments
from xllm_cli.training.gpu import training_arguments as gpu_arguments
from xllm_cli.training.resume import deepspeed_resume_settings
from xllm_cli.training.threads import apply_threads, choose_threads


def training_arguments(config: XllmConfig) -> Any:
    import torch
    from transformers import TrainingArguments

    if not config.save_safetensors:
        console.warn("transformers 5 always saves safetensors; --no-save-safetensors has no effect")
    dtype = compute_dtype(config)
    kwargs: dict[str, Any] = {
        "output_dir": config.output_dir,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size or config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "eval_accumulation_steps": config.eval_accumulation_steps,
        "eval_strategy": "steps" if config.do_eval else "no",
        "eval_delay": config.eval_delay,
        "eval_steps": config.eval_steps,
        "warmup_steps": config.warmup_steps,
        "max_steps": config.max_steps if config.max_steps is not None else -1,
        "num_train_epochs": config.num_train_epochs,
        "learning_rate": config.learning_rate,
        "max_grad_norm": config.max_grad_norm,
        "weight_decay": config.weight_decay,
        "label_smoothing_factor": config.label_smoothing_factor,
        "logging_strategy": "steps",
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "optim": config.optim,
        "seed": config.seed,
        "push_to_hub": config.push_to_hub,
        "hub_model_id": config.hub_model_id,
        "hub_private_repo": config.hub_private_repo,
        "hub_strategy": "every_save",
        "report_to": ["wandb"] if config.report_to_wandb else "none",
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "use_cpu": not has_cuda(),
        # Our collators take training samples and encodings, not model-signature columns.
        "remove_unused_columns": False,
        # Feeds tokens/s: counted from the attention mask, so padding never counts.
        "include_num_input_tokens_seen": "non_padding",
        # Our own progress display replaces tqdm.
        "disable_tqdm": True,
        # LoRA with gradient checkpointing leaves frozen parameters without gradients; DDP must not wait for them.
        "ddp_find_unused_parameters": False if config.apply_lora else None,
        # How long a process waits in a collective before failing (the same limit xllm puts on joining the run).
        "ddp_timeout": config.ddp_timeout,
    }
    kwargs.update(gpu_arguments(config))
    kwargs.update(distributed_arguments(config, resume=deepspeed_resume_settings(config)))
    return TrainingArguments(**kwargs)


def set_up_environment(config: XllmConfig) -> None:
    """What a training run needs in the process environment, set in one visible place before the run is built."""

    cuda = has_cuda()
    threads = choose_threads(config.cpu_threads, cuda)
    apply_threads(threads)  # before the model loads: loading runs on these threads already
    if threads.threads is not None or not cuda:
        console.info(threads.line)
    configure_hub_token(config)
    if config.report_to_wandb:
        configure_wandb(config)
    if config.optim.startswith("paged_") and not cuda:
        explain_unpaged_optimizer(config.optim)


def explain_unpaged_optimizer(optim: str) -> None:
    """bitsandbytes says this with a raw UserWarning and a source line at the first step; say it once, plainly."""
    import warnings

    warnings.filterwarnings("ignore", message="Paged optimizers are not supported on CPU", category=UserWarning)
    console.info(f"--optim {optim}: paged memory needs CUDA; without it the same optimizer runs unpaged")


def configure_hub_token(config: XllmConfig) -> None:
    """Hand the hub token to huggingface_hub through the environment, not ``hub_token``: the Trainer pickles its
    arguments into every checkpoint (training_args.bin), which would store the secret in plain text."""
    token = config.secret("huggingface_hub_token")
    if token:
        os.environ["HF_TOKEN"] = token


def configure_wandb(config: XllmConfig) -> None:
    """W&B reads its settings from the environment; the key goes there too, never into a log or file of ours."""
    values = {
        "WANDB_PROJECT": config.wandb_project,
        "WANDB_ENTITY": config.wandb_entity,
        "WANDB_API_KEY": config.secret("wandb_api_key"),
    }
    os.environ.update({name: value for name, value in values.items() if value})
    # Runs sit next to the model they trained unless the user says otherwise, in a folder whose leading "_" keeps it
    # out of every push (the Trainer uploads output_dir ignoring "_*" and "checkpoint-*").
    wandb_dir = os.environ.setdefault("WANDB_DIR", os.path.join(config.output_dir, "_wandb"))
    os.makedirs(wandb_dir, exist_ok=True)
