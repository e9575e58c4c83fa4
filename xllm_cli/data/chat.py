"""The ``chat`` dataset: OpenAI-style conversations, one ``{"messages": [{"role", "content"}, ...]}`` per record.

Roles are checked while preparing (system, user, assistant, tool), so a typo fails ``xllm download`` with the file and
line instead of failing hours later in training. Messages are kept as they are (extra keys such as ``tool_calls``
pass through to the chat template).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from xllm_cli.data.base import RawSample, check_messages
from xllm_cli.data.general import PreparedSampleDataset, map_splits, read_source
from xllm_cli.errors import DataError


def chat_sample(where: str, record: dict[str, Any]) -> RawSample:
    if "messages" not in record:
        raise DataError(f"{where}: missing field 'messages'; columns: {', '.join(map(str, record)) or 'none'}")
    check_messages(record["messages"], where)
    return {"messages": record["messages"]}


class ChatDataset(PreparedSampleDataset):
    """Conversations for models with a chat template; the collator renders them with the tokenizer's template."""

    @classmethod
    def get_data(cls, config: Any) -> tuple[Iterable[RawSample], Iterable[RawSample] | None]:
        return map_splits(read_source(config.dataset_source, config), chat_sample)
