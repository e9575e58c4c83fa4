"""The ``chat`` dataset: conversations, rendered later with the chat template, with the loss on assistant turns.

Records may be OpenAI messages (with tool calls and tools), ShareGPT conversations, alpaca or prompt/completion rows
(``xllm_cli.data.formats``); each becomes ``{"messages": [{"role", "content"}, ...]}`` (plus ``"tools"``). Roles and
contents are checked while preparing, so a typo fails ``xllm download`` with the file and line instead of failing
hours later in training.
"""

from __future__ import annotations

from collections.abc import Iterable

from xllm_cli.data.base import RawSample
from xllm_cli.data.general import PreparedSampleDataset, read_sources
from xllm_cli.settings.config import XllmConfig


class ChatDataset(PreparedSampleDataset):
    """Conversations for models with a chat template (``--chat-template`` gives one to a model without)."""

    @classmethod
    def get_data(cls, config: XllmConfig) -> tuple[Iterable[RawSample], Iterable[RawSample] | None]:
        return read_sources(config, "chat")
