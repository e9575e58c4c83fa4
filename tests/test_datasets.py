"""Dataset preparation (``xllm download``): the built-in datasets, eval handling, shuffling, and bad input.

Everything here is offline: soda reads local files in SODA's column schema (or a patched ``load_dataset``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import run_xllm
from xllm_cli.data.demo import DemoDataset, demo_records
from xllm_cli.data.prepare import prepare_dataset, shuffle_lines
from xllm_cli.data.soda import SodaDataset
from xllm_cli.errors import DataError
from xllm_cli.settings import XllmConfig

LOCAL_MODEL = ("--model-name-or-path", ".")  # a local folder: nothing to download


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def download(*args: str, env: dict | None = None):
    return run_xllm("download", *LOCAL_MODEL, *args, env=env)


def soda_row(index: int, narrative: str = "A and B talk.", **extra) -> dict:
    row = {
        "head": "A",
        "relation": "xWant",
        "tail": "talk",
        "literal": "A wants to talk.",
        "narrative": narrative,
        "speakers": ["A", "B"],
        "dialogue": [f"hello {index}", f"hi\nthere {index}"],
        "PersonX": "A",
        "PersonY": "B",
        "PersonZ": "",
        "original_index": index,
        "head_answer": "Yes",
        "pmi_head_answer": "Yes",
        "relation_tail_answer": "Yes",
        "pmi_relation_tail_answer": "Yes",
    }
    return {**row, **extra}


# --- demo ------------------------------------------------------------------------------------------------------------


def test_demo_writes_every_record_shuffled_deterministically(tmp_path):
    first = download("--dataset-key", "demo", "--train-local-path-to-data", "a.jsonl")
    second = download("--dataset-key", "demo", "--train-local-path-to-data", "b.jsonl")
    other_seed = download("--dataset-key", "demo", "--train-local-path-to-data", "c.jsonl", "--seed", "7")
    unshuffled = download("--dataset-key", "demo", "--train-local-path-to-data", "d.jsonl", "--no-shuffle")
    assert all(r.returncode == 0 for r in (first, second, other_seed, unshuffled)), first.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert read_jsonl(tmp_path / "d.jsonl") == demo_records()
    assert sorted(map(json.dumps, read_jsonl(tmp_path / "a.jsonl"))) == sorted(map(json.dumps, demo_records()))
    assert "train: 40 samples" in first.stderr


def test_demo_gives_eval_data_when_an_eval_path_is_set(tmp_path):
    config = XllmConfig(dataset_key="demo", eval_local_path_to_data="eval.jsonl", shuffle=False)
    prepared = prepare_dataset(config)
    assert (prepared.train_samples, prepared.eval_samples) == (32, 8)
    assert read_jsonl(tmp_path / "eval.jsonl") == demo_records()[-8:]
    assert DemoDataset(config).get_sample(demo_records()[0]) == demo_records()[0]


# --- soda ------------------------------------------------------------------------------------------------------------


def test_soda_local_file_deduplicates_and_builds_header_plus_dialog(tmp_path):
    write_jsonl(tmp_path / "soda.jsonl", [soda_row(1), soda_row(2), soda_row(1, narrative="duplicate")])
    result = download("--dataset-key", "soda", "--dataset-source", "soda.jsonl", "--no-shuffle")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "train.jsonl")
    assert rows == [
        {"header": "A and B talk.", "dialog": ["A: hello 1", "B: hi there 1"]},
        {"header": "A and B talk.", "dialog": ["A: hello 2", "B: hi there 2"]},
    ]


def test_soda_folder_splits_share_deduplication_and_eval_overflow_moves_to_train(tmp_path):
    (tmp_path / "soda").mkdir()
    write_jsonl(tmp_path / "soda" / "train.jsonl", [soda_row(i) for i in range(3)])
    write_jsonl(tmp_path / "soda" / "test.jsonl", [soda_row(2)] + [soda_row(i) for i in range(10, 14)])
    result = download(
        "--dataset-key", "soda", "--dataset-source", "soda", "--eval-local-path-to-data", "eval.jsonl",
        "--max-eval-samples", "3", "--no-shuffle",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    train, evaluation = read_jsonl(tmp_path / "train.jsonl"), read_jsonl(tmp_path / "eval.jsonl")
    # index 2 of test repeats train; of the 4 new test rows, 3 stay eval and 1 moves to train
    assert [row["dialog"][0] for row in evaluation] == ["A: hello 10", "A: hello 11", "A: hello 12"]
    assert [row["dialog"][0] for row in train] == ["A: hello 0", "A: hello 1", "A: hello 2", "A: hello 13"]


def test_soda_training_sample_drops_the_header_with_its_probability_and_has_no_raw_newlines():
    raw = {"header": "Narrative.", "dialog": ["A: one\ntwo", "B: three"]}
    always = SodaDataset(XllmConfig(soda_drop_header_probability=0.0)).get_sample(raw)
    never = SodaDataset(XllmConfig(soda_drop_header_probability=1.0)).get_sample(raw)
    assert always == {"text_parts": ["Narrative.", "A: one two", "B: three"]}
    assert never == {"text_parts": ["A: one two", "B: three"]}
    sometimes = SodaDataset(XllmConfig(soda_drop_header_probability=0.5))
    dropped = sum(sometimes.get_sample(raw)["text_parts"][0] != "Narrative." for _ in range(2000))
    assert 850 < dropped < 1150
    assert all("\n" not in part for part in always["text_parts"])


def test_soda_without_source_loads_allenai_soda_train_and_test(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(name, **kwargs):
        calls.append(name)
        return datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_list([soda_row(1), soda_row(2)]),
                "validation": datasets.Dataset.from_list([soda_row(3)]),
                "test": datasets.Dataset.from_list([soda_row(2), soda_row(4)]),
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    prepared = prepare_dataset(XllmConfig(dataset_key="soda", eval_local_path_to_data="eval.jsonl"))
    assert calls == ["allenai/soda"]
    assert (prepared.train_samples, prepared.eval_samples) == (2, 1)
    assert read_jsonl(tmp_path / "eval.jsonl")[0]["dialog"][0] == "A: hello 4"


# --- general ---------------------------------------------------------------------------------------------------------


def _write_general_sources(folder: Path) -> dict[str, Path]:
    texts = ["first text", "second text"]
    sources = {
        "jsonl": write_jsonl(folder / "d.jsonl", [{"text": t} for t in texts]),
        "json": folder / "d.json",
        "txt": folder / "d.txt",
        "csv": folder / "d.csv",
        "parquet": folder / "d.parquet",
    }
    sources["json"].write_text(json.dumps([{"text": t} for t in texts], indent=2))
    sources["txt"].write_text("first text\n\nsecond text\n")
    with sources["csv"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([[i, t] for i, t in enumerate(texts)])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), sources["parquet"])
    return sources


def test_general_reads_every_file_type(tmp_path):
    for kind, path in _write_general_sources(tmp_path).items():
        config = XllmConfig(dataset_key="general", dataset_source=str(path), shuffle=False)
        prepare_dataset(config)
        assert read_jsonl(tmp_path / "train.jsonl") == [
            {"text_parts": ["first text"]},
            {"text_parts": ["second text"]},
        ], kind


def test_general_text_field_separator_and_ready_columns_through_the_cli(tmp_path):
    # One format per source: the text column, text parts and messages come from three sources mixed in one run.
    write_jsonl(tmp_path / "d.jsonl", [{"body": "Question: 1+1?###Answer: 2"}])
    write_jsonl(tmp_path / "p.jsonl", [{"text_parts": ["kept", "as is"]}])
    write_jsonl(
        tmp_path / "m.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}],
    )
    result = download(
        "--dataset-key", "general", "--dataset-source", "d.jsonl,p.jsonl,m.jsonl", "--dataset-text-field", "body",
        "--dataset-parts-separator", "###", "--no-shuffle",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert read_jsonl(tmp_path / "train.jsonl") == [
        {"text_parts": ["Question: 1+1?", "Answer: 2"]},
        {"text_parts": ["kept", "as is"]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    ]


def test_general_hub_id_goes_through_load_dataset(monkeypatch, tmp_path):
    import datasets

    def fake_load_dataset(name, **kwargs):
        assert name == "someone/texts"
        return datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "from the hub"}])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    prepare_dataset(XllmConfig(dataset_key="general", dataset_source="someone/texts"))
    assert read_jsonl(tmp_path / "train.jsonl") == [{"text_parts": ["from the hub"]}]


# --- chat ------------------------------------------------------------------------------------------------------------


def test_chat_keeps_conversations(tmp_path):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation, "id": 1}])
    result = download("--dataset-key", "chat", "--dataset-source", "chat.jsonl")
    assert result.returncode == 0, result.stderr
    assert read_jsonl(tmp_path / "train.jsonl") == [{"messages": conversation}]


# --- eval handling ---------------------------------------------------------------------------------------------------


def _general_folder(tmp_path: Path, train: int, test: int) -> str:
    folder = tmp_path / "splits"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": f"train {i}"} for i in range(train)])
    write_jsonl(folder / "test.jsonl", [{"text": f"test {i}"} for i in range(test)])
    return str(folder)


def test_eval_without_path_is_dropped_and_said_so(tmp_path):
    source = _general_folder(tmp_path, 3, 2)
    result = download("--dataset-key", "general", "--dataset-source", source)
    assert result.returncode == 0, result.stderr
    assert "dropped" in result.stderr and "--add-eval-to-train-if-no-path" in result.stderr
    assert len(read_jsonl(tmp_path / "train.jsonl")) == 3


def test_eval_without_path_goes_to_train_when_asked(tmp_path):
    source = _general_folder(tmp_path, 3, 2)
    config = XllmConfig(dataset_key="general", dataset_source=source, add_eval_to_train_if_no_path=True)
    prepared = prepare_dataset(config)
    assert prepared.train_samples == 5 and prepared.eval_path is None


def test_empty_train_set_is_an_error(tmp_path):
    (tmp_path / "blank.txt").write_text("\n  \n")
    result = download("--dataset-key", "general", "--dataset-source", "blank.txt")
    assert result.returncode == 1
    assert "produced no train samples" in result.stderr
    assert not (tmp_path / "train.jsonl").exists()


# --- shuffling in bounded memory -------------------------------------------------------------------------------------


def test_bucketed_shuffle_is_a_deterministic_permutation(tmp_path, monkeypatch):
    import io

    import xllm_cli.data.prepare as prepare

    lines = [f'{{"n": {i}}}\n'.encode() for i in range(5000)]
    source = tmp_path / "lines.jsonl"
    source.write_bytes(b"".join(lines))
    monkeypatch.setattr(prepare, "BUCKET_BYTES", 4096)  # ~13 buckets
    outputs = []
    for seed in (1, 1, 2):
        target = io.BytesIO()
        shuffle_lines(source, target, source.stat().st_size, seed)
        outputs.append(target.getvalue())
    assert outputs[0] == outputs[1] != outputs[2]
    shuffled = outputs[0].splitlines(keepends=True)
    assert sorted(shuffled) == sorted(lines) and shuffled != lines
    # Well mixed: the first tenth of the output draws from the whole input, not from one bucket.
    first = [json.loads(line)["n"] for line in shuffled[:500]]
    assert min(first) < 500 and max(first) > 4500
    assert not list(tmp_path.glob(".xllm-shuffle-*"))


def test_preparing_a_large_file_keeps_memory_bounded(tmp_path, monkeypatch):
    """Peak Python memory while preparing 4x the lines stays about the same (it does not follow the file size)."""
    import tracemalloc

    import xllm_cli.data.prepare as prepare

    monkeypatch.setattr(prepare, "BUCKET_BYTES", 256 * 1024)
    peaks = {}
    for lines in (100, 5_000, 20_000):  # the first run only warms up (imports), so it is not measured
        source = tmp_path / f"big{lines}.jsonl"
        with source.open("w") as handle:
            for i in range(lines):
                handle.write(json.dumps({"text": f"sample number {i} " + "x" * 100}) + "\n")
        config = XllmConfig(dataset_key="general", dataset_source=str(source), train_local_path_to_data="out.jsonl")
        tracemalloc.start()
        prepare_dataset(config)
        peaks[lines] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(read_jsonl(tmp_path / "out.jsonl")) == lines
    big_file = (tmp_path / "big20000.jsonl").stat().st_size
    assert peaks[20_000] < 1.5 * peaks[5_000], peaks
    assert peaks[20_000] < big_file / 2, (peaks, big_file)


# --- bad input: one line each, non-zero exit, an earlier train.jsonl untouched ---------------------------------------

BAD_INPUTS = {
    "malformed JSON line": ("general", "bad.jsonl", b'{"text": "ok"}\n{"text": oops}\n', "bad.jsonl:2: malformed JSON"),
    "missing field": (
        "general",
        "miss.jsonl",
        b'{"text": "ok"}\n{"body": "x"}\n',
        "miss.jsonl:2: missing field 'text'",
    ),
    "empty file": ("general", "empty.jsonl", b"", "empty.jsonl: the file is empty"),
    "binary file": (
        "general",
        "blob.txt",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "blob.txt: looks like a binary file",
    ),
    "unknown file type": ("general", "data.xlsx", b"whatever", "unknown file type '.xlsx'"),
    "invalid UTF-8": ("general", "latin.txt", b"fine\ncaf\xe9\n", "latin.txt:2: not valid UTF-8"),
    "unknown chat role": (
        "chat",
        "chat.jsonl",
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}\n',
        "chat.jsonl:1: message 2: unknown chat role 'robot' (accepted: system, user, assistant, tool; also",
    ),
    "soda row without dialogue": ("soda", "soda.jsonl", b'{"narrative": "n", "speakers": []}\n', "missing field"),
    "no such source file": ("general", None, b"", "--dataset-source: no such file or folder: missing.jsonl"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_leaves_the_earlier_file_untouched(tmp_path, case):
    key, name, content, expected = BAD_INPUTS[case]
    if name is not None:
        (tmp_path / name).write_bytes(content)
    earlier = b'{"text_parts": ["from an earlier run"]}\n'
    (tmp_path / "train.jsonl").write_bytes(earlier)
    result = download("--dataset-key", key, "--dataset-source", name or "missing.jsonl")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "train.jsonl").read_bytes() == earlier
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".train.jsonl")]


def test_a_failure_in_eval_data_keeps_both_earlier_files(tmp_path):
    folder = tmp_path / "splits"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": "fine"}])
    (folder / "test.jsonl").write_text('{"text": "fine"}\n{"nope": 1}\n')
    (tmp_path / "train.jsonl").write_text("old train\n")
    (tmp_path / "eval.jsonl").write_text("old eval\n")
    config = XllmConfig(dataset_key="general", dataset_source=str(folder), eval_local_path_to_data="eval.jsonl")
    with pytest.raises(DataError, match="test.jsonl:2: missing field 'text'"):
        prepare_dataset(config)
    assert (tmp_path / "train.jsonl").read_text() == "old train\n"
    assert (tmp_path / "eval.jsonl").read_text() == "old eval\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.jsonl", "splits", "train.jsonl"]
