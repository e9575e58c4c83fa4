"""The ``general`` dataset, and the readers every built-in dataset shares.

A source is a local file (.jsonl, .json, .txt one sample per line, .csv, .parquet), a local folder holding
``train.<ext>`` and optionally ``test.<ext>`` / ``validation.<ext>``, or a Hugging Face Hub dataset id. Files are
streamed record by record, so a file of any size is read in bounded memory (except a .json file holding one big
array, which is parsed whole). Every record comes with where it came from (``file:line``) for error messages.

``--dataset-source`` may list several sources, ``a.jsonl:3,org/set,b.json:0.5``: each is read in its own format and
the train records of a source with weight w come w times over (``read_sources``).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.data.base import (
    Dataset,
    RawSample,
    TrainingSample,
    check_training_sample,
    decoded_lines,
    iter_jsonl,
)
from xllm_cli.data.formats import RecordConverter, column_map
from xllm_cli.data.formats import general_sample as general_sample  # quantize's calibration reads records with it
from xllm_cli.errors import ConfigError, DataError
from xllm_cli.registry import KEY_FIELDS
from xllm_cli.settings.config import XllmConfig

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


def _hub_records(dataset_id: str, config: XllmConfig) -> Splits:
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


def read_source(source: str | None, config: XllmConfig, text_field: str = "text") -> Splits:
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


class PreparedSampleDataset(Dataset):
    """A dataset whose raw samples already are training samples: ``get_sample`` checks them and passes them on."""

    def get_sample(self, raw: RawSample) -> TrainingSample:
        return check_training_sample(raw, f"dataset '{getattr(self.config, 'dataset_key', '?')}' sample")


def parse_sources(value: str) -> list[tuple[str, float]]:
    """``a.jsonl:3,org/set,b.json:0.5`` -> [(source, weight), ...]; a weight is a positive number after the last ':'."""
    entries = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            raise ConfigError(f"--dataset-source: empty entry in '{value}' (give a comma list: a.jsonl,b.json:2)")
        source, colon, tail = item.rpartition(":")
        try:
            weight = float(tail) if colon and source else None
        except ValueError:
            weight = None
        if weight is None:
            source, weight = item, 1.0
        if not weight > 0 or weight == float("inf"):
            raise ConfigError(f"--dataset-source {item}: the weight must be a positive number, got {tail}")
        entries.append((source, weight))
    return entries


def _weighted(first_pass: Iterable[Located], again: Callable[[], Iterable[Located]], weight: float, rng: random.Random):
    """The records ``weight`` times over: whole passes, then each record once more with probability of the rest."""
    whole = int(weight)
    for number in range(math.ceil(weight)):
        keep = 1.0 if number < whole else weight - whole
        for located in first_pass if number == 0 else again():
            if keep == 1.0 or rng.random() < keep:
                yield located


def read_sources(config: XllmConfig, target: str) -> tuple[Iterator[RawSample], Iterator[RawSample] | None]:
    """Training samples of every ``--dataset-source`` entry, each source in its own format (``data.formats``).

    Train records of a source with weight w come w times (see ``_weighted``; the draws are fixed by the seed); eval
    records come once. Every source is opened (and a missing one reported) before anything is read.
    """
    if not config.dataset_source:
        read_source(None, config)  # the "needs --dataset-source" error
    text_column = column_map(config.dataset_columns, config.dataset_text_field)["text"]
    entries = parse_sources(config.dataset_source)
    trains, evals = [], []
    for index, (source, weight) in enumerate(entries):
        convert = RecordConverter.from_config(source, config, target)
        train, eval_records = read_source(source, config, text_column)
        rng = random.Random(f"{config.seed}/{index}/{source}")
        again = lambda source=source: read_source(source, config, text_column)[0]  # noqa: E731
        trains.append(itertools.starmap(convert, _weighted(train, again, weight, rng)))
        if eval_records is not None:
            evals.append(itertools.starmap(convert, eval_records))
    if len(entries) > 1 or entries[0][1] != 1:
        console.info("mixing " + ", ".join(f"{source} x{weight:g}" for source, weight in entries))
    return itertools.chain.from_iterable(trains), itertools.chain.from_iterable(evals) if evals else None


class GeneralDataset(PreparedSampleDataset):
    """Any text source: text, text parts, chat messages, ShareGPT, alpaca or prompt/completion records
    (``xllm_cli.data.formats``), from one or several sources."""

    @classmethod
    def get_data(cls, config: XllmConfig) -> tuple[Iterable[RawSample], Iterable[RawSample] | None]:
        return read_sources(config, "general")
