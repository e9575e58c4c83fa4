"""The one settings model: every field of xllm, grouped by entity.

Kept free of heavy imports (pydantic only) because ``--help``, ``--show-config`` and completion all read it.
Each field carries its entity in ``json_schema_extra`` so the CLI can group flags into help panels and the docs
reference can be generated from this file.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from xllm_cli.collators.templates import TEMPLATES
from xllm_cli.config.validation import check_combinations, parse_size

# Entity -> help panel title, in the order the panels appear.
ENTITIES: dict[str, str] = {
    "general": "General",
    "dataset": "Dataset",
    "tokenizer": "Tokenizer",
    "collator": "Collator",
    "model": "Model",
    "bitsandbytes": "bitsandbytes",
    "lora": "LoRA",
    "training": "Training arguments",
    "fuse": "Fuse",
    "gptq_quantization": "GPTQ quantization",
    "gptq": "GPTQ",
    "wandb": "W&B",
}


def setting(default: Any, entity: str, help: str, **kwargs: Any) -> Any:
    """A field with its entity recorded for help panels and the generated reference."""
    assert entity in ENTITIES, entity
    return Field(default, description=help, json_schema_extra={"entity": entity}, **kwargs)


class XllmConfig(BaseSettings):
    """Every setting of xllm. Sources, highest first: flags, environment, ``.env``, ``--config`` file, defaults."""

    model_config = SettingsConfigDict(
        env_prefix="XLLM_",
        env_file=".env",
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
        case_sensitive=False,
        # Errors must never echo a secret back.
        hide_input_in_errors=True,
    )

    # --- general
    experiment_key: str = setting("base", "general", "Experiment class (registry key) that builds the training run.")
    save_safetensors: bool = setting(True, "general", "Save weights as safetensors (otherwise PyTorch .bin).")
    max_shard_size: str = setting("10GB", "general", "Largest weight shard written when saving, e.g. 5GB or 500MB.")
    local_rank: int = setting(0, "general", "Process rank on this node; set by deepspeed/torchrun, rarely by hand.")
    use_gradient_checkpointing: bool = setting(
        False, "general", "Recompute activations in the backward pass to save memory (slower)."
    )
    trainer_key: str = setting("lm", "general", "Trainer class (registry key) that computes the loss.")
    force_fp32: bool = setting(False, "general", "Load and train the model in float32.")
    force_fp16: bool = setting(False, "general", "Load and train the model in float16 instead of bfloat16.")
    from_gptq: bool = setting(False, "general", "The model is a GPTQ checkpoint; train LoRA on top of it.")
    huggingface_hub_token: SecretStr | None = setting(
        None,
        "general",
        "Hugging Face Hub token (secret). Env: XLLM_HUGGINGFACE_HUB_TOKEN, HF_TOKEN or HUGGING_FACE_HUB_TOKEN.",
    )
    deepspeed_stage: int = setting(0, "general", "DeepSpeed ZeRO stage: 0 (off), 1, 2 or 3.")
    deepspeed_config_path: str | None = setting(
        None, "general", "Path of your own DeepSpeed JSON config; replaces the predefined stage config."
    )
    deepspeed_offload: bool = setting(
        False, "general", "With --deepspeed-stage 2 or 3, offload optimizer states (and stage 3 weights) to the CPU."
    )
    fsdp_strategy: str = setting(
        "", "general", "FSDP strategy passed to the Trainer's fsdp argument, e.g. 'full_shard auto_wrap'; '' is off."
    )
    fsdp_offload: bool = setting(True, "general", "With FSDP, offload parameters to the CPU.")
    seed: int = setting(42, "general", "Random seed for data shuffling, initialisation and training.")
    stabilize: bool = setting(
        False, "general", "Norms in float32; LoRA matrices, embeddings and head in bfloat16 where supported."
    )
    path_to_env_file: str = setting("./.env", "general", "The .env file to read settings from (missing is fine).")
    prepare_dataset: bool = setting(
        True, "general", "Prepare the dataset in `download` (and re-prepare calibration data in `quantize`)."
    )
    cache_dir: str | None = setting(
        None,
        "general",
        "Where xllm caches tokenized data (never beside your data); unset: $XDG_CACHE_HOME/xllm or ~/.cache/xllm.",
    )

    # --- dataset
    dataset_key: str = setting("soda", "dataset", "Dataset class (registry key) that turns a source into samples.")
    dataset_source: str | None = setting(
        None,
        "dataset",
        "Where the dataset reads from: a local file, folder or hub dataset id (soda: allenai/soda when unset); "
        "general/chat: a comma list mixes several, each with an optional weight, e.g. a.jsonl:3,b.json.",
    )
    dataset_format: Literal["auto", "text", "parts", "messages", "alpaca", "sharegpt", "prompt_completion"] = setting(
        "auto",
        "dataset",
        "general/chat datasets: the records' format; auto detects it from the columns of each source.",
    )
    dataset_columns: str | None = setting(
        None,
        "dataset",
        "general/chat datasets: columns with other names, as role=column pairs, e.g. instruction=question,output=answer.",
    )
    dataset_text_field: str = setting("text", "dataset", "general dataset: the column holding the text (text format).")
    dataset_parts_separator: str | None = setting(
        None, "dataset", "general dataset: split each text into parts at this string (the last part is the target)."
    )
    soda_drop_header_probability: float = setting(
        0.05,
        "dataset",
        "soda dataset: probability of dropping the narrative header from a training sample.",
        ge=0,
        le=1,
    )
    train_local_path_to_data: str = setting("./train.jsonl", "dataset", "Where the prepared train samples live.")
    eval_local_path_to_data: str | None = setting(
        None, "dataset", "Where the prepared eval samples live; unset means no eval file."
    )
    shuffle: bool = setting(True, "dataset", "Shuffle the train samples (deterministically, with the seed).")
    max_eval_samples: int = setting(1000, "dataset", "Most eval samples kept; the overflow moves to train.", ge=0)
    add_eval_to_train_if_no_path: bool = setting(
        False, "dataset", "With no eval path, add the eval samples to train instead of dropping them."
    )

    # --- tokenizer
    tokenizer_name_or_path: str | None = setting(
        None, "tokenizer", "Tokenizer hub id or folder; defaults to model_name_or_path."
    )
    tokenizer_use_fast: bool | None = setting(None, "tokenizer", "Use the fast (Rust) tokenizer; unset means auto.")
    tokenizer_padding_side: Literal["right", "left"] | None = setting(
        None, "tokenizer", "Pad on the right or the left; unset keeps the tokenizer's own."
    )
    chat_template: str | None = setting(
        None,
        "tokenizer",
        f"Chat template for chat data, replacing the tokenizer's: a Jinja file or one xllm ships ({', '.join(TEMPLATES)}).",
    )

    # --- collator
    collator_key: str = setting("lm", "collator", "Collator class (registry key) that builds batches.")
    max_length: int = setting(2048, "collator", "Longest sequence in tokens; longer samples are truncated.", gt=0)
    collator_parts_separator: str = setting(" ", "collator", "String placed between the text parts of a sample.")
    packing: bool = setting(
        False, "collator", "Pack several samples into each row of max_length (no attention across samples)."
    )

    # --- model
    model_name_or_path: str = setting("mistralai/Mistral-7B-v0.1", "model", "Base model: hub id or local folder.")
    push_to_hub_bos_add_bos_token: bool = setting(
        False, "model", "When pushing a fused model, upload a tokenizer config with add_bos_token true."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2", "flex_attention"] = setting(
        "auto",
        "model",
        "Attention kernel; auto picks the fastest the model supports here: flash_attention_2 (CUDA + flash-attn), "
        "else sdpa, else eager.",
    )
    use_flash_attention_2: bool = setting(
        False, "model", "Original spelling of --attn-implementation flash_attention_2 (kept for compatibility)."
    )
    trust_remote_code: bool = setting(False, "model", "Run the model repository's own code (only for repos you trust).")
    device_map: str | None = setting(None, "model", "Device map for loading, e.g. auto; unset lets xllm decide.")
    prepare_model_for_kbit_training: bool = setting(
        True, "model", "With 4/8-bit loading, run peft's prepare_model_for_kbit_training."
    )

    # --- bitsandbytes
    load_in_8bit: bool = setting(False, "bitsandbytes", "Load the base model in 8-bit (bitsandbytes).")
    load_in_4bit: bool = setting(False, "bitsandbytes", "Load the base model in 4-bit (bitsandbytes, QLoRA).")
    llm_int8_threshold: float = setting(6.0, "bitsandbytes", "Outlier threshold of LLM.int8().")
    llm_int8_has_fp16_weight: bool = setting(True, "bitsandbytes", "Keep fp16 main weights with LLM.int8().")
    bnb_4bit_use_double_quant: bool = setting(True, "bitsandbytes", "Quantize the 4-bit quantization constants too.")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = setting("nf4", "bitsandbytes", "4-bit data type: nf4 or fp4.")
    bnb_quantize_after_model_init: bool = setting(
        False, "bitsandbytes", "Load in full precision, then quantize (instead of quantizing while loading)."
    )

    # --- lora
    apply_lora: bool = setting(False, "lora", "Train a LoRA adapter instead of all weights.")
    lora_rank: int = setting(8, "lora", "LoRA rank r.", gt=0)
    lora_alpha: int = setting(32, "lora", "LoRA alpha; updates are scaled by alpha / r.", gt=0)
    lora_dropout: float = setting(0.1, "lora", "Dropout on the LoRA input.", ge=0, lt=1)
    raw_lora_target_modules: str = setting(
        "all", "lora", "'all' (every linear layer but the head) or a comma list of module names, e.g. q_proj,v_proj."
    )

    # --- training arguments
    output_dir: str = setting("./outputs/", "training", "Where checkpoints and the final model are written.")
    per_device_train_batch_size: int = setting(2, "training", "Train batch size per device.", gt=0)
    do_eval: bool = setting(False, "training", "Evaluate every eval_steps (needs eval data).")
    per_device_eval_batch_size: int | None = setting(
        None, "training", "Eval batch size per device; defaults to the train batch size."
    )
    gradient_accumulation_steps: int = setting(1, "training", "Batches accumulated per optimizer step.", gt=0)
    eval_accumulation_steps: int | None = setting(None, "training", "Eval steps accumulated before moving to CPU.")
    eval_delay: int = setting(0, "training", "Steps to wait before the first evaluation.", ge=0)
    eval_steps: int = setting(1000, "training", "Evaluate every this many steps.", gt=0)
    warmup_steps: int = setting(1000, "training", "Learning-rate warmup steps.", ge=0)
    max_steps: int | None = setting(None, "training", "Stop after this many optimizer steps (overrides epochs).")
    num_train_epochs: int = setting(1, "training", "Passes over the train data.", gt=0)
    learning_rate: float = setting(2e-4, "training", "Peak learning rate.", gt=0)
    max_grad_norm: float = setting(1.0, "training", "Gradient clipping norm.")
    weight_decay: float = setting(0.001, "training", "AdamW weight decay.")
    label_smoothing_factor: float = setting(0.0, "training", "Label smoothing of the LM loss.", ge=0, lt=1)
    logging_steps: int = setting(10, "training", "Log every this many steps.", gt=0)
    save_steps: int = setting(100, "training", "Save a checkpoint every this many steps.", gt=0)
    save_total_limit: int = setting(1, "training", "Checkpoints kept on disk (older ones are deleted).", gt=0)
    optim: str = setting("paged_adamw_8bit", "training", "Optimizer name as transformers accepts it.")
    push_to_hub: bool = setting(False, "training", "Push checkpoints and the final model to hub_model_id.")
    hub_model_id: str | None = setting(None, "training", "Hub repository to push to, e.g. me/my-model.")
    hub_private_repo: bool = setting(True, "training", "Create the hub repository as private.")
    resume_from_checkpoint: str | None = setting(
        None, "training", "Continue from a checkpoint folder, or 'last' for the newest in output_dir."
    )
    # The devices a run is planned for: what `xllm train --estimate` and the start-up estimate compare with.
    device_memory: str | None = setting(
        None, "training", "Memory of one device for the estimate's verdict, e.g. 24GB or 80GiB; unset: the GPU's."
    )
    num_devices: int | None = setting(
        None,
        "training",
        "Devices of the run, for the estimate; unset: WORLD_SIZE, else the visible GPUs, else 1.",
        gt=0,
    )
    device_tflops: float | None = setting(
        None, "training", "Peak dense bf16 TFLOPs of one device, for the estimated step time; unset: by GPU name.", gt=0
    )

    # --- fuse
    lora_hub_model_id: str | None = setting(None, "fuse", "Hub id of the LoRA adapter to merge.")
    lora_model_local_path: str | None = setting(None, "fuse", "Local folder of the LoRA adapter to merge.")
    fused_model_local_path: str | None = setting(None, "fuse", "Where the merged model is written.")
    fuse_after_training: bool = setting(False, "fuse", "Merge the LoRA adapter into the base when training ends.")

    # --- gptq quantization
    quantization_dataset_id: str | None = setting(
        None, "gptq_quantization", "Calibration data: hub dataset id or local file; unset uses the train data."
    )
    quantization_max_samples: int = setting(1024, "gptq_quantization", "Most calibration samples used.", gt=0)
    quantized_model_path: str = setting("./quantized_model/", "gptq_quantization", "Where the GPTQ model is written.")
    quantization_max_perplexity_increase: float = setting(
        1.0,
        "gptq_quantization",
        "Largest held-out perplexity increase accepted, as a fraction (1.0: doubling); past it quantize fails.",
        gt=0,
    )
    quantized_hub_model_id: str | None = setting(None, "gptq_quantization", "Hub repository for the GPTQ model.")
    quantized_hub_private_repo: bool = setting(True, "gptq_quantization", "Create that repository as private.")

    # --- gptq
    gptq_bits: int = setting(4, "gptq", "Bits per weight: 2, 3, 4 or 8.")
    gptq_group_size: int = setting(128, "gptq", "Columns sharing one scale; -1 is one group per row.")
    gptq_disable_exllama: bool = setting(True, "gptq", "Do not use the exllama kernels when loading.")

    # --- wandb
    report_to_wandb: bool = setting(False, "wandb", "Log metrics to Weights & Biases.")
    wandb_api_key: SecretStr | None = setting(
        None,
        "wandb",
        "W&B API key (secret). Env: XLLM_WANDB_API_KEY or WANDB_API_KEY.",
    )
    wandb_project: str | None = setting(None, "wandb", "W&B project.")
    wandb_entity: str | None = setting(None, "wandb", "W&B entity (user or team).")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # ``XllmConfig()`` in a user's script reads the same sources, the same way, as the CLI.
        from xllm_cli.config.sources import environment_sources

        return (init_settings, *environment_sources(settings_cls, init_settings.init_kwargs))

    @field_validator("dataset_source", mode="before")
    @classmethod
    def _sources_as_comma_list(cls, value: Any) -> Any:
        """A config file may list several sources (``dataset_source: [a.jsonl, b.json:2]``)."""
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value

    @field_validator("device_memory")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> XllmConfig:
        # The rules live in config/validation.py so they can be read (and documented) in one place.
        check_combinations(self)
        return self

    def secret(self, name: str) -> str | None:
        """The plain value of a secret field, for the one place that hands it to a library."""
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    def entity_of(self, name: str) -> str:
        return field_entity(type(self), name)


def entity_title(entity: str) -> str:
    """The help-panel title of an entity; plugin settings (entity ``plugin:<key>``) are titled after their plugin."""
    return ENTITIES.get(entity) or f"Plugin {entity.removeprefix('plugin:')}"


def field_entity(config_cls: type[BaseSettings], name: str) -> str:
    extra = config_cls.model_fields[name].json_schema_extra or {}
    return extra.get("entity", "general") if isinstance(extra, dict) else "general"
