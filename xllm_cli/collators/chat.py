"""Chat samples through the tokenizer's chat template, with a mask of the assistant tokens.

A chat sample is ``{"messages": [...]}`` with optional ``"tools"`` (see ``xllm_cli.data.base``). Tool definitions,
assistant ``tool_calls`` and ``tool`` messages reach the template as transformers passes them; a template that does
not render one of them (its output does not change with it) is refused in one line rather than silently training on
conversations with the tool turns missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from xllm_cli.errors import DataError, first_line

Messages = list[dict[str, Any]]
Chat = dict[str, Any]  # {"messages": [...], "tools": [...] (optional)}
# The tag itself, as transformers looks for it: a bare "generation" also matches `add_generation_prompt`, which
# nearly every template has, and would take the assistant mask (all zeros) from a template that has no such tag.
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
TEMPLATE_HINT = "give one with --chat-template (a Jinja file, or chatml, llama3, mistral, llama2, gemma, phi3)"


def chat_template_of(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise DataError(
            "chat samples ('messages') need a chat template, and this tokenizer has none",
            hint=TEMPLATE_HINT + ", or use text_parts samples",
        )
    return template if isinstance(template, str) else str(template)


def encode_chats(tokenizer: Any, chats: Sequence[Chat]) -> list[tuple[list[int], list[int]]]:
    """(token ids, assistant mask) per chat sample, the mask 1 on every assistant-turn token (tool calls included).

    Templates that mark assistant text with ``{% generation %}`` give the mask directly (one batched call for the
    chats without tools; tools are one list per call, so each chat with tools is its own call); for the others it
    comes from rendering each prefix of the conversation, which works for any template that renders a conversation as
    the concatenation of its turns.
    """
    if not chats:
        return []
    template = chat_template_of(tokenizer)
    check_tool_support(tokenizer, template, chats)
    if not GENERATION_TAG.search(template):
        return [_encode_by_prefixes(tokenizer, chat) for chat in chats]
    encoded: list[tuple[list[int], list[int]] | None] = [None] * len(chats)
    plain = [i for i, chat in enumerate(chats) if not chat.get("tools")]
    groups = [(plain, None)] if plain else []
    groups += [([i], chats[i]["tools"]) for i, chat in enumerate(chats) if chat.get("tools")]
    for indices, tools in groups:
        rendered = _apply(
            tokenizer,
            [chats[i]["messages"] for i in indices],
            tools=tools,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        for i, ids, mask in zip(indices, rendered["input_ids"], rendered["assistant_masks"], strict=True):
            encoded[i] = (list(ids), list(mask))
    return encoded  # type: ignore[return-value]


def _apply(tokenizer: Any, conversations: Any, **kwargs: Any) -> Any:
    """``apply_chat_template``; a template that fails on a conversation is one line naming the conversation's roles."""
    try:
        return tokenizer.apply_chat_template(conversations, **kwargs)
    except Exception as error:
        batch = conversations if conversations and isinstance(conversations[0], list) else [conversations]
        failing = batch[0]
        for conversation in batch:  # the batch failed: find the conversation that does
            try:
                tokenizer.apply_chat_template(conversation, tools=kwargs.get("tools"), tokenize=False)
            except Exception:
                failing = conversation
                break
        roles = ", ".join(str(message.get("role")) for message in failing)
        message = first_line(error)
        raise DataError(
            f"the chat template cannot render a conversation with the roles [{roles}]: {message}", hint=TEMPLATE_HINT
        ) from None


def _render(tokenizer: Any, chat: Chat, messages: Messages, add_generation_prompt: bool = False) -> list[int]:
    rendered = _apply(
        tokenizer,
        messages,
        tools=chat.get("tools"),
        tokenize=True,
        return_dict=True,
        add_generation_prompt=add_generation_prompt,
    )
    return list(rendered["input_ids"])


def _encode_by_prefixes(tokenizer: Any, chat: Chat) -> tuple[list[int], list[int]]:
    messages = chat["messages"]
    ids = _render(tokenizer, chat, messages)
    mask = [0] * len(ids)
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, chat, messages[:turn], add_generation_prompt=True)) if turn else 0
        end = len(_render(tokenizer, chat, messages[: turn + 1]))
        mask[start:end] = [1] * (end - start)
    return ids, mask


# --- does the template render tool use? ------------------------------------------------------------------------------

TOOL_FEATURES = {
    "tools": "tool definitions ('tools')",
    "tool_calls": "assistant tool calls ('tool_calls')",
    "tool": "tool results (role 'tool')",
}
# (template text, feature) -> None when rendered, else why not; templates are few, probes are cheap.
_verdicts: dict[tuple[str, str], str | None] = {}


def features_of(chat: Chat) -> set[str]:
    found = {"tools"} if chat.get("tools") else set()
    for message in chat["messages"]:
        if message.get("tool_calls"):
            found.add("tool_calls")
        if message["role"] == "tool":
            found.add("tool")
    return found


def check_tool_support(tokenizer: Any, template: str, chats: Sequence[Chat]) -> None:
    """Refuse data with tool use the template drops; each (template, feature) is probed once."""
    used = set().union(*(features_of(chat) for chat in chats))
    for feature in sorted(used):
        key = (template, feature)
        if key not in _verdicts:
            _verdicts[key] = _probe(tokenizer, feature)
        if _verdicts[key] is not None:
            raise DataError(
                f"the chat template does not render {TOOL_FEATURES[feature]}, and the data has them: {_verdicts[key]}",
                hint="choose a template that does with --chat-template (chatml, llama3, mistral), or drop the tool turns",
            )


def _probe_render(tokenizer: Any, feature: str, marker: str) -> str:
    """A small tool-use conversation whose ``feature`` carries ``marker``."""
    city = marker if feature == "tool_calls" else "Paris"
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
    messages: Messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
    ]
    if feature == "tool":
        messages += [{"role": "tool", "content": marker}, {"role": "assistant", "content": "It is 22 C."}]
    tools = None
    if feature == "tools":
        parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        tools = [
            {"type": "function", "function": {"name": "get_weather", "description": marker, "parameters": parameters}}
        ]
        messages = [messages[0], {"role": "assistant", "content": "Sunny."}]
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)


def _probe(tokenizer: Any, feature: str) -> str | None:
    """None when the rendering depends on ``feature`` (it is rendered), else the reason it is not."""
    try:
        first = _probe_render(tokenizer, feature, "xllm-probe-one")
        second = _probe_render(tokenizer, feature, "xllm-probe-two")
    except Exception as error:
        return f"it fails on them ({first_line(error)})"
    return None if first != second else "its output is the same with and without them"
