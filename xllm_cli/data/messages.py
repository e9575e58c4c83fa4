"""OpenAI-style chat messages from what datasets hold: OpenAI messages, ShareGPT turns, tool calls and tools.

- Roles: ShareGPT's ``human``/``gpt``, Gemma's ``model``, OpenAI's ``developer``, ``function``/``observation`` results
  become system, user, assistant or tool; LLaMA-Factory's ``function_call`` turn (its value the call as JSON) becomes
  an assistant message with ``tool_calls``.
- Content given as a list of text parts is joined; any other part (image, audio) is refused: xllm trains text.
- Tool calls become ``{"type": "function", "function": {"name", "arguments": {...}}}`` with the arguments an object
  (OpenAI writes a JSON string; transformers' templates take an object); tools become function definitions.
- Nulls are dropped: Arrow (hub datasets, parquet) gives every row every key of a struct column.

Every error names the record and the message number.
"""

from __future__ import annotations

import json
from typing import Any

from xllm_cli.errors import DataError, closest

# Chat roles as datasets spell them -> OpenAI roles. ShareGPT's function_call is an assistant turn calling a tool.
ROLE_ALIASES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}
TEXT_PARTS = ("text", "input_text", "output_text")


def normalise_messages(where: str, turns: Any, column: str, first: int = 1) -> list[dict[str, Any]]:
    """OpenAI-style messages from OpenAI or ShareGPT turns (numbered from ``first`` in errors)."""
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: '{column}' must be a non-empty list of messages")
    return [_message(f"{where}: message {number}", turn) for number, turn in enumerate(turns, start=first)]


def _message(here: str, turn: Any) -> dict[str, Any]:
    if not isinstance(turn, dict):
        raise DataError(f"{here}: expected an object with role and content, got {type(turn).__name__}")
    sharegpt = "from" in turn
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    spelled = turn.get(role_key)
    role = ROLE_ALIASES.get(str(spelled).lower()) if spelled is not None else None
    if role is None:
        if spelled is None:
            raise DataError(f"{here}: no '{role_key}'; each message needs a role and its content")
        match = closest(str(spelled).lower(), ROLE_ALIASES)
        aliases = ", ".join(alias for alias in ROLE_ALIASES if alias not in ("system", "user", "assistant", "tool"))
        raise DataError(
            f"{here}: unknown chat role '{spelled}'" + (f"; did you mean '{match}'?" if match else "")
            + f" (accepted: system, user, assistant, tool; also {aliases})"
        )  # fmt: skip
    extras = {k: v for k, v in turn.items() if k not in (role_key, content_key) and v is not None}
    content = turn.get(content_key)
    calls = extras.pop("tool_calls", None) or None
    if str(spelled).lower() == "function_call":  # ShareGPT: the value is the call itself, as JSON
        calls, content = _json(here, content, "the function call"), ""
        calls = calls if isinstance(calls, list) else [calls]
    if calls is not None:
        if role != "assistant":
            raise DataError(f"{here}: only assistant messages can have tool_calls, not '{spelled}'")
        if not isinstance(calls, list):
            raise DataError(f"{here}: 'tool_calls' must be a list")
    message = {"role": role, "content": _content(here, content, allow_null=calls is not None)}
    if calls is not None:
        message["tool_calls"] = [_tool_call(here, call) for call in calls]
    message.update(extras)
    return message


def _content(here: str, content: Any, allow_null: bool) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        if allow_null:  # OpenAI: an assistant turn that only calls tools has null content
            return ""
        raise DataError(f"{here}: no content")
    if not isinstance(content, list):
        raise DataError(f"{here}: content must be text or a list of text parts, got {type(content).__name__}")
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            kind = part.get("type", "untyped") if isinstance(part, dict) else type(part).__name__
            raise DataError(
                f"{here}: a '{kind}' content part; only text parts can be trained (xllm fine-tunes text models)",
                hint="drop the non-text parts, or turn them into text",
            )
    # Templates that accept content lists render the text parts one after the other, with nothing between.
    return "".join(texts)


def _json(here: str, value: Any, what: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise DataError(f"{here}: not valid JSON in {what} ({error.msg} at column {error.colno})") from None


def _tool_call(here: str, call: Any) -> dict[str, Any]:
    call = _json(here, call, "a tool call")
    if not isinstance(call, dict):
        raise DataError(f"{here}: a tool call must be an object, got {type(call).__name__}")
    function = call["function"] if isinstance(call.get("function"), dict) else call  # also the flat {name, arguments}
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise DataError(f"{here}: a tool call needs the name of its function")
    arguments = function.get("arguments", function.get("parameters"))
    arguments = _json(here, arguments, f"the arguments of tool call '{name}'")
    arguments = {} if arguments is None else without_nulls(arguments)
    if not isinstance(arguments, dict):
        raise DataError(f"{here}: the arguments of tool call '{name}' must be a JSON object")
    # Arguments as an object, as transformers' chat templates expect them (OpenAI sends a JSON string).
    normalised: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call.get("id") is not None:
        normalised["id"] = str(call["id"])
    return normalised


def normalise_tools(where: str, tools: Any) -> list[dict[str, Any]] | None:
    """Tool definitions as ``{"type": "function", "function": {name, description, parameters}}`` (also from a JSON
    string, or from bare ``{name, ...}`` definitions as LLaMA-Factory writes them); None when there are none."""
    tools = _json(where, tools, "'tools'")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise DataError(f"{where}: 'tools' must be a list of function definitions")
    normalised = []
    for tool in tools:
        tool = without_nulls(tool)
        function = tool.get("function") if isinstance(tool, dict) and isinstance(tool.get("function"), dict) else tool
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise DataError(f"{where}: each tool must be a function definition with a name")
        normalised.append({"type": "function", "function": function})
    return normalised


def without_nulls(value: Any) -> Any:
    """Drop null values from nested objects (Arrow fills every absent key of a struct column with null)."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value
