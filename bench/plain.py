"""The baseline of the training benches: what a user writes with transformers and peft alone.

Tokenize texts, load the model, put LoRA on every linear layer but the head, train with the Trainer, save the adapter
and tokenizer. ``bench/train.py`` calls ``plain_trainer_run`` in-process (training-loop speed); ``bench/setup.py`` runs
this file as a script (the whole run's wall time, imports included):

    python bench/plain.py MODEL_DIR DATA.jsonl OUTPUT_DIR --steps 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MAX_LENGTH = 256
LORA = {"r": 8, "alpha": 32, "dropout": 0.1}
OPTIM = "adamw_torch"


def plain_trainer_run(
    model_dir: Path,
    texts: list[str],
    steps: int,
    output: Path,
    batch: int = 8,
    save: bool = False,
    max_length: int = MAX_LENGTH,
    load_in_4bit: bool = False,
    lora_rank: int = LORA["r"],
    **arguments: Any,
) -> float:
    """Train ``steps`` steps; returns non-pad tokens per second of the training loop. ``load_in_4bit`` makes it QLoRA
    as the peft docs write it (nf4, double quantization, k-bit preparation); ``arguments`` go to ``TrainingArguments``
    (e.g. ``bf16=True``)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        DataCollatorForLanguageModeling,
        Trainer,
    )
    from transformers import TrainingArguments as Arguments

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(texts, truncation=True, max_length=max_length - 1)["input_ids"]
    dataset = [{"input_ids": ids + [tokenizer.eos_token_id]} for ids in encoded]
    torch.manual_seed(0)
    loading: dict[str, Any] = {"attn_implementation": "sdpa"}
    if load_in_4bit:
        cuda = torch.cuda.is_available()
        loading["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if cuda else torch.float32,
        )
        loading["dtype"] = torch.bfloat16 if cuda else torch.float32
        if cuda:
            loading["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **loading)
    if load_in_4bit:
        # peft turns gradient checkpointing on by default here; xllm only with --use-gradient-checkpointing.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = sorted(
        {n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)} - {"lm_head"}
    )
    model = get_peft_model(
        model,
        LoraConfig(r=lora_rank, lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules=targets),
    )
    settings = {
        "output_dir": str(output),
        "per_device_train_batch_size": batch,
        "max_steps": steps,
        "learning_rate": 2e-4,
        "optim": OPTIM,
        "logging_steps": steps,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": not torch.cuda.is_available(),
        "include_num_input_tokens_seen": "non_padding",
        "disable_tqdm": True,
        **arguments,
    }
    trainer = Trainer(
        model=model,
        args=Arguments(**settings),
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    result = trainer.train()
    if save:
        trainer.save_model(str(output))
        tokenizer.save_pretrained(str(output))
    return trainer.state.num_input_tokens_seen / result.metrics["train_runtime"]


def read_texts(path: Path) -> list[str]:
    """The texts of a prepared xllm file (``{"text_parts": [...]}`` per line), joined as xllm's lm collator does."""
    return [" ".join(json.loads(line)["text_parts"]) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    options = parser.parse_args()
    plain_trainer_run(options.model_dir, read_texts(options.data), options.steps, options.output, options.batch, True)


if __name__ == "__main__":
    main()
