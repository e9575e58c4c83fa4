"""Chat samples through the tokenizer's chat template, with a mask of the assistant tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xllm_cli.errors import DataError

Messages = list[dict[str, str]]


def chat_template_of(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise DataError(
            "chat samples ('messages') need a tokenizer with a chat template, and this one has none",
            hint="use a chat model's tokenizer (--tokenizer-name-or-path) or text_parts samples",
        )
    return template if isinstance(template, str) else str(template)


def encode_chats(tokenizer: Any, conversations: Sequence[Messages]) -> list[tuple[list[int], list[int]]]:
    """(token ids, assistant mask) per conversation, the mask 1 on every assistant-turn token.

    Templates that mark assistant text with ``{% generation %}`` give the mask directly (one batched call); for the
    others it comes from rendering each prefix of the conversation, which works for any template that renders a
    conversation as the concatenation of its turns.
    """
    if not conversations:
        return []
    if "generation" in chat_template_of(tokenizer):
        rendered = tokenizer.apply_chat_template(
            list(conversations), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return [
            (list(ids), list(mask))
            for ids, mask in zip(rendered["input_ids"], rendered["assistant_masks"], strict=True)
        ]
    return [_encode_by_prefixes(tokenizer, messages) for messages in conversations]


def _render(tokenizer: Any, messages: Messages, add_generation_prompt: bool = False) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(rendered["input_ids"])


def _encode_by_prefixes(tokenizer: Any, messages: Messages) -> tuple[list[int], list[int]]:
    ids = _render(tokenizer, messages)
    mask = [0] * len(ids)
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:turn], add_generation_prompt=True)) if turn else 0
        end = len(_render(tokenizer, messages[: turn + 1]))
        mask[start:end] = [1] * (end - start)
    return ids, mask
