"""The ``soda`` dataset: allenai/soda, social dialogues with a narrative.

A raw sample is ``{"header": narrative, "dialog": ["speaker: phrase", ...]}``; the training sample is the dialog
lines as text parts, preceded by the header except with probability ``soda_drop_header_probability`` (so the model
also learns to continue a dialogue without its summary). Rows repeating an ``original_index`` already seen (in either
split) are dropped, as the original tool did.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

from xllm_cli.data.base import Dataset, RawSample, TrainingSample
from xllm_cli.data.general import Located, read_source
from xllm_cli.errors import DataError
from xllm_cli.settings.config import XllmConfig

HUB_ID = "allenai/soda"
HEADER_KEY = "header"
DIALOG_KEY = "dialog"
REQUIRED_COLUMNS = ("narrative", "dialogue", "speakers")


def _one_line(text: str) -> str:
    """A phrase never carries raw newlines: they would look like a new speaker turn to the model."""
    return " ".join(text.splitlines()).strip()


def soda_sample(where: str, row: dict[str, Any]) -> RawSample:
    for column in REQUIRED_COLUMNS:
        if row.get(column) is None:
            raise DataError(f"{where}: missing field '{column}' of the SODA schema")
    speakers, phrases = row["speakers"], row["dialogue"]
    if not isinstance(phrases, list) or not isinstance(speakers, list) or len(speakers) != len(phrases):
        raise DataError(f"{where}: 'speakers' and 'dialogue' must be lists of the same length")
    dialog = [
        f"{_one_line(str(speaker))}: {_one_line(str(phrase))}"
        for speaker, phrase in zip(speakers, phrases, strict=True)
    ]
    return {HEADER_KEY: _one_line(str(row["narrative"])), DIALOG_KEY: dialog}


def _deduplicated(records: Iterable[Located], seen: set) -> Iterator[RawSample]:
    for where, row in records:
        index = row.get("original_index")
        if index is not None:
            if index in seen:
                continue
            seen.add(index)
        yield soda_sample(where, row)


class SodaDataset(Dataset):
    """SODA from ``--dataset-source`` (a local file or folder in SODA's column schema, or a hub id) or the Hub."""

    def __init__(self, config: XllmConfig):
        super().__init__(config)
        # Seeded, so the same seed drops the same headers in the same order.
        self.rng = random.Random(config.seed)

    @classmethod
    def get_data(cls, config: XllmConfig) -> tuple[Iterable[RawSample], Iterable[RawSample] | None]:
        train, eval_records = read_source(config.dataset_source or HUB_ID, config)
        seen: set = set()  # shared: a dialogue in train is not repeated in eval
        return _deduplicated(train, seen), _deduplicated(eval_records, seen) if eval_records is not None else None

    def get_sample(self, raw: RawSample) -> TrainingSample:
        try:
            header, dialog = raw[HEADER_KEY], raw[DIALOG_KEY]
        except KeyError as missing:
            raise DataError(
                f"soda sample: missing field {missing} (was the file prepared by 'xllm download'?)"
            ) from None
        parts = [_one_line(phrase) for phrase in dialog]
        if header and self.rng.random() >= self.config.soda_drop_header_probability:
            parts.insert(0, header)
        return {"text_parts": parts}
