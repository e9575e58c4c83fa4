"""The collator contract: training samples in, a batch of tensors out.

A collator class (registered under a key, see ``xllm_cli.registry``) is built as ``cls(tokenizer, config)`` and called
with a list of samples; it returns ``{"input_ids", "attention_mask", "labels"}`` (plus ``position_ids`` for packed
rows), all ``torch.long`` tensors of shape ``(batch, length)``. Labels are -100 wherever no loss is wanted (padding,
prompts), never the pad id: a pad token equal to EOS must still teach EOS.

Built-in collators split the work in two so tokenization runs once and is cached (``xllm_cli.training.tokenize``):

- ``encode_batch(samples)``: training samples -> ``{"input_ids": [...], "labels": [...]}`` each, batched with the fast
  tokenizer, or ``None`` for a sample whose loss tokens were all cut away by ``max_length``;
- ``__call__(samples)``: pads already encoded samples (or encodes training samples on the fly first).

A plugin collator may implement only ``__call__`` (taking training samples); it then tokenizes on every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from xllm_cli import console
from xllm_cli.settings.config import XllmConfig

IGNORE_INDEX = -100
Encoded = dict[str, list[int]]


class Collator:
    """Base class of the built-in collators; subclasses implement ``encode_batch``."""

    settings_model: ClassVar[Any] = None

    def __init__(self, tokenizer: Any, config: XllmConfig):
        self.tokenizer = tokenizer
        self.config = config
        self.max_length: int = config.max_length
        self.separator: str = config.collator_parts_separator
        # Samples whose loss tokens were all truncated away: counted, reported once, never trained on.
        self.cut_away_samples = 0
        self._cut_away_reported = False

    def cache_identity(self) -> dict[str, Any]:
        """Everything about this collator that changes its encodings (part of the tokenization cache key)."""
        cls = type(self)
        return {"class": f"{cls.__module__}.{cls.__qualname__}", "max_length": self.max_length, "sep": self.separator}

    def encode_batch(self, samples: Sequence[dict[str, Any]]) -> list[Encoded | None]:
        raise NotImplementedError

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        raw = [sample for sample in samples if "input_ids" not in sample]
        if raw:
            encoded = iter(self.encode_batch(raw))
            features = [sample if "input_ids" in sample else next(encoded) for sample in samples]
            dropped = sum(feature is None for feature in features)
            if dropped:
                self.note_cut_away(dropped)
            features = [feature for feature in features if feature is not None]
        else:
            features = list(samples)
        return pad_batch(features, pad_id(self.tokenizer), self.tokenizer.padding_side)

    def note_cut_away(self, count: int) -> None:
        """Count samples that lost every loss token to truncation; warn the first time only."""
        self.cut_away_samples += count
        if not self._cut_away_reported:
            self._cut_away_reported = True
            console.warn(
                f"{count} sample(s) had their whole target cut away by --max-length {self.max_length} and are "
                f"skipped (raise --max-length to keep them)"
            )

    def finish_encoding(self, input_ids: list[int], labels: list[int]) -> Encoded | None:
        """Truncate to ``max_length``; ``None`` when no loss token survives."""
        input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
        # Position 0 is never predicted (the loss shifts labels left), so it does not count as a loss token.
        if all(label == IGNORE_INDEX for label in labels[1:]):
            return None
        return {"input_ids": input_ids, "labels": labels}

    def text_of(self, sample: dict[str, Any]) -> str:
        return self.separator.join(sample["text_parts"])

    def with_eos(self, ids: list[int]) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def pad_id(tokenizer: Any) -> int:
    value = tokenizer.pad_token_id
    return value if value is not None else (tokenizer.eos_token_id or 0)


def pad_batch(features: Sequence[dict[str, Any]], pad_token_id: int, padding_side: str = "right") -> dict[str, Any]:
    """Pad encoded features to the longest one: pad id in ``input_ids``, 0 in ``attention_mask``, -100 in labels.

    Packed rows carry ``position_ids``; their padding gets positions of its own (0, 1, ...) so transformers sees it as
    one more separate sequence and no real token attends to it.
    """
    import torch

    if not features:
        raise ValueError("cannot collate an empty batch")
    longest = max(len(feature["input_ids"]) for feature in features)
    packed = "position_ids" in features[0]
    columns: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    if packed:
        columns["position_ids"] = []
    for feature in features:
        ids = list(feature["input_ids"])
        fill = longest - len(ids)
        row = {
            "input_ids": (ids, [pad_token_id] * fill),
            "attention_mask": ([1] * len(ids), [0] * fill),
            "labels": (list(feature["labels"]), [IGNORE_INDEX] * fill),
        }
        if packed:
            row["position_ids"] = (list(feature["position_ids"]), list(range(fill)))
        for name, (values, padding) in row.items():
            columns[name].append(padding + values if padding_side == "left" else values + padding)
    return {name: torch.tensor(rows, dtype=torch.long) for name, rows in columns.items()}
