"""Collator ``lm``: the loss on every real token of the sample (padding excluded), EOS included."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xllm_cli.collators.base import Collator, Encoded
from xllm_cli.collators.chat import encode_chats


class LMCollator(Collator):
    """Text parts joined with ``collator_parts_separator``, BOS as the tokenizer adds it, EOS appended; chat samples
    rendered with the chat template. Every token is a target."""

    def encode_batch(self, samples: Sequence[dict[str, Any]]) -> list[Encoded | None]:
        texts = [i for i, sample in enumerate(samples) if "text_parts" in sample]
        chats = [i for i, sample in enumerate(samples) if "text_parts" not in sample]
        encoded: list[Encoded | None] = [None] * len(samples)
        if texts:
            batch = self.tokenizer([self.text_of(samples[i]) for i in texts], add_special_tokens=True)["input_ids"]
            for i, ids in zip(texts, batch, strict=True):
                ids = self.with_eos(list(ids))
                encoded[i] = self.finish_encoding(ids, list(ids))
        for i, (ids, _) in zip(chats, encode_chats(self.tokenizer, [samples[i] for i in chats]), strict=True):
            encoded[i] = self.finish_encoding(ids, list(ids))
        return encoded
