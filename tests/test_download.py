"""``xllm download``: the model part (local folder, and the Hub path against a loopback fake hub) and the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_xllm
from tests.fake_hub import fake_hub  # noqa: F401 - the fixture
from xllm_cli.download import download
from xllm_cli.errors import XllmError
from xllm_cli.hub import select_files
from xllm_cli.settings import XllmConfig

SECRET = "hf_download_SECRET_4242"


def _sharded_repo(tiny_model: Path) -> tuple[dict[str, bytes], dict]:
    """The tiny model as a hub repo: two safetensors shards with their index, plus files training never reads."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_model / "model.safetensors"))
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    files: dict[str, bytes] = {}
    for shard, keys in shards.items():
        path = tiny_model.parent / f"shard-{shard}"
        save_file({key: state[key].contiguous() for key in keys}, str(path), metadata={"format": "pt"})
        files[shard] = path.read_bytes()
    weight_map = {key: shard for shard, keys in shards.items() for key in keys}
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    for path in tiny_model.iterdir():
        if path.name != "model.safetensors":
            files[path.name] = path.read_bytes()
    skipped = {
        "README.md": b"# tiny",
        ".gitattributes": b"*.bin filter=lfs",
        "pytorch_model.bin": b"not read: safetensors exist",
        "tf_model.h5": b"tensorflow",
        "onnx/model.onnx": b"onnx",
        "original/consolidated.safetensors": b"mistral format",
    }
    return {**files, **skipped}, state


def test_hub_model_downloads_every_shard_and_only_what_training_reads(fake_hub, tiny_model, tmp_path):  # noqa: F811
    files, state = _sharded_repo(tiny_model)
    fake_hub.add_files("org/tiny", files)
    result = run_xllm(
        "download",
        "--dataset-key",
        "demo",
        "--model-name-or-path",
        "org/tiny",
        env={**fake_hub.env, "HF_TOKEN": SECRET},
    )
    assert result.returncode == 0, result.stderr
    snapshot = tmp_path / "hf_home" / "hub" / "models--org--tiny" / "snapshots" / fake_hub.commit_sha("org/tiny")
    fetched = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    expected = sorted(
        ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        + [p.name for p in tiny_model.iterdir() if p.name != "model.safetensors"]
    )
    assert fetched == expected, result.stderr
    assert f"Bearer {SECRET}" in fake_hub.authorizations
    assert SECRET not in result.stdout + result.stderr
    assert str(snapshot) in result.stderr

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(snapshot).state_dict()
    name = next(key for key in state if key.endswith("q_proj.weight"))
    assert loaded[name].equal(state[name])


def test_separate_tokenizer_repo_fetches_only_tokenizer_files(fake_hub, tiny_model, tmp_path):  # noqa: F811
    fake_hub.add_files("org/tokenizer", {p.name: p.read_bytes() for p in tiny_model.iterdir()})
    result = run_xllm(
        "download", "--no-prepare-dataset", "--model-name-or-path", str(tiny_model),
        "--tokenizer-name-or-path", "org/tokenizer", env=fake_hub.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    snapshot = (
        tmp_path / "hf_home" / "hub" / "models--org--tokenizer" / "snapshots" / fake_hub.commit_sha("org/tokenizer")
    )
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "chat_template.jinja",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert not (tmp_path / "train.jsonl").exists()


def test_unknown_hub_model_is_one_clear_line(fake_hub, tmp_path):  # noqa: F811
    result = run_xllm("download", "--no-prepare-dataset", "--model-name-or-path", "org/missing", env=fake_hub.env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and "downloading model 'org/missing': not a local folder, and not on the Hugging Face Hub" in errors[0]
    )
    assert "Traceback" not in result.stderr


def test_offline_without_cache_says_what_to_do(tmp_path):
    result = run_xllm("download", "--no-prepare-dataset", "--model-name-or-path", "org/elsewhere")
    assert result.returncode == 1
    assert "not in the Hugging Face cache and the Hub cannot be reached" in result.stderr


def test_local_model_folder_downloads_nothing(tiny_model, tmp_path):
    result = run_xllm("download", "--dataset-key", "demo", "--model-name-or-path", str(tiny_model))
    assert result.returncode == 0, result.stderr
    assert "local folder" in result.stderr and "nothing to download" in result.stderr
    assert not (tmp_path / "hf_home" / "hub").exists()
    assert (tmp_path / "train.jsonl").is_file()


def test_python_api_returns_what_was_prepared(tiny_model, tmp_path):
    config = XllmConfig(dataset_key="demo", model_name_or_path=str(tiny_model), train_local_path_to_data="d/t.jsonl")
    result = download(config)
    assert result.model_path is None
    assert result.data.train_samples == 40 and result.data.train_path == Path("d/t.jsonl")
    assert len((tmp_path / "d" / "t.jsonl").read_text().splitlines()) == 40


def _index(shards: list[str]):
    return lambda name: {"weight_map": {f"w{i}": shard for i, shard in enumerate(shards)}}


@pytest.mark.parametrize(
    ("files", "trust_remote_code", "expected"),
    [
        (  # sharded safetensors win over .bin; the index names the shards; other formats are skipped
            ["config.json", "model.safetensors.index.json", "a.safetensors", "b.safetensors", "pytorch_model.bin",
             "pytorch_model.bin.index.json", "flax_model.msgpack", "README.md", "modeling.py", "tokenizer.model"],
            False,
            ["config.json", "tokenizer.model", "model.safetensors.index.json", "a.safetensors", "b.safetensors"],
        ),
        (  # .bin only when there are no safetensors
            ["config.json", "pytorch_model.bin", "tokenizer.json", "tf_model.h5", "modeling.py"],
            True,
            ["config.json", "modeling.py", "tokenizer.json", "pytorch_model.bin"],
        ),
        (  # Mistral's consolidated file is another format, not a shard
            ["config.json", "consolidated.safetensors", "model.safetensors", "params.json"],
            False,
            ["config.json", "model.safetensors"],
        ),
    ],
)  # fmt: skip
def test_file_selection(files, trust_remote_code, expected):
    assert select_files(files, _index(["a.safetensors", "b.safetensors"]), trust_remote_code) == expected


def test_file_selection_refuses_a_repo_without_weights_or_with_missing_shards():
    with pytest.raises(XllmError, match="no safetensors or PyTorch .bin weights"):
        select_files(["config.json", "tf_model.h5"], _index([]))
    with pytest.raises(XllmError, match="names shards the repository does not have: b.safetensors"):
        select_files(["model.safetensors.index.json", "a.safetensors"], _index(["a.safetensors", "b.safetensors"]))
