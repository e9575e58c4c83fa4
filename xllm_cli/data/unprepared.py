"""``xllm train`` on data that ``xllm download`` has not prepared.

- The prepared train file is missing and ``--dataset-source`` is given: it is prepared now, by the code of
  ``xllm download`` (``prepare_dataset``), into the same file, and said in one line. Under several processes the main
  process of each node prepares while the others wait. An existing file is used as it is (``xllm download`` refreshes
  it), and without ``--dataset-source`` a missing file is still the "run xllm download" error.
- The train file holds raw records instead (``--train-local-path-to-data`` pointed at the source itself): one line
  naming the format it looks like and what to run, instead of a contract error about sample keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xllm_cli import console
from xllm_cli.data.base import check_training_sample, iter_jsonl
from xllm_cli.data.formats import column_map, formats_of
from xllm_cli.data.general import PreparedSampleDataset
from xllm_cli.data.prepare import prepare_dataset
from xllm_cli.errors import DataError
from xllm_cli.settings.config import XllmConfig
from xllm_cli.training.distributed import main_process_first


def prepare_if_missing(config: XllmConfig) -> None:
    path = Path(config.train_local_path_to_data)
    if path.is_file() or not config.dataset_source or not config.prepare_dataset:
        return

    with main_process_first(local=True, description="preparing the dataset"):
        if not path.is_file():
            console.info(
                f"{path} does not exist: preparing it now from --dataset-source {config.dataset_source}, "
                f"as 'xllm download' does"
            )
            prepare_dataset(config)


def check_prepared(path: Path, dataset: Any, config: XllmConfig) -> None:
    """Refuse, in one line, a raw source given where the built-in datasets expect their prepared file."""
    if not isinstance(dataset, PreparedSampleDataset) or not path.is_file():
        return
    try:
        first = next(iter_jsonl(path), None)
    except DataError:  # malformed: reported where the file is read
        return
    if first is None:
        return
    number, record = first
    try:
        check_training_sample(record, str(path))
        return
    except DataError:
        pass
    found = formats_of(record, column_map(config.dataset_columns, config.dataset_text_field))
    what = f"{found[0]} records" if found else "records that are not training samples"
    raise DataError(
        f"{path}:{number}: not prepared data but {what} (columns {', '.join(map(str, record))}); "
        f"xllm train reads the file 'xllm download' writes",
        hint=f"give --dataset-source {path} and another --train-local-path-to-data (xllm train then prepares it), "
        f"or run 'xllm download' with them first",
    )
