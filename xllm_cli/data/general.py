"""The ``general`` dataset, and the readers every built-in dataset shares.

A source is a local file (.jsonl, .json, .txt one sample per line, .csv, .parquet), a local folder holding
``train.<ext>`` and optionally ``test.<ext>`` / ``validation.<ext>``, or a Hugging Face Hub dataset id. Files are
streamed record by record, so a file of any size is read in bounded memory (except a .json file holding one big
array, which is parsed whole). Every record comes with where it came from (``file:line``) for error messages.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from xllm_cli.data.base import (
    Dataset,
    RawSample,
    TrainingSample,
    check_messages,
    check_training_sample,
    decoded_lines,
    iter_jsonl,
)
from xllm_cli.errors import ConfigError, DataError
from xllm_cli.registry import KEY_FIELDS

FILE_TYPES = (".jsonl", ".json", ".txt", ".csv", ".parquet")
EVAL_SPLITS = ("test", "validation", "valid", "eval")
# Record = (where it came from, the record itself).
Located = tuple[str, dict[str, Any]]
Splits = tuple[Iterable[Located], Iterable[Located] | None]


def _check_file(path: Path) -> str:
    """The file's type, after refusing unknown types, empty files and binary content in a text format."""
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise ConfigError(f"{path}: unknown file type '{suffix or '(none)'}' (accepted: {', '.join(FILE_TYPES)})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if suffix != ".parquet":
        with path.open("rb") as handle:
            if b"\x00" in handle.read(8192):
                raise DataError(f"{path}: looks like a binary file (it contains NUL bytes), not {suffix} text")
    return suffix


def _json_records(path: Path) -> Iterator[Located]:
    first = next((text.lstrip()[:1] for _, text in decoded_lines(path) if text.strip()), "")
    if first != "[":  # JSON lines under a .json name, as the Hub often ships them
        yield from ((f"{path}:{number}", obj) for number, obj in iter_jsonl(path))
        return
    try:
        items = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: malformed JSON ({error.msg} at column {error.colno})") from None
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{path}: item {index}: expected a JSON object, got {type(item).__name__}")
        yield f"{path}: item {index}", item


def _csv_records(path: Path) -> Iterator[Located]:
    lines = (text for _, text in decoded_lines(path))
    reader = csv.DictReader(lines)
    try:
        for row in reader:
            yield f"{path}:{reader.line_num}", dict(row)
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None


def _parquet_records(path: Path) -> Iterator[Located]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as error:
        raise DataError(f"{path}: not a readable parquet file ({error})") from None
    row = 0
    for batch in table.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield f"{path}: row {row}", record


def iter_file_records(path: str | Path, text_field: str = "text") -> Iterator[Located]:
    """Stream (where, record) from a local file; a .txt line becomes ``{text_field: line}``."""
    path = Path(path)
    suffix = _check_file(path)
    if suffix == ".jsonl":
        yield from ((f"{path}:{number}", obj) for number, obj in iter_jsonl(path))
    elif suffix == ".json":
        yield from _json_records(path)
    elif suffix == ".csv":
        yield from _csv_records(path)
    elif suffix == ".parquet":
        yield from _parquet_records(path)
    else:
        for number, text in decoded_lines(path):
            if text.strip():
                yield f"{path}:{number}", {text_field: text.rstrip("\r\n")}


def _split_file(folder: Path, names: Iterable[str]) -> Path | None:
    for name in names:
        for suffix in FILE_TYPES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    return None


def _hub_records(dataset_id: str, config: Any) -> Splits:
    import datasets

    try:
        loaded = datasets.load_dataset(dataset_id, token=config.secret("huggingface_hub_token"))
    except Exception as error:
        raise DataError(f"could not load dataset '{dataset_id}' from the Hugging Face Hub: {error}") from None
    if "train" not in loaded:
        raise DataError(f"dataset '{dataset_id}' has no train split (splits: {', '.join(loaded)})")

    def rows(split: str) -> Iterator[Located]:
        for index, record in enumerate(loaded[split]):
            yield f"{dataset_id}[{split}] row {index + 1}", record

    eval_split = next((name for name in EVAL_SPLITS if name in loaded), None)
    return rows("train"), rows(eval_split) if eval_split else None


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FILE_TYPES


def read_source(source: str | None, config: Any, text_field: str = "text") -> Splits:
    """Train and eval records of a local file, a local folder of split files, or a hub dataset id."""
    if not source:
        key = getattr(config, KEY_FIELDS["datasets"])
        raise ConfigError(f"dataset '{key}' needs --dataset-source (a local file or a hub dataset id)")
    path = Path(source).expanduser()
    if path.is_file():
        return iter_file_records(path, text_field), None
    if path.is_dir():
        train = _split_file(path, ("train",))
        if train is None:
            raise ConfigError(f"--dataset-source {path}: no train file in the folder (train{{{','.join(FILE_TYPES)}}})")
        test = _split_file(path, EVAL_SPLITS)
        return iter_file_records(train, text_field), iter_file_records(test, text_field) if test else None
    if looks_like_path(source):
        raise ConfigError(f"--dataset-source: no such file or folder: {source}")
    return _hub_records(source, config)


def map_splits(
    splits: Splits, to_sample: Callable[[str, dict[str, Any]], RawSample]
) -> tuple[Iterator, Iterator | None]:
    """Turn located records of both splits into raw samples, lazily (nothing is held in memory)."""

    def convert(records: Iterable[Located]) -> Iterator[RawSample]:
        for where, record in records:
            yield to_sample(where, record)

    train, eval_records = splits
    return convert(train), convert(eval_records) if eval_records is not None else None


class PreparedSampleDataset(Dataset):
    """A dataset whose raw samples already are training samples: ``get_sample`` checks them and passes them on."""

    def get_sample(self, raw: RawSample) -> TrainingSample:
        return check_training_sample(raw, f"dataset '{getattr(self.config, 'dataset_key', '?')}' sample")


def general_sample(where: str, record: dict[str, Any], text_field: str, separator: str | None) -> RawSample:
    """A record as a raw sample: ``text_parts`` or ``messages`` columns as they are, else the text field."""
    if record.get("text_parts") is not None:
        return check_training_sample({"text_parts": record["text_parts"]}, where)
    if record.get("messages") is not None:
        check_messages(record["messages"], where)
        return {"messages": record["messages"]}
    if text_field not in record:
        raise DataError(
            f"{where}: missing field '{text_field}' (nor 'text_parts' or 'messages'); "
            f"columns: {', '.join(map(str, record)) or 'none'}",
            hint="choose the text column with --dataset-text-field",
        )
    text = record[text_field]
    if not isinstance(text, str):
        raise DataError(f"{where}: field '{text_field}' must be a string, got {type(text).__name__}")
    parts = text.split(separator) if separator else [text]
    return {"text_parts": parts}


class GeneralDataset(PreparedSampleDataset):
    """Any text source: a text column (optionally split into parts), or ``text_parts`` / ``messages`` columns."""

    @classmethod
    def get_data(cls, config: Any) -> tuple[Iterable[RawSample], Iterable[RawSample] | None]:
        field, separator = config.dataset_text_field, config.dataset_parts_separator
        splits = read_source(config.dataset_source, config, field)
        return map_splits(splits, lambda where, record: general_sample(where, record, field, separator))
