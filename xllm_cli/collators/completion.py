"""Collator ``completion``: the loss only on the target (the last text part, or every assistant turn of a chat)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xllm_cli.collators.base import IGNORE_INDEX, Collator, Encoded
from xllm_cli.collators.chat import encode_chats


class CompletionCollator(Collator):
    """The prompt (all parts but the last, joined with the separator, plus one separator) is context only; the target
    (the last part, EOS appended) is learned. Prompt and target are tokenized separately so the boundary is exact."""

    def encode_batch(self, samples: Sequence[dict[str, Any]]) -> list[Encoded | None]:
        texts = [i for i, sample in enumerate(samples) if "text_parts" in sample]
        chats = [i for i, sample in enumerate(samples) if "text_parts" not in sample]
        encoded: list[Encoded | None] = [None] * len(samples)
        if texts:
            prompts, targets = zip(*(self.split(samples[i]["text_parts"]) for i in texts), strict=True)
            prompt_ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
            target_ids = self.tokenizer(list(targets), add_special_tokens=False)["input_ids"]
            for i, prompt, target in zip(texts, prompt_ids, target_ids, strict=True):
                target = self.with_eos(list(target))
                encoded[i] = self.finish_encoding(list(prompt) + target, [IGNORE_INDEX] * len(prompt) + target)
        for i, (ids, mask) in zip(chats, encode_chats(self.tokenizer, [samples[i] for i in chats]), strict=True):
            labels = [token if learn else IGNORE_INDEX for token, learn in zip(ids, mask, strict=True)]
            encoded[i] = self.finish_encoding(ids, labels)
        return encoded

    def split(self, parts: list[str]) -> tuple[str, str]:
        """(prompt, target); a single-part sample is all target."""
        if len(parts) == 1:
            return "", parts[0]
        return self.separator.join(parts[:-1]) + self.separator, parts[-1]
