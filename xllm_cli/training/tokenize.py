"""Tokenize once: prepared raw samples -> training samples -> token ids, cached in xllm's cache folder.

The cache lives in ``<cache>/tokenized/`` (``xllm_cli.cache``: ``--cache-dir``, else the user cache folder), never
beside the data, which is only read. Each entry is a folder named by a hash of everything that changes the
encodings: the data file's content, the tokenizer (its full serialisation, chat template and special tokens), the
collator class and its settings (``max_length``, separator) and the dataset class and its settings; where the cache
lives is not part of it. A second run with the same inputs memory-maps the cached arrays instead of tokenizing again;
under several processes one process per node builds it while the others wait (``distributed.main_process_first``).
An entry is written under a partial name and renamed when complete (``cleanup.built_atomically``): a failed or
interrupted run leaves nothing behind, and one killed outright leaves a partial folder the next run clears.

Packing does not change the encodings, only how they are grouped into rows, so it is not part of the key: rows are
planned from the cached lengths in one pass (``collators.packing.plan_rows``) and the same cache serves both modes.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.cache import make_tokenized_dir, mark_used, tokenized_dir
from xllm_cli.cleanup import built_atomically, clear_stale, sigterm_unwinds
from xllm_cli.collators.packing import pack_features, plan_rows
from xllm_cli.data.base import check_training_sample, iter_jsonl, read_prepared
from xllm_cli.errors import ConfigError, DataError
from xllm_cli.settings.config import XllmConfig
from xllm_cli.settings.index import PLUGIN_SECTION, section_of
from xllm_cli.training.distributed import main_process_first

# 2: chat masks of templates without a {% generation %} tag come from their prefixes (1 had them all zero).
CACHE_FORMAT = 2
CHUNK = 1000
# Dataset fields that shape the prepared file only (its content hash already covers them), or say where things are.
_FILE_ONLY_FIELDS = {
    "dataset_source",
    "dataset_format",
    "dataset_columns",
    "train_local_path_to_data",
    "eval_local_path_to_data",
    "shuffle",
    "max_eval_samples",
    "add_eval_to_train_if_no_path",
    "cache_dir",
}


class EncodedSamples:
    """Encoded samples stored flat (token ids, labels, offsets), memory-mapped from the cache when there is one."""

    def __init__(self, input_ids: Any, labels: Any, offsets: Any):
        self.input_ids, self.labels, self.offsets = input_ids, labels, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return {"input_ids": self.input_ids[start:end].tolist(), "labels": self.labels[start:end].tolist()}

    def lengths(self) -> list[int]:
        import numpy as np

        return np.diff(self.offsets).tolist()

    def tokens(self) -> int:
        return int(self.offsets[-1])


class PackedSamples:
    """Rows of several encoded samples each (see ``collators.packing``)."""

    def __init__(self, samples: EncodedSamples, max_length: int):
        self.samples = samples
        self.rows = plan_rows(samples.lengths(), max_length)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return pack_features([self.samples[i] for i in self.rows[index]])


@dataclass
class SampleSource:
    """Where training samples come from: a prepared JSON-lines file, or samples handed over in Python."""

    name: str  # "train" or "eval", for messages
    path: Path | None = None
    samples: Sequence[dict[str, Any]] | None = None

    def check_exists(self) -> None:
        if self.path is not None and not self.path.is_file():
            next(read_prepared(self.path, "train"))  # raises the contract's "run xllm download" error

    def training_samples(self, dataset: Any) -> Iterator[dict[str, Any]]:
        """Training samples: every prepared raw sample goes through the dataset class's ``get_sample`` (the
        contract); samples handed over in Python may already be training samples, which are taken as they are."""
        if self.samples is not None:
            for number, sample in enumerate(self.samples, start=1):
                where = f"{self.name} sample {number}"
                if isinstance(sample, dict) and ("text_parts" in sample or "messages" in sample):
                    yield check_training_sample(sample, where)
                else:
                    yield _to_training_sample(dataset, sample, where)
            return
        self.check_exists()
        for number, raw in iter_jsonl(self.path):
            yield _to_training_sample(dataset, raw, f"{self.path}:{number}")


def _to_training_sample(dataset: Any, sample: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        converted = dataset.get_sample(sample)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{where}: the dataset could not turn this sample into a training sample: {error}") from None
    return check_training_sample(converted, where)


def encode_source(source: SampleSource, dataset: Any, collator: Any, config: XllmConfig) -> EncodedSamples:
    """The encoded samples of ``source``, from the cache when a file's encodings are already there."""
    if source.path is None:
        # Samples handed over in Python: no file to key a cache on, so a private folder removed at exit (or at once
        # when encoding fails).
        folder = Path(tempfile.mkdtemp(prefix="xllm-encoded-"))
        atexit.register(shutil.rmtree, folder, True)
        try:
            with sigterm_unwinds():
                _write_encodings(folder, source, dataset, collator)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return _load(folder, source.name)

    source.check_exists()
    folder = cache_folder(source.path, cache_key(source.path, dataset, collator, config), config.cache_dir)
    with main_process_first(local=True, description="tokenization"):
        clear_stale(folder.parent)  # partial entries of this machine's processes that were killed outright
        if not (folder / "meta.json").is_file():
            _make_cache_folder(config.cache_dir)
            # Printed by whichever process tokenizes (one per node), so a log shows that the others did not.
            console.info(f"tokenizing {source.path} (cached in {folder})", every_process=True)
            with built_atomically(folder) as partial:
                _write_encodings(partial, source, dataset, collator)
        else:
            console.info(f"reusing tokenized {source.name} data from {folder}")
            mark_used(folder)
    return _load(folder, source.name)


def _make_cache_folder(cache_dir: str | None) -> None:
    try:
        make_tokenized_dir(cache_dir)
    except OSError as error:
        raise ConfigError(
            f"cannot write the tokenization cache to {tokenized_dir(cache_dir)} ({error.strerror or error})",
            hint="point --cache-dir (env XLLM_CACHE_DIR) at a writable folder",
        ) from None


def cache_folder(path: Path, key: str, cache_dir: str | None) -> Path:
    """The cache entry of the data file ``path`` for ``key`` in the cache folder (``cache_dir`` setting)."""
    return tokenized_dir(cache_dir) / f"{path.name}-{key[:16]}"


def cache_key(path: Path, dataset: Any, collator: Any, config: XllmConfig) -> str:
    settings = {
        name: getattr(config, name)
        for name in type(config).model_fields
        if name not in _FILE_ONLY_FIELDS
        and (section_of(type(config), name) == "data" or section_of(type(config), name).startswith(PLUGIN_SECTION))
    }
    identity = {
        "format": CACHE_FORMAT,
        "data": file_sha256(path),
        "tokenizer": tokenizer_fingerprint(collator.tokenizer),
        "collator": collator.cache_identity(),
        "dataset": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
        "dataset_settings": settings,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = [type(tokenizer).__name__, getattr(tokenizer, "chat_template", None), tokenizer.special_tokens_map]
    return hashlib.sha256((vocabulary + json.dumps(extra, sort_keys=True, default=str)).encode()).hexdigest()


def _chunks(samples: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_encodings(folder: Path, source: SampleSource, dataset: Any, collator: Any) -> None:
    """Encode in chunks, streaming token ids and labels to flat files in the (empty, existing) ``folder``."""
    import numpy as np

    lengths: list[int] = []
    cut_away = 0
    with (folder / "input_ids.i32").open("wb") as ids_file, (folder / "labels.i32").open("wb") as labels_file:
        for chunk in _chunks(source.training_samples(dataset), CHUNK):
            for encoded in collator.encode_batch(chunk):
                if encoded is None:
                    cut_away += 1
                    continue
                np.asarray(encoded["input_ids"], dtype=np.int32).tofile(ids_file)
                np.asarray(encoded["labels"], dtype=np.int32).tofile(labels_file)
                lengths.append(len(encoded["input_ids"]))
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    np.save(folder / "offsets.npy", offsets)
    meta = {"samples": len(lengths), "cut_away": cut_away, "tokens": int(offsets[-1])}
    (folder / "meta.json").write_text(json.dumps(meta))


def _load(folder: Path, name: str) -> EncodedSamples:
    import numpy as np

    meta = json.loads((folder / "meta.json").read_text())
    offsets = np.load(folder / "offsets.npy")
    encoded = EncodedSamples(*(_map(folder / file) for file in ("input_ids.i32", "labels.i32")), offsets)
    if meta["cut_away"]:
        console.warn(
            f"{name} data: {meta['cut_away']} sample(s) had every target token cut away by --max-length and are "
            f"skipped (raise --max-length to keep them)"
        )
    if meta["samples"] == 0:
        raise DataError(f"{name} data has no usable samples (every sample was empty or cut away)")
    return encoded


def _map(path: Path) -> Any:
    import numpy as np

    return np.memmap(path, dtype=np.int32, mode="r") if path.stat().st_size else np.zeros(0, dtype=np.int32)
