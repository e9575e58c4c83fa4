"""Every setting of xllm, in typed sections.

A section is a small pydantic model of the fields one concern reads (``LoraSettings`` for ``apply_lora``); the one
``XllmConfig`` (``settings/config.py``) is all of them composed, so field names stay flat: ``--lora-rank``,
``XLLM_LORA_RANK`` and the config-file key ``lora_rank`` name the same field, and a library function typed
``lora: LoraSettings`` accepts the whole config. Rules between fields of one section live on that section; rules
across sections on ``XllmConfig``.

Which step reads which section is in ``index.py``; ``catalog.json``, generated from these sections, is what ``--help``
and completion read. After changing a field: ``python -m xllm_cli.settings.reference``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from xllm_cli.collators.templates import TEMPLATES
from xllm_cli.settings.names import flag
from xllm_cli.sizes import parse_size

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def setting(default: Any, help: str, **kwargs: Any) -> Any:
    return Field(default, description=help, **kwargs)


class Section(BaseModel):
    """A group of settings: ``key`` names it in config files and the reference, ``title`` in ``--help``."""

    # Validators are built on first use: --help and completion only read the fields.
    model_config = ConfigDict(defer_build=True)

    key: ClassVar[str]
    title: ClassVar[str]

    def secret(self, name: str) -> str | None:
        """The plain value of a secret field, for the one place that hands it to a library."""
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None


class RunSettings(Section):
    key: ClassVar[str] = "run"
    title: ClassVar[str] = "Run"

    seed: int = setting(42, "Random seed for data shuffling, initialisation and training.")
    path_to_env_file: str = setting("./.env", "The .env file to read settings from (missing is fine).")
    huggingface_hub_token: SecretStr | None = setting(
        None, "Hugging Face Hub token (secret). Env: XLLM_HUGGINGFACE_HUB_TOKEN, HF_TOKEN or HUGGING_FACE_HUB_TOKEN."
    )

    cache_dir: str | None = setting(
        None, "Where xllm caches tokenized data (never beside your data); unset: $XDG_CACHE_HOME/xllm or ~/.cache/xllm."
    )


class ModelSettings(Section):
    key: ClassVar[str] = "model"
    title: ClassVar[str] = "Model"

    model_name_or_path: str = setting("mistralai/Mistral-7B-v0.1", "Base model: hub id or local folder.")
    trust_remote_code: bool = setting(False, "Run the model repository's own code (only for repos you trust).")


class TokenizerSettings(Section):
    key: ClassVar[str] = "tokenizer"
    title: ClassVar[str] = "Tokenizer"

    tokenizer_name_or_path: str | None = setting(None, "Tokenizer hub id or folder; defaults to model_name_or_path.")
    tokenizer_use_fast: bool | None = setting(None, "Use the fast (Rust) tokenizer; unset means auto.")
    tokenizer_padding_side: Literal["right", "left"] | None = setting(
        None, "Pad on the right or the left; unset keeps the tokenizer's own."
    )
    chat_template: str | None = setting(
        None,
        f"Chat template for chat data, replacing the tokenizer's: a Jinja file or one xllm ships ({', '.join(TEMPLATES)}).",
    )


class PrecisionSettings(Section):
    key: ClassVar[str] = "precision"
    title: ClassVar[str] = "Precision"

    force_fp32: bool = setting(False, "Load and train the model in float32.")
    force_fp16: bool = setting(False, "Load and train the model in float16 instead of bfloat16.")

    @model_validator(mode="after")
    def _one_dtype(self) -> Any:
        if self.force_fp16 and self.force_fp32:
            raise ValueError(f"{flag('force_fp16')} and {flag('force_fp32')} cannot be used together: pick one")
        return self


class LoadingSettings(Section):
    key: ClassVar[str] = "loading"
    title: ClassVar[str] = "Loading"

    device_map: str | None = setting(None, "Device map for loading, e.g. auto; unset lets xllm decide.")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2", "flex_attention"] = setting(
        "auto",
        "Attention kernel; auto picks the fastest the model supports here: flash_attention_2 (CUDA + flash-attn), "
        "else sdpa, else eager.",
    )
    use_flash_attention_2: bool = setting(
        False, "Original spelling of --attn-implementation flash_attention_2 (kept for compatibility)."
    )

    @model_validator(mode="after")
    def _one_attention(self) -> Any:
        if self.use_flash_attention_2 and self.attn_implementation not in ("auto", "flash_attention_2"):
            raise ValueError(
                f"{flag('use_flash_attention_2')} contradicts {flag('attn_implementation')} "
                f"{self.attn_implementation}: pick one"
            )
        return self


class DataSettings(Section):
    key: ClassVar[str] = "data"
    title: ClassVar[str] = "Data"

    dataset_key: str = setting("soda", "Dataset class (registry key) that turns a source into samples.")
    dataset_source: str | None = setting(
        None,
        "Where the dataset reads from: a local file, folder or hub dataset id (soda: allenai/soda when unset); "
        "general/chat: a comma list mixes several, each with an optional weight, e.g. a.jsonl:3,b.json.",
    )
    dataset_format: Literal["auto", "text", "parts", "messages", "alpaca", "sharegpt", "prompt_completion"] = setting(
        "auto", "general/chat datasets: the records' format; auto detects it from the columns of each source."
    )
    dataset_columns: str | None = setting(
        None,
        "general/chat datasets: columns with other names, as role=column pairs, e.g. instruction=question,output=answer.",
    )
    dataset_text_field: str = setting("text", "general dataset: the column holding the text (text format).")
    dataset_parts_separator: str | None = setting(
        None, "general dataset: split each text into parts at this string (the last part is the target)."
    )
    soda_drop_header_probability: float = setting(
        0.05, "soda dataset: probability of dropping the narrative header from a training sample.", ge=0, le=1
    )
    train_local_path_to_data: str = setting("./train.jsonl", "Where the prepared train samples live.")
    eval_local_path_to_data: str | None = setting(
        None, "Where the prepared eval samples live; unset means no eval file."
    )
    shuffle: bool = setting(True, "Shuffle the train samples (deterministically, with the seed).")
    max_eval_samples: int = setting(1000, "Most eval samples kept; the overflow moves to train.", ge=0)
    add_eval_to_train_if_no_path: bool = setting(
        False, "With no eval path, add the eval samples to train instead of dropping them."
    )
    prepare_dataset: bool = setting(
        True, "Prepare the dataset in `download` (and re-prepare calibration data in `quantize`)."
    )

    @field_validator("dataset_source", mode="before")
    @classmethod
    def _sources_as_comma_list(cls, value: Any) -> Any:
        """A config file may list several sources (``dataset_source: [a.jsonl, b.json:2]``)."""
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


class CollatorSettings(Section):
    key: ClassVar[str] = "collator"
    title: ClassVar[str] = "Collator"

    collator_key: str = setting("lm", "Collator class (registry key) that builds batches.")
    max_length: int = setting(2048, "Longest sequence in tokens; longer samples are truncated.", gt=0)
    collator_parts_separator: str = setting(" ", "String placed between the text parts of a sample.")


class LoraSettings(Section):
    key: ClassVar[str] = "lora"
    title: ClassVar[str] = "LoRA"

    apply_lora: bool = setting(False, "Train a LoRA adapter instead of all weights.")
    lora_rank: int = setting(8, "LoRA rank r.", gt=0)
    lora_alpha: int = setting(32, "LoRA alpha; updates are scaled by alpha / r.", gt=0)
    lora_dropout: float = setting(0.1, "Dropout on the LoRA input.", ge=0, lt=1)
    raw_lora_target_modules: str = setting(
        "all", "'all' (every linear layer but the head) or a comma list of module names, e.g. q_proj,v_proj."
    )

    @model_validator(mode="after")
    def _target_modules_are_names(self) -> Any:
        raw = self.raw_lora_target_modules
        if raw.strip() == "all":
            return self
        names = [part.strip() for part in raw.split(",")]
        bad = [name for name in names if not _MODULE_NAME.match(name)]
        if bad:
            raise ValueError(
                f"{flag('raw_lora_target_modules')} must be 'all' or a comma list of module names "
                f"(e.g. q_proj,v_proj); bad entry {', '.join(repr(n) for n in bad)}"
            )
        return self


class QuantizationSettings(Section):
    """How the base model is quantized while training on it: bitsandbytes 4/8-bit (QLoRA) or a GPTQ checkpoint."""

    key: ClassVar[str] = "quantization"
    title: ClassVar[str] = "Quantized base (bitsandbytes, GPTQ)"

    load_in_8bit: bool = setting(False, "Load the base model in 8-bit (bitsandbytes).")
    load_in_4bit: bool = setting(False, "Load the base model in 4-bit (bitsandbytes, QLoRA).")
    llm_int8_threshold: float = setting(6.0, "Outlier threshold of LLM.int8().")
    llm_int8_has_fp16_weight: bool = setting(True, "Keep fp16 main weights with LLM.int8().")
    bnb_4bit_use_double_quant: bool = setting(True, "Quantize the 4-bit quantization constants too.")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = setting("nf4", "4-bit data type: nf4 or fp4.")
    bnb_quantize_after_model_init: bool = setting(
        False, "Load in full precision, then quantize (instead of quantizing while loading)."
    )
    prepare_model_for_kbit_training: bool = setting(
        True, "With 4/8-bit loading, run peft's prepare_model_for_kbit_training."
    )
    from_gptq: bool = setting(False, "The model is a GPTQ checkpoint; train LoRA on top of it.")

    @property
    def bitsandbytes(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit

    @model_validator(mode="after")
    def _one_quantization(self) -> Any:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError(f"{flag('load_in_4bit')} and {flag('load_in_8bit')} cannot be used together: pick one")
        if self.from_gptq and self.bitsandbytes:
            bnb = flag("load_in_4bit") if self.load_in_4bit else flag("load_in_8bit")
            raise ValueError(f"{flag('from_gptq')} cannot be combined with {bnb}: a GPTQ model is already quantized")
        return self


class TrainingSettings(Section):
    key: ClassVar[str] = "training"
    title: ClassVar[str] = "Training"

    output_dir: str = setting("./outputs/", "Where checkpoints and the final model are written.")
    per_device_train_batch_size: int = setting(2, "Train batch size per device.", gt=0)
    gradient_accumulation_steps: int = setting(1, "Batches accumulated per optimizer step.", gt=0)
    learning_rate: float = setting(2e-4, "Peak learning rate.", gt=0)
    warmup_steps: int = setting(1000, "Learning-rate warmup steps.", ge=0)
    max_steps: int | None = setting(None, "Stop after this many optimizer steps (overrides epochs).")
    num_train_epochs: int = setting(1, "Passes over the train data.", gt=0)
    optim: str = setting("paged_adamw_8bit", "Optimizer name as transformers accepts it.")
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.")
    weight_decay: float = setting(0.001, "AdamW weight decay.")
    label_smoothing_factor: float = setting(0.0, "Label smoothing of the LM loss.", ge=0, lt=1)
    use_gradient_checkpointing: bool = setting(
        False, "Recompute activations in the backward pass to save memory (slower)."
    )
    packing: bool = setting(False, "Pack several samples into each row of max_length (no attention across samples).")
    stabilize: bool = setting(
        False, "Norms in float32; LoRA matrices, embeddings and head in bfloat16 where supported."
    )
    use_liger_kernel: bool = setting(
        False,
        "CUDA only: Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, cross-entropy without materialised logits); "
        "needs pip install 'xllm-cli[gpu]'.",
    )
    torch_compile: bool = setting(
        False, "CUDA only: compile the model with torch.compile (inductor): faster steps after a compile of minutes."
    )
    do_eval: bool = setting(False, "Evaluate every eval_steps (needs eval data).")
    per_device_eval_batch_size: int | None = setting(
        None, "Eval batch size per device; defaults to the train batch size."
    )
    eval_accumulation_steps: int | None = setting(None, "Eval steps accumulated before moving to CPU.")
    eval_delay: int = setting(0, "Steps to wait before the first evaluation.", ge=0)
    eval_steps: int = setting(1000, "Evaluate every this many steps.", gt=0)
    logging_steps: int = setting(10, "Log every this many steps.", gt=0)
    save_steps: int = setting(100, "Save a checkpoint every this many steps.", gt=0)
    save_total_limit: int = setting(1, "Checkpoints kept on disk (older ones are deleted).", gt=0)
    resume_from_checkpoint: str | None = setting(
        None, "Continue from a checkpoint folder, or 'last' for the newest in output_dir."
    )
    fuse_after_training: bool = setting(False, "Merge the LoRA adapter into the base when training ends.")
    experiment_key: str = setting("base", "Experiment class (registry key) that builds the training run.")
    trainer_key: str = setting("lm", "Trainer class (registry key) that computes the loss.")


class EstimateSettings(Section):
    """The devices a run is planned for: what ``xllm train --estimate`` and the start-up estimate compare with."""

    key: ClassVar[str] = "estimate"
    title: ClassVar[str] = "Estimate"

    device_memory: str | None = setting(
        None, "Memory of one device for the estimate's verdict, e.g. 24GB or 80GiB; unset: the GPU's."
    )
    num_devices: int | None = setting(
        None, "Devices of the run, for the estimate; unset: WORLD_SIZE, else the visible GPUs, else 1.", gt=0
    )
    device_tflops: float | None = setting(
        None, "Peak dense bf16 TFLOPs of one device, for the estimated step time; unset: by GPU name.", gt=0
    )

    @field_validator("device_memory")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)
        return value


class SavingSettings(Section):
    key: ClassVar[str] = "saving"
    title: ClassVar[str] = "Saving"

    save_safetensors: bool = setting(True, "Save weights as safetensors (otherwise PyTorch .bin).")
    max_shard_size: str = setting("10GB", "Largest weight shard written when saving, e.g. 5GB or 500MB.")

    @field_validator("max_shard_size")
    @classmethod
    def _shard_size(cls, value: str) -> str:
        parse_size(value, unit_required=False)
        return value


class DistributedSettings(Section):
    key: ClassVar[str] = "distributed"
    title: ClassVar[str] = "Distributed"

    deepspeed_stage: int = setting(0, "DeepSpeed ZeRO stage: 0 (off), 1, 2 or 3.")
    deepspeed_config_path: str | None = setting(
        None, "Path of your own DeepSpeed JSON config; replaces the predefined stage config."
    )
    deepspeed_offload: bool = setting(
        False, "With --deepspeed-stage 2 or 3, offload optimizer states (and stage 3 weights) to the CPU."
    )
    fsdp_strategy: str = setting(
        "", "FSDP strategy passed to the Trainer's fsdp argument, e.g. 'full_shard auto_wrap'; '' is off."
    )
    fsdp_offload: bool = setting(True, "With FSDP, offload parameters to the CPU.")
    local_rank: int = setting(0, "Process rank on this node; set by deepspeed/torchrun, rarely by hand.")
    cpu_threads: int | None = setting(
        None,
        "CPU threads per process; unset: without CUDA, cores / processes on this node (OMP_NUM_THREADS if you set it).",
        gt=0,
    )
    ddp_timeout: int = setting(
        1800,
        "Seconds a process waits for the others (joining the run, each collective) before failing with an error.",
        gt=0,
    )

    @property
    def uses_deepspeed(self) -> bool:
        return self.deepspeed_stage > 0 or bool(self.deepspeed_config_path)

    @model_validator(mode="after")
    def _one_engine(self) -> Any:
        if self.deepspeed_stage not in (0, 1, 2, 3):
            raise ValueError(f"{flag('deepspeed_stage')} must be 0, 1, 2 or 3, got {self.deepspeed_stage}")
        if self.uses_deepspeed and self.fsdp_strategy.strip():
            raise ValueError(
                f"DeepSpeed ({flag('deepspeed_stage')}/{flag('deepspeed_config_path')}) and FSDP "
                f"({flag('fsdp_strategy')}) cannot be used together: pick one engine"
            )
        if self.deepspeed_offload and (self.deepspeed_config_path or self.deepspeed_stage not in (2, 3)):
            raise ValueError(
                f"{flag('deepspeed_offload')} applies to the predefined configs of {flag('deepspeed_stage')} 2 or 3; "
                f"with {flag('deepspeed_config_path')} put offload in your own file"
            )
        return self


class HubSettings(Section):
    """Pushing a trained or fused model to the Hugging Face Hub."""

    key: ClassVar[str] = "hub"
    title: ClassVar[str] = "Hub"

    push_to_hub: bool = setting(False, "Push checkpoints and the final model to hub_model_id.")
    hub_model_id: str | None = setting(None, "Hub repository to push to, e.g. me/my-model.")
    hub_private_repo: bool = setting(True, "Create the hub repository as private.")

    @model_validator(mode="after")
    def _push_needs_a_repository(self) -> Any:
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError(f"{flag('push_to_hub')} needs {flag('hub_model_id')} (e.g. --hub-model-id me/my-model)")
        return self


class AdapterSettings(Section):
    """The LoRA adapter ``xllm fuse`` merges (``train --fuse-after-training`` merges the one it trained)."""

    key: ClassVar[str] = "adapter"
    title: ClassVar[str] = "Adapter"

    lora_hub_model_id: str | None = setting(None, "Hub id of the LoRA adapter to merge.")
    lora_model_local_path: str | None = setting(None, "Local folder of the LoRA adapter to merge.")


class FuseSettings(Section):
    """Where and how a merged model is written, by ``xllm fuse`` or ``xllm train --fuse-after-training``."""

    key: ClassVar[str] = "fuse"
    title: ClassVar[str] = "Fuse"

    fused_model_local_path: str | None = setting(None, "Where the merged model is written.")
    push_to_hub_bos_add_bos_token: bool = setting(
        False, "When pushing a fused model, upload a tokenizer config with add_bos_token true."
    )


class GptqSettings(Section):
    key: ClassVar[str] = "gptq"
    title: ClassVar[str] = "GPTQ"

    quantized_model_path: str = setting("./quantized_model/", "Where the GPTQ model is written.")
    gptq_bits: int = setting(4, "Bits per weight: 2, 3, 4 or 8.")
    gptq_group_size: int = setting(128, "Columns sharing one scale; -1 is one group per row.")
    gptq_disable_exllama: bool = setting(
        True,
        "Kept for configs of xllm 0.1.8, no effect: gptqmodel picks the kernels (a trainable one for --from-gptq).",
    )
    quantization_dataset_id: str | None = setting(
        None, "Calibration data: hub dataset id or local file; unset uses the train data."
    )
    quantization_max_samples: int = setting(1024, "Most calibration samples used.", gt=0)
    quantization_max_perplexity_increase: float = setting(
        1.0,
        "Largest held-out perplexity increase accepted, as a fraction (1.0: doubling); past it quantize fails.",
        gt=0,
    )
    quantized_hub_model_id: str | None = setting(None, "Hub repository for the GPTQ model.")
    quantized_hub_private_repo: bool = setting(True, "Create that repository as private.")

    @model_validator(mode="after")
    def _valid_gptq(self) -> Any:
        if self.gptq_bits not in (2, 3, 4, 8):
            raise ValueError(f"{flag('gptq_bits')} must be 2, 3, 4 or 8, got {self.gptq_bits}")
        if self.gptq_group_size != -1 and self.gptq_group_size <= 0:
            raise ValueError(f"{flag('gptq_group_size')} must be -1 or a positive number, got {self.gptq_group_size}")
        return self


class TrackingSettings(Section):
    key: ClassVar[str] = "tracking"
    title: ClassVar[str] = "W&B"

    report_to_wandb: bool = setting(False, "Log metrics to Weights & Biases.")
    wandb_api_key: SecretStr | None = setting(None, "W&B API key (secret). Env: XLLM_WANDB_API_KEY or WANDB_API_KEY.")
    wandb_project: str | None = setting(None, "W&B project.")
    wandb_entity: str | None = setting(None, "W&B entity (user or team).")


# In the order of --help panels, the reference and --show-config.
SECTIONS: tuple[type[Section], ...] = (
    RunSettings,
    ModelSettings,
    TokenizerSettings,
    PrecisionSettings,
    LoadingSettings,
    DataSettings,
    CollatorSettings,
    LoraSettings,
    QuantizationSettings,
    TrainingSettings,
    EstimateSettings,
    SavingSettings,
    DistributedSettings,
    HubSettings,
    AdapterSettings,
    FuseSettings,
    GptqSettings,
    TrackingSettings,
)
