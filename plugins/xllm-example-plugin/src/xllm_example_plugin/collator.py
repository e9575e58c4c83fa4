"""The ``example-lm`` collator: the smallest complete collator.

Contract: built as ``cls(tokenizer, config)``; called with a list of training samples (``{"text_parts": [...]}`` or
``{"messages": [...]}``); returns ``input_ids``, ``attention_mask`` and ``labels`` as ``torch.long`` tensors of shape
(batch, length), with -100 in ``labels`` wherever no loss is wanted (here: padding only, so every token is trained).
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


class ExampleLMCollator:
    settings_model = None

    def __init__(self, tokenizer: Any, config: Any):
        self.tokenizer = tokenizer
        self.max_length = config.max_length
        self.separator = config.collator_parts_separator

    def text_of(self, sample: dict[str, Any]) -> str:
        if "messages" in sample:
            return self.tokenizer.apply_chat_template(sample["messages"], tokenize=False)
        return self.separator.join(sample["text_parts"])

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        rows = []
        for sample in samples:
            ids = self.tokenizer(self.text_of(sample), add_special_tokens=True)["input_ids"]
            rows.append((ids + ([eos] if eos is not None else []))[: self.max_length])
        longest = max(len(ids) for ids in rows)
        input_ids = [ids + [pad] * (longest - len(ids)) for ids in rows]
        attention_mask = [[1] * len(ids) + [0] * (longest - len(ids)) for ids in rows]
        labels = [ids + [IGNORE_INDEX] * (longest - len(ids)) for ids in rows]
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(attention_mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
