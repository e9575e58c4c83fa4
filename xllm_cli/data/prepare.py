"""Prepare a dataset: stream its raw samples into JSON-lines files, safely and in bounded memory.

- Every raw sample is checked on the way (JSON-serialisable, and ``get_sample`` turns it into a valid training
  sample), so bad data fails here, with where it came from, and not hours into training.
- Outputs are written to hidden temporary files in the target folders and renamed only when everything succeeded:
  a failure leaves an earlier ``train.jsonl`` exactly as it was.
- Eval handling follows the original tool: with no eval path the eval samples are dropped (said out loud) or, with
  ``add_eval_to_train_if_no_path``, added to train; with an eval path, samples beyond ``max_eval_samples`` move to
  train.
- Shuffling is an external "scatter, then shuffle each bucket" shuffle (see ``shuffle_lines``): memory stays at one
  bucket (~32 MiB of text) however large the file, and the same seed gives the same file.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from xllm_cli import console
from xllm_cli.console import Advance, progress
from xllm_cli.data.base import check_training_sample
from xllm_cli.errors import ConfigError, DataError
from xllm_cli.registry import load
from xllm_cli.settings.config import XllmConfig

# The largest chunk of the train file held in memory while shuffling.
BUCKET_BYTES = 32 * 2**20
# Bucket files open at once; a bigger file gets bigger buckets rather than more open files.
MAX_BUCKETS = 256


@dataclass
class PreparedData:
    """What ``prepare_dataset`` wrote."""

    train_path: Path
    train_samples: int
    eval_path: Path | None = None
    eval_samples: int = 0


class AtomicJsonl:
    """JSON lines written to a hidden temporary file next to ``target``; ``commit`` renames it into place."""

    def __init__(self, target: Path):
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        self.temporary = Path(name)
        self.handle: IO[bytes] = os.fdopen(descriptor, "wb")
        self.samples = 0
        self.bytes = 0

    def write(self, sample: Any, where: str) -> None:
        try:
            line = (json.dumps(sample, ensure_ascii=False) + "\n").encode("utf-8")
        except (TypeError, ValueError) as error:
            raise DataError(f"{where}: the sample cannot be written as JSON ({error})") from None
        self.handle.write(line)
        self.samples += 1
        self.bytes += len(line)

    def commit(self) -> None:
        self.handle.close()
        os.replace(self.temporary, self.target)

    def discard(self) -> None:
        self.handle.close()
        self.temporary.unlink(missing_ok=True)


def _read_lines(path: Path) -> list[bytes]:
    # readlines, not read_bytes().splitlines(): the whole bucket is never held twice.
    with path.open("rb") as handle:
        return handle.readlines()


def shuffle_lines(source: Path, target: IO[bytes], total_bytes: int, seed: int) -> None:
    """Write the lines of ``source`` to ``target`` in a random order fixed by ``seed``, in bounded memory.

    Each line goes to one of K bucket files chosen uniformly at random, then each bucket is shuffled in memory and
    appended. Random scatter plus a uniform shuffle within each bucket gives a uniform permutation of the whole file,
    while only one bucket (about ``BUCKET_BYTES``) is ever in memory. Small files are a single bucket.
    """
    rng = random.Random(seed)
    buckets = min(MAX_BUCKETS, max(1, math.ceil(total_bytes / BUCKET_BYTES)))
    if buckets == 1:
        lines = _read_lines(source)
        rng.shuffle(lines)
        target.writelines(lines)
        return
    with tempfile.TemporaryDirectory(prefix=".xllm-shuffle-", dir=source.parent) as folder:
        paths = [Path(folder) / f"bucket-{index}" for index in range(buckets)]
        handles = [path.open("wb") for path in paths]
        try:
            with source.open("rb") as lines:
                for line in lines:
                    handles[rng.randrange(buckets)].write(line)
        finally:
            for handle in handles:
                handle.close()
        for path in paths:
            lines = _read_lines(path)
            path.unlink()
            rng.shuffle(lines)
            target.writelines(lines)
            del lines


def _shuffle_in_place(writer: AtomicJsonl, seed: int) -> None:
    """Replace the writer's (closed) temporary file by a shuffled copy, still under a temporary name."""
    writer.handle.close()
    shuffled = AtomicJsonl(writer.target)
    try:
        shuffle_lines(writer.temporary, shuffled.handle, writer.bytes, seed)
    except BaseException:
        shuffled.discard()
        raise
    writer.temporary.unlink()
    shuffled.handle.close()
    writer.temporary, writer.handle = shuffled.temporary, shuffled.handle


def _write_all(
    samples: Iterable[Any], split: str, dataset: Any, writers: list[tuple[AtomicJsonl, int | None]], advance: Advance
) -> None:
    """Check and write each sample to the first writer with room (a limit of None means no limit)."""
    key = getattr(dataset.config, "dataset_key", "?")
    for number, raw in enumerate(samples, start=1):
        where = f"dataset '{key}' {split} sample {number}"
        check_training_sample(dataset.get_sample(raw), where)
        writer = next(w for w, limit in writers if limit is None or w.samples < limit)
        writer.write(raw, where)
        advance()


def _count(samples: Any) -> str:
    return f"{len(samples):,} " if hasattr(samples, "__len__") else ""


def prepare_dataset(config: XllmConfig, dataset_cls: Any = None) -> PreparedData:
    """Write the train (and eval) JSON lines of the dataset ``config.dataset_key`` selects (or ``dataset_cls``)."""

    dataset_cls = dataset_cls or load("datasets", config.dataset_key)
    train_path = Path(config.train_local_path_to_data)
    eval_path = Path(config.eval_local_path_to_data) if config.eval_local_path_to_data else None
    if eval_path is not None and eval_path.resolve() == train_path.resolve():
        raise ConfigError("--eval-local-path-to-data must differ from --train-local-path-to-data")
    train, eval_samples = dataset_cls.get_data(config)
    dataset = dataset_cls(config)
    writers: list[AtomicJsonl] = []
    try:
        train_writer = AtomicJsonl(train_path)
        writers.append(train_writer)
        eval_writer = None
        with progress(f"preparing {config.dataset_key}", unit="samples") as advance:
            _write_all(train or (), "train", dataset, [(train_writer, None)], advance)
            if eval_samples is not None and eval_path is not None:
                eval_writer = AtomicJsonl(eval_path)
                writers.append(eval_writer)
                # The first max_eval_samples stay eval; the overflow moves to train.
                limits = [(eval_writer, config.max_eval_samples), (train_writer, None)]
                _write_all(eval_samples, "eval", dataset, limits, advance)
            elif eval_samples is not None and config.add_eval_to_train_if_no_path:
                console.info("no --eval-local-path-to-data: adding the eval samples to train")
                _write_all(eval_samples, "eval", dataset, [(train_writer, None)], advance)
        if eval_samples is not None and eval_path is None and not config.add_eval_to_train_if_no_path:
            console.warn(
                f"dataset '{config.dataset_key}' has {_count(eval_samples)}eval samples; they are dropped because "
                f"--eval-local-path-to-data is unset (--add-eval-to-train-if-no-path adds them to train instead)"
            )
        elif eval_samples is None and eval_path is not None:
            console.warn(f"dataset '{config.dataset_key}' has no eval data; nothing is written to {eval_path}")
        if train_writer.samples == 0:
            raise DataError(f"dataset '{config.dataset_key}' produced no train samples; nothing was written")
        if config.shuffle:
            _shuffle_in_place(train_writer, config.seed)
        for writer in writers:  # only now, when every output is complete, replace the old files
            writer.commit()
    except BaseException:
        for writer in writers:
            writer.discard()
        raise
    prepared = PreparedData(train_path, train_writer.samples)
    console.info(f"train: {train_writer.samples:,} samples -> {train_path}")
    if eval_writer is not None:
        prepared.eval_path, prepared.eval_samples = eval_path, eval_writer.samples
        console.info(f"eval: {eval_writer.samples:,} samples -> {eval_path}")
    return prepared
