"""``Experiment`` (experiment key ``base``): builds a training run in a fixed order of steps, then runs it.

Each step has a ``build_<step>`` method and optional ``before_<step>`` / ``after_<step>`` hooks, so a plugin
subclass can change one step without copying the others::

    class MyExperiment(Experiment):
        def after_model(self) -> None:
            self.model.config.rope_scaling = {"type": "linear", "factor": 2.0}

Steps, in order: ``training_arguments``, ``datasets``, ``tokenizer``, ``collator``, ``tokenization``,
``quantization_config``, ``model``, ``lora``, ``stabilize``, ``trainer``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xllm_cli import console, registry
from xllm_cli.data.unprepared import check_prepared, prepare_if_missing
from xllm_cli.errors import ConfigError, XllmError
from xllm_cli.models import bf16_supported, load_tokenizer
from xllm_cli.settings.config import XllmConfig
from xllm_cli.training.architecture import check_packing_isolation
from xllm_cli.training.arguments import set_up_environment, training_arguments
from xllm_cli.training.callbacks import InterruptCallback, ProgressCallback
from xllm_cli.training.distributed import init_distributed
from xllm_cli.training.lora import apply_lora, stabilize
from xllm_cli.training.model import load_model, prepare_for_training, quantization_config
from xllm_cli.training.outputs import finish_run
from xllm_cli.training.preflight import announce_estimate, check_training_settings
from xllm_cli.training.resume import checkpoint_to_resume, prepare_resume
from xllm_cli.training.tokenize import PackedSamples, SampleSource, encode_source
from xllm_cli.training.trainer import describe_packing_kernel

STEPS = (
    "training_arguments",
    "datasets",
    "tokenizer",
    "collator",
    "tokenization",
    "quantization_config",
    "model",
    "lora",
    "stabilize",
    "trainer",
)


class TrainingInterrupted(XllmError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; exits 128 + the signal number, as a shell
    reports a command killed by it (130 for Ctrl-C, 143 for SIGTERM). Every process stops at the same step."""

    shared_by = "run"

    def __init__(self, message: str, signal_number: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.exit_code = 128 + signal_number


class Experiment:
    """A training run: its settings, data, tokenizer, collator, model and trainer, built step by step."""

    def __init__(self, config: XllmConfig, train_dataset: Any = None, eval_dataset: Any = None):
        self.config = config
        self.user_train_dataset = train_dataset
        self.user_eval_dataset = eval_dataset
        self.training_arguments: Any = None
        self.dataset: Any = None  # the dataset class instance that turns raw samples into training samples
        self.train_source: SampleSource | None = None
        self.eval_source: SampleSource | None = None
        self.tokenizer: Any = None
        self.collator: Any = None
        self.train_dataset: Any = None
        self.eval_dataset: Any = None
        self.quantization_config: XllmConfig = None
        self.model: Any = None
        self.trainer: Any = None
        # Extra transformers TrainerCallbacks; a before_trainer hook may append its own.
        self.callbacks: list[Any] = []
        self.progress: Any = None
        self.interrupt: Any = None

    # --- the fixed order ---------------------------------------------------------------------------------------------
    def build(self) -> Experiment:
        for step in STEPS:
            self._hook("before", step)
            getattr(self, f"build_{step}")()
            self._hook("after", step)
        return self

    def _hook(self, when: str, step: str) -> None:
        hook = getattr(self, f"{when}_{step}", None)
        if hook is not None:
            hook()

    # --- steps ---------------------------------------------------------------------------------------------------------
    def build_training_arguments(self) -> None:
        check_training_settings(self.config)
        # Before the TrainingArguments exist: with ZeRO-3 they make transformers build every model inside DeepSpeed's
        # zero.Init, whose collectives the estimate's meta copy (made on one process) must not start.
        announce_estimate(self.config)
        set_up_environment(self.config)
        # Communication first: ZeRO-3 shards the weights while they load, which needs the process group.
        init_distributed(self.config)
        # Every process agrees on the checkpoint to resume, and one written by another number of processes is
        # converted, before the DeepSpeed config that loads it is made.
        prepare_resume(self.config)
        self.training_arguments = training_arguments(self.config)

    def build_datasets(self) -> None:
        config = self.config
        self.dataset = registry.load("datasets", config.dataset_key)(config)
        if self.user_train_dataset is not None:
            self.train_source = SampleSource("train", samples=self.user_train_dataset)
        else:
            prepare_if_missing(config)
            path = Path(config.train_local_path_to_data)
            check_prepared(path, self.dataset, config)
            self.train_source = SampleSource("train", path=path)
        if self.user_eval_dataset is not None:
            self.eval_source = SampleSource("eval", samples=self.user_eval_dataset)
        elif config.eval_local_path_to_data and Path(config.eval_local_path_to_data).is_file():
            self.eval_source = SampleSource("eval", path=Path(config.eval_local_path_to_data))
        if config.do_eval and self.eval_source is None:
            where = config.eval_local_path_to_data
            raise ConfigError(
                "--do-eval needs eval data, and there is none"
                + (f": {where} does not exist" if where else " (--eval-local-path-to-data is unset)"),
                hint="run 'xllm download' with --eval-local-path-to-data, or drop --do-eval",
            )

    def build_tokenizer(self) -> None:

        self.tokenizer = load_tokenizer(self.config)

    def build_collator(self) -> None:
        self.collator = registry.load("collators", self.config.collator_key)(self.tokenizer, self.config)

    def build_tokenization(self) -> None:
        """Encode the data once (cached next to the prepared file); plugin collators without ``encode_batch`` get
        training samples and tokenize per batch."""

        if not callable(getattr(self.collator, "encode_batch", None)):
            if self.config.packing:
                raise ConfigError(
                    f"--packing needs a collator with encode_batch; '{self.config.collator_key}' has none"
                )
            self.train_dataset = list(self.train_source.training_samples(self.dataset))
            if self.eval_source is not None:
                self.eval_dataset = list(self.eval_source.training_samples(self.dataset))
            return
        self.train_dataset = encode_source(self.train_source, self.dataset, self.collator, self.config)
        if self.eval_source is not None:
            self.eval_dataset = encode_source(self.eval_source, self.dataset, self.collator, self.config)
        if self.config.packing:
            self.train_dataset = PackedSamples(self.train_dataset, self.config.max_length)
            if self.eval_dataset is not None:
                self.eval_dataset = PackedSamples(self.eval_dataset, self.config.max_length)

    def build_quantization_config(self) -> None:

        self.quantization_config = quantization_config(self.config)

    def build_model(self) -> None:
        from transformers import set_seed

        # The Trainer seeds only when it is built; new weights (LoRA matrices, resized embeddings) come before that.
        set_seed(self.config.seed)
        quantized = self.quantization_config is not None or self.config.from_gptq
        self.model = load_model(self.config, self.quantization_config, self.tokenizer)
        if self.config.packing:
            check_packing_isolation(self.model)
            console.info(describe_packing_kernel(self.model))
        self.model = prepare_for_training(self.model, self.config, quantized)

    def build_lora(self) -> None:
        if self.config.apply_lora:
            self.model = apply_lora(self.model, self.config, gptq_base=self.config.from_gptq)

    def build_stabilize(self) -> None:
        if self.config.stabilize:
            half = None
            if bf16_supported():
                import torch

                half = torch.bfloat16
            else:
                console.info("--stabilize: no bfloat16 on this device, so only the norms are cast (to float32)")
            self.model = stabilize(self.model, half)

    def build_trainer(self) -> None:
        from transformers.trainer_callback import PrinterCallback
        from transformers.trainer_callback import ProgressCallback as TqdmProgress

        trainer_cls = registry.load("trainers", self.config.trainer_key)
        self.interrupt = InterruptCallback()
        self.progress = ProgressCallback()
        self.trainer = trainer_cls(
            model=self.model,
            args=self.training_arguments,
            train_dataset=self.train_dataset,
            eval_dataset=self.eval_dataset if self.config.do_eval else None,
            data_collator=self.collator,
            processing_class=self.tokenizer,
            callbacks=[self.progress, self.interrupt, *self.callbacks],
        )
        # Our progress replaces the tqdm bar and the dict printer.
        for callback in (PrinterCallback, TqdmProgress):
            self.trainer.remove_callback(callback)

    # --- running ---------------------------------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train (resuming when asked), save the final model, config and loss curve, push and fuse as configured.
        Returns the folder of the final model."""

        resume = resume_checkpoint(self.config)
        self.interrupt.install()
        try:
            result = self.trainer.train(resume_from_checkpoint=resume)
        finally:
            self.interrupt.restore()
        if self.interrupt.received is not None:
            checkpoint = last_checkpoint(Path(self.config.output_dir))
            raise TrainingInterrupted(
                f"training stopped by {self.interrupt.signal_name} at step {self.trainer.state.global_step}; "
                f"checkpoint saved: {checkpoint}",
                signal_number=self.interrupt.received,
                hint="continue with the same command plus --resume-from-checkpoint last",
            )
        return finish_run(
            self.config, self.trainer, self.tokenizer, result, self.progress.tokens_per_second(self.trainer.state)
        )


def last_checkpoint(output_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not output_dir.is_dir():
        return None
    found = get_last_checkpoint(str(output_dir))
    return Path(found) if found else None


def resume_checkpoint(config: XllmConfig) -> str | None:
    """The checkpoint folder to resume from: a path, or ``last`` (the newest complete one in ``output_dir``)."""
    found = checkpoint_to_resume(config)
    if found is not None and config.resume_from_checkpoint == "last":
        console.info(f"resuming from {found}")
    return None if found is None else os.fspath(found)
