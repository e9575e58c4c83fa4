"""The dataset contract, and the JSON-lines format of prepared data.

A dataset class (registered under a key, see ``xllm_cli.registry``) does two things:

- ``get_data(config) -> (train, eval or None)`` (classmethod): read the source and return raw samples, each a
  JSON-serialisable dict. ``xllm download`` writes them as JSON lines to ``train_local_path_to_data`` (and
  ``eval_local_path_to_data``). Iterables are fine: they are streamed, never held in memory by xllm.
- ``get_sample(raw) -> training sample`` (instance method, the instance holds ``self.config``): turn one raw sample
  into either ``{"text_parts": [str, ...]}`` (ordered parts; for the completion collator the last part is the target)
  or ``{"messages": [{"role": ..., "content": ...}, ...]}`` (chat, rendered with the tokenizer's chat template;
  optional ``"tools"``, and ``tool_calls`` on assistant messages, as transformers' chat templates take them).

A plugin may declare ``settings_model``: a pydantic model of the extra settings it reads from ``self.config``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from xllm_cli.errors import DataError
from xllm_cli.settings.config import XllmConfig

RawSample = dict[str, Any]
TrainingSample = dict[str, Any]
CHAT_ROLES = ("system", "user", "assistant", "tool")


class Dataset:
    """Base class for datasets. Subclass it (or just provide the two methods) and register it under a key."""

    settings_model: ClassVar[Any] = None

    def __init__(self, config: XllmConfig):
        self.config = config

    @classmethod
    def get_data(cls, config: XllmConfig) -> tuple[Iterable[RawSample], Iterable[RawSample] | None]:
        raise NotImplementedError

    def get_sample(self, raw: RawSample) -> TrainingSample:
        raise NotImplementedError


def check_training_sample(sample: Any, where: str) -> TrainingSample:
    """Reject a training sample that is neither text parts nor chat messages, naming where it came from."""
    if not isinstance(sample, dict):
        raise DataError(f"{where}: a training sample must be a dict, got {type(sample).__name__}")
    if "text_parts" in sample:
        parts = sample["text_parts"]
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
            raise DataError(f"{where}: 'text_parts' must be a non-empty list of strings")
        return sample
    if "messages" in sample:
        check_messages(sample["messages"], where)
        tools = sample.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
            raise DataError(f"{where}: 'tools' must be a list of function definitions")
        return sample
    raise DataError(f"{where}: a training sample needs 'text_parts' or 'messages', got keys {sorted(sample)}")


def check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DataError(f"{where}: message {number} needs 'role' and 'content'")
        if message["role"] not in CHAT_ROLES:
            raise DataError(
                f"{where}: message {number}: unknown chat role '{message['role']}' (accepted: {', '.join(CHAT_ROLES)})"
            )
        if not isinstance(message["content"], str):
            raise DataError(
                f"{where}: message {number}: content must be a string ('xllm download' joins lists of text parts)"
            )
        calls = message.get("tool_calls")
        if calls is not None and (message["role"] != "assistant" or not isinstance(calls, list)):
            raise DataError(f"{where}: message {number}: 'tool_calls' must be a list, on an assistant message")


def decoded_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file, streamed; invalid UTF-8 is one error naming the line."""
    path = Path(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}:{number}: not valid UTF-8 text") from None
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, RawSample]]:
    """Stream (line number, object) from a JSON-lines file; a bad line is one error naming file and line."""
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: malformed JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def read_prepared(path: str | Path, step: str = "train") -> Iterator[RawSample]:
    """The raw samples ``xllm download`` prepared. A missing file tells the user what to run."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"prepared data not found: {path}",
            hint=f"run 'xllm download' with the same settings before 'xllm {step}'"
            + (" (or give --dataset-source: train then prepares it)" if step == "train" else ""),
        )
    for _, sample in iter_jsonl(path):
        yield sample
