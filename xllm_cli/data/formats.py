"""Record formats of the ``general`` and ``chat`` datasets: detected by their columns, converted to training samples.

A source holds one format (``--dataset-format``, ``auto`` by default). ``auto`` decides on the first record of each
source, says in one line what it found and from which columns, and then holds every later record to it: a record of
another format, or a first record that fits two formats, is an error naming its file and line.

| format | columns (required, then optional) | general dataset | chat dataset |
| --- | --- | --- | --- |
| text | text (``--dataset-text-field``) | text_parts (split at ``--dataset-parts-separator``) | refused |
| parts | text_parts | text_parts | refused |
| messages | messages (OpenAI role/content); tools | messages | messages |
| sharegpt | conversations (from/value or role/content; also ``messages`` holding from/value); system, tools | messages | messages |
| alpaca | instruction, output; input, system, history | text_parts [Stanford alpaca prompt, output] | messages |
| prompt_completion | prompt, completion (both strings, or both message lists, as TRL); tools | text_parts, or messages | messages |

``text`` is the fallback: a record with structured columns (alpaca's ``instruction``/``output``...) and a ``text``
column is that structured format. Messages are normalised on the way (``data.messages``).
"""

from __future__ import annotations

from typing import Any

from xllm_cli import console
from xllm_cli.data.base import RawSample, check_training_sample
from xllm_cli.data.messages import normalise_messages, normalise_tools
from xllm_cli.errors import ConfigError, DataError, closest
from xllm_cli.settings.config import XllmConfig

FORMATS = ("text", "parts", "messages", "alpaca", "sharegpt", "prompt_completion")
# The columns each format reads, by role (a role is also the default column name): (required, optional).
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text": (("text",), ()),
    "parts": (("text_parts",), ()),
    "messages": (("messages",), ("tools",)),
    "sharegpt": (("conversations",), ("system", "tools")),
    "alpaca": (("instruction", "output"), ("input", "system", "history")),
    "prompt_completion": (("prompt", "completion"), ("tools",)),
}
ROLES = tuple(dict.fromkeys(role for required, optional in COLUMNS.values() for role in (*required, *optional)))
CHAT_ONLY = ("text", "parts")  # formats with no conversation in them
# The Stanford alpaca prompt (what axolotl's `alpaca` type renders).
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)


def parse_columns(value: str | None) -> dict[str, str]:
    """``instruction=question,output=answer`` -> {role: column}, every role checked against ``ROLES``."""
    pairs: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        role, equals, column = (part.strip() for part in item.partition("="))
        if not equals or not role or not column:
            raise ConfigError(
                f"--dataset-columns: '{item.strip()}' is not role=column (e.g. instruction=question,output=answer)"
            )
        if role not in ROLES:
            match = closest(role, ROLES)
            raise ConfigError(
                f"--dataset-columns: unknown role '{role}'" + (f"; did you mean '{match}'?" if match else "")
                + f" (roles: {', '.join(ROLES)})"
            )  # fmt: skip
        if role in pairs:
            raise ConfigError(f"--dataset-columns: role '{role}' is given twice")
        pairs[role] = column
    return pairs


def column_map(dataset_columns: str | None, text_field: str = "text") -> dict[str, str]:
    """Role -> column name: the role itself, ``--dataset-text-field`` for text, then ``--dataset-columns``."""
    mapping = {role: role for role in ROLES}
    mapping["text"] = text_field
    given = parse_columns(dataset_columns)
    if "text" in given and text_field != "text" and given["text"] != text_field:
        raise ConfigError(
            f"--dataset-columns text={given['text']} contradicts --dataset-text-field {text_field}: give one"
        )
    mapping.update(given)
    return mapping


def _present(record: dict[str, Any], column: str) -> bool:
    return record.get(column) is not None


def _sharegpt_turns(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "from" in value[0]


def formats_of(record: dict[str, Any], columns: dict[str, str]) -> list[str]:
    """Every format whose required columns this record has; ``text`` only when no other fits."""
    found = [
        name
        for name, (required, _) in COLUMNS.items()
        if name != "text" and all(_present(record, columns[role]) for role in required)
    ]
    if _sharegpt_turns(record.get(columns["messages"])):  # ShareGPT turns under a `messages` key
        found = [name for name in found if name not in ("messages", "sharegpt")] + ["sharegpt"]
    if not found and _present(record, columns["text"]):
        found.append("text")
    return found


def _columns_list(record: dict[str, Any]) -> str:
    return ", ".join(map(str, record)) or "none"


class RecordConverter:
    """Turns the records of one source into training samples for the ``general`` or the ``chat`` dataset."""

    def __init__(
        self,
        source: str,
        columns: dict[str, str],
        dataset_format: str = "auto",
        separator: str | None = None,
        target: str = "general",
        announce: bool = True,
    ):
        if dataset_format != "auto" and dataset_format not in FORMATS:
            raise ConfigError(
                f"--dataset-format: unknown format '{dataset_format}' (accepted: auto, {', '.join(FORMATS)})"
            )
        self.source, self.columns, self.separator = source, columns, separator
        self.target, self.announce = target, announce
        self.forced = dataset_format != "auto"
        self.format: str | None = dataset_format if self.forced else None
        self.detected_at = ""

    @classmethod
    def from_config(cls, source: str, config: XllmConfig, target: str) -> RecordConverter:
        columns = column_map(config.dataset_columns, config.dataset_text_field)
        return cls(source, columns, config.dataset_format, config.dataset_parts_separator, target)

    def __call__(self, where: str, record: dict[str, Any]) -> RawSample:
        if self.format is None:
            self.format = self._detect(where, record)
        elif not self.forced and not self._fits(record):
            found = formats_of(record, self.columns)
            if found and self.format not in found:
                raise DataError(
                    f"{where}: this record is {found[0]} data (columns {_columns_list(record)}) but the records "
                    f"before it are {self.format} (detected at {self.detected_at}); a source holds one format",
                    hint="split the file by format and give both: --dataset-source a.jsonl,b.jsonl",
                )
        if self.target == "chat" and self.format in CHAT_ONLY:
            raise DataError(
                f"{where}: the chat dataset trains conversations, and {self.source} is {self.format} data",
                hint="use --dataset-key general for text",
            )
        # Converters build valid training samples (prepare checks each one again through the dataset's get_sample).
        return getattr(self, f"_{self.format}")(where, record)

    def _fits(self, record: dict[str, Any]) -> bool:
        """The record has the required columns of the source's format (the cheap test, done on every record)."""
        required = COLUMNS[self.format][0]
        if self.format == "sharegpt" and not _present(record, self.columns["conversations"]):
            required = ("messages",)
        return all(_present(record, self.columns[role]) for role in required)

    def _detect(self, where: str, record: dict[str, Any]) -> str:
        found = formats_of(record, self.columns)
        if not found:
            shapes = "; ".join(
                f"{name}: {', '.join(self.columns[r] for r in req)}" for name, (req, _) in COLUMNS.items()
            )
            raise DataError(
                f"{where}: no known format in the columns {_columns_list(record)} (formats and their columns: {shapes})",
                hint="map other column names with --dataset-columns, e.g. instruction=question,output=answer",
            )
        if len(found) > 1:
            raise DataError(
                f"{where}: the columns {_columns_list(record)} fit several formats ({', '.join(found)})",
                hint="choose one with --dataset-format",
            )
        name = found[0]
        self.detected_at = where
        if self.announce:
            required, optional = COLUMNS[name]
            used = [self.columns[r] for r in (*required, *optional) if _present(record, self.columns[r])]
            if name == "sharegpt" and not _present(record, self.columns["conversations"]):
                used.insert(0, self.columns["messages"])
            ignored = self.columns["text"] if name != "text" and _present(record, self.columns["text"]) else None
            console.info(
                f"{self.source}: {name} format, detected from the columns {', '.join(used)}"
                + (f" ('{ignored}' is not used; --dataset-format text trains on it)" if ignored else "")
            )
        return name

    # --- reading columns ---------------------------------------------------------------------------------------------
    def _get(self, where: str, record: dict[str, Any], role: str, required: bool = True) -> Any:
        column = self.columns[role]
        value = record.get(column)
        if value is None and required:
            raise DataError(
                f"{where}: missing field '{column}' ({self.format} format); columns: {_columns_list(record)}",
                hint="choose the text column with --dataset-text-field"
                if role == "text"
                else "map other column names with --dataset-columns, e.g. instruction=question",
            )
        return value

    def _string(self, where: str, record: dict[str, Any], role: str, required: bool = True) -> str | None:
        value = self._get(where, record, role, required)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: field '{self.columns[role]}' must be a string, got {type(value).__name__}")
        return value

    def _tools(self, where: str, record: dict[str, Any]) -> list[dict[str, Any]] | None:
        return normalise_tools(where, self._get(where, record, "tools", required=False))

    # --- one converter per format ------------------------------------------------------------------------------------
    def _text(self, where: str, record: dict[str, Any]) -> RawSample:
        text = self._string(where, record, "text")
        return {"text_parts": text.split(self.separator) if self.separator else [text]}

    def _parts(self, where: str, record: dict[str, Any]) -> RawSample:
        return check_training_sample({"text_parts": self._get(where, record, "text_parts")}, where)

    def _messages(self, where: str, record: dict[str, Any]) -> RawSample:
        messages = normalise_messages(where, self._get(where, record, "messages"), self.columns["messages"])
        return chat(messages, self._tools(where, record))

    def _sharegpt(self, where: str, record: dict[str, Any]) -> RawSample:
        column = self.columns["conversations"]
        if not _present(record, column) and _present(record, self.columns["messages"]):
            column = self.columns["messages"]  # ShareGPT turns under a `messages` key
        turns = self._get(where, record, "conversations") if column == self.columns["conversations"] else record[column]
        messages = normalise_messages(where, turns, column)  # from/value and role/content turns alike
        return chat(with_system(messages, self._string(where, record, "system", False)), self._tools(where, record))

    def _alpaca(self, where: str, record: dict[str, Any]) -> RawSample:
        instruction, output = self._string(where, record, "instruction"), self._string(where, record, "output")
        extra, system = self._string(where, record, "input", False), self._string(where, record, "system", False)
        history = alpaca_history(where, self._get(where, record, "history", False), self.columns["history"])
        if self.target == "chat":
            messages = [message for q, a in history for message in (user(q), assistant(a))]
            messages += [user(f"{instruction}\n{extra}" if extra else instruction), assistant(output)]
            return {"messages": with_system(messages, system)}
        prompt = (system or (ALPACA_PREAMBLE_INPUT if extra else ALPACA_PREAMBLE)) + "\n\n"
        prompt += "".join(f"### Instruction:\n{q}\n\n### Response:\n{a}\n\n" for q, a in history)
        prompt += f"### Instruction:\n{instruction}\n\n" + (f"### Input:\n{extra}\n\n" if extra else "")
        return {"text_parts": [prompt + "### Response:", output]}

    def _prompt_completion(self, where: str, record: dict[str, Any]) -> RawSample:
        prompt, completion = self._get(where, record, "prompt"), self._get(where, record, "completion")
        if isinstance(prompt, str) and isinstance(completion, str):
            if self.target == "general":
                return {"text_parts": [prompt, completion]}
            return {"messages": [user(prompt), assistant(completion)]}
        if isinstance(prompt, list) and isinstance(completion, list):
            messages = normalise_messages(where, prompt, self.columns["prompt"])
            messages += normalise_messages(where, completion, self.columns["completion"], first=len(prompt) + 1)
            return chat(messages, self._tools(where, record))
        raise DataError(
            f"{where}: '{self.columns['prompt']}' and '{self.columns['completion']}' must both be strings or both "
            f"lists of messages, got {type(prompt).__name__} and {type(completion).__name__}"
        )


def user(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def chat(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> RawSample:
    return {"messages": messages, "tools": tools} if tools else {"messages": messages}


def with_system(messages: list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    """A top-level system prompt as the first message, unless the conversation already starts with one."""
    if system and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *messages]
    return messages


def alpaca_history(where: str, history: Any, column: str) -> list[tuple[str, str]]:
    if history is None:
        return []
    pairs = history if isinstance(history, list) else None
    if pairs is None or not all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(s, str) for s in pair) for pair in pairs
    ):
        raise DataError(f"{where}: '{column}' must be a list of [instruction, response] pairs of strings")
    return [(q, a) for q, a in pairs]


def general_sample(
    where: str, record: dict[str, Any], text_field: str = "text", separator: str | None = None
) -> RawSample:
    """One record of any format as a general training sample, its format detected from this record alone."""
    return RecordConverter(where, column_map(None, text_field), "auto", separator, "general", announce=False)(
        where, record
    )
