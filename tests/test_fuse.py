"""``xllm fuse``: the fused model computes what base + adapter computes through peft, on both merge paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_xllm
from xllm_cli.cli.app import main

SECRET = "hf_FUSE_SECRET_4242"
SUBSET = ["q_proj", "v_proj", "down_proj"]


def xllm(capsys, *args: str) -> tuple[int, str]:
    """Run ``xllm`` in-process; returns (exit code, stdout + stderr)."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code, out + err


def make_adapter(base: Path, folder: Path, targets, **settings) -> Path:
    """A LoRA adapter made with peft directly, with non-zero B so the merge changes the weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, **settings)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sharded_model(tmp_path_factory) -> Path:
    """The tiny model saved in several safetensors shards, like a real large checkpoint."""
    from xllm_cli.tiny import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("sharded") / "tiny", max_shard_size="100KB")


@pytest.fixture(scope="module")
def adapters(tiny_model, sharded_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "all": make_adapter(sharded_model, root / "all", "all-linear"),
        "subset": make_adapter(tiny_model, root / "subset", SUBSET, use_rslora=True),
        "dora": make_adapter(tiny_model, root / "dora", ["q_proj", "o_proj"], use_dora=True),
    }


def peft_logits(base: Path, adapter: Path, inputs):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    with torch.no_grad():
        return [model(ids).logits for ids in inputs]


def model_logits(folder: Path, inputs):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        return [model(ids).logits for ids in inputs]


def sample_inputs(folder: Path):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["Question: What do bees make?\nAnswer:", "hello", "The sky is blue on a clear day. " * 6]
    return [tokenizer(text, return_tensors="pt").input_ids for text in texts] + [torch.randint(0, 500, (2, 33))]


def assert_same_logits(fused: Path, base: Path, adapter: Path) -> None:
    inputs = sample_inputs(fused)
    expected = peft_logits(base, adapter, inputs)
    for got, want in zip(model_logits(fused, inputs), expected, strict=True):
        assert got.shape == want.shape
        assert (got - want).abs().max().item() < 1e-4
    # The adapter really changes the model: otherwise equality would prove nothing.
    import torch

    plain = model_logits(base, inputs[:1])[0]
    assert not torch.allclose(plain, expected[0], atol=1e-3)


def test_fused_logits_equal_peft_with_lora_on_all_linear_layers_of_a_sharded_base(
    capsys, sharded_model, adapters, tmp_path
):
    code, output = xllm(
        capsys,
        "fuse",
        "--model-name-or-path",
        str(sharded_model),
        "--lora-model-local-path",
        str(adapters["all"]),
        "--fused-model-local-path",
        "fused",
        "--force-fp32",
        "--max-shard-size",
        "100KB",
    )
    assert code == 0, output
    assert "streaming" in output and "peft instead" not in output
    fused = tmp_path / "fused"
    index = json.loads((fused / "model.safetensors.index.json").read_text())
    tensors_per_shard: dict[str, int] = {}
    for shard in index["weight_map"].values():
        tensors_per_shard[shard] = tensors_per_shard.get(shard, 0) + 1
    assert len(tensors_per_shard) >= 4
    for shard, count in tensors_per_shard.items():  # a tensor larger than the limit gets a shard of its own
        assert count == 1 or (fused / shard).stat().st_size <= 100_000 + 10_000, shard
    assert (fused / "tokenizer.json").is_file()
    assert json.loads((fused / "config.json").read_text())["dtype"] == "float32"
    assert_same_logits(fused, sharded_model, adapters["all"])


def test_fused_logits_equal_peft_with_rslora_on_a_subset_through_the_installed_cli(tiny_model, adapters, tmp_path):
    result = run_xllm(
        "fuse",
        "--model_name_or_path",
        str(tiny_model),
        "--lora_model_local_path",
        str(adapters["subset"]),
        "--fused_model_local_path",
        "fused",
        "--force_fp32",
        "True",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    adapter_settings = json.loads((adapters["subset"] / "adapter_config.json").read_text())
    assert adapter_settings["use_rslora"] and sorted(adapter_settings["target_modules"]) == sorted(SUBSET)
    assert "W + 4 * B @ A" in result.stderr  # rsLoRA: alpha / sqrt(r) = 8 / 2, not alpha / r = 2
    assert_same_logits(tmp_path / "fused", tiny_model, adapters["subset"])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_streaming_and_peft_paths_give_identical_weights(tiny_model, adapters, tmp_path, monkeypatch, dtype):
    import torch
    from safetensors.torch import load_file

    import xllm_cli.fuse as fuse_module
    from xllm_cli.settings import XllmConfig

    def fused_with(blocker, output: str) -> dict:
        monkeypatch.setattr(fuse_module, "streaming_blocker", blocker)
        config = XllmConfig(
            model_name_or_path=str(tiny_model),
            lora_model_local_path=str(adapters["subset"]),
            fused_model_local_path=output,
            force_fp32=dtype == "float32",
        )
        folder = fuse_module.fuse(config)
        return load_file(folder / "model.safetensors")

    original_blocker = fuse_module.streaming_blocker
    streamed = fused_with(original_blocker, "streamed")
    through_peft = fused_with(lambda adapter, base: "forced for the test", "peft")
    assert streamed.keys() == through_peft.keys()
    for name, tensor in streamed.items():
        assert tensor.dtype == getattr(torch, dtype), name
        assert torch.equal(tensor, through_peft[name]), name


def test_dora_adapter_falls_back_to_peft_and_says_so(capsys, tiny_model, adapters, tmp_path):
    code, output = xllm(
        capsys,
        "fuse",
        "--model-name-or-path",
        str(tiny_model),
        "--lora-model-local-path",
        str(adapters["dora"]),
        "--fused-model-local-path",
        "fused",
        "--force-fp32",
    )
    assert code == 0, output
    assert "DoRA" in output and "merging with peft instead" in output
    assert_same_logits(tmp_path / "fused", tiny_model, adapters["dora"])


def test_fuse_without_an_adapter_is_a_validation_error(capsys, tiny_model):
    code, output = xllm(capsys, "fuse", "--model-name-or-path", str(tiny_model))
    assert code == 2
    assert "--lora-model-local-path" in output and "--lora-hub-model-id" in output
    assert "Traceback" not in output
    # The Python API says the same.
    from xllm_cli.errors import ConfigError
    from xllm_cli.fuse import fuse
    from xllm_cli.settings import XllmConfig

    with pytest.raises(ConfigError, match="--lora-model-local-path or --lora-hub-model-id"):
        fuse(XllmConfig(model_name_or_path=str(tiny_model)))


def test_qlora_adapter_is_merged_into_the_full_precision_base_with_an_explanation(
    capsys, tiny_model, adapters, tmp_path
):
    adapter = shutil.copytree(adapters["subset"], tmp_path / "qlora")
    (adapter / "xllm_config.json").write_text(json.dumps({"load_in_4bit": True, "apply_lora": True}))
    code, output = xllm(
        capsys,
        "fuse",
        "--model-name-or-path",
        str(tiny_model),
        "--lora-model-local-path",
        str(adapter),
        "--fused-model-local-path",
        "fused",
    )
    assert code == 0, output
    assert "4-bit base (QLoRA)" in output and "quantization error" in output
    assert json.loads((tmp_path / "fused" / "config.json").read_text())["dtype"] == "bfloat16"


def test_only_the_settings_xllm_saved_say_the_adapter_was_trained_on_a_quantized_base(adapters, tmp_path):
    """Other files in the adapter folder (a recipe, a dataset card) are not settings of this training run."""
    from xllm_cli.fuse import quantized_training

    adapter = shutil.copytree(adapters["subset"], tmp_path / "adapter")
    (adapter / "recipe.yaml").write_text("load_in_4bit: true\n")
    (adapter / "notes.json").write_text(json.dumps({"config": {"load_in_8bit": True}}))
    assert quantized_training(adapter) is None
    (adapter / "xllm_config.json").write_text(json.dumps({"load_in_8bit": True}))
    assert quantized_training(adapter) == "8-bit"


def test_a_quantized_base_is_refused(capsys, tiny_model, adapters, tmp_path):
    base = shutil.copytree(tiny_model, tmp_path / "gptq-base")
    settings = json.loads((base / "config.json").read_text())
    settings["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (base / "config.json").write_text(json.dumps(settings))
    code, output = xllm(
        capsys, "fuse", "--model-name-or-path", str(base), "--lora-model-local-path", str(adapters["subset"])
    )
    assert code == 2
    assert "gptq model" in output and "16-bit base" in output
    assert not (tmp_path / "fused_model").exists()


def test_bin_output_when_safetensors_is_off_and_an_old_output_survives_a_failure(
    capsys, tiny_model, adapters, tmp_path
):
    args = ["fuse", "--model-name-or-path", str(tiny_model), "--lora-model-local-path", str(adapters["subset"])]
    code, output = xllm(capsys, *args, "--no-save-safetensors", "--force-fp32", "--fused-model-local-path", "out")
    assert code == 0, output
    assert (tmp_path / "out" / "pytorch_model.bin").is_file()
    assert not list((tmp_path / "out").glob("*.safetensors"))
    assert_same_logits(tmp_path / "out", tiny_model, adapters["subset"])
    # A failing run (bad shard size) leaves the previous output as it was.
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    code, output = xllm(capsys, *args, "--fused-model-local-path", "out", "--max-shard-size", "lots")
    assert code == 2 and "--max-shard-size" in output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def materialize(files: dict[str, bytes], folder: Path) -> Path:
    """What arrived at the hub, as a folder a user would download."""
    folder.mkdir()
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("add_bos_token", [False, True])
def test_fused_model_pushed_to_the_hub_arrives_complete(
    capsys, tiny_model, adapters, tmp_path, fake_hub, monkeypatch, add_bos_token
):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    args = ["fuse", "--model-name-or-path", str(tiny_model), "--lora-model-local-path", str(adapters["subset"])]
    args += ["--fused-model-local-path", "fused", "--force-fp32", "--push-to-hub", "--hub-model-id", "me/fused"]
    if add_bos_token:  # and a public repository
        args += ["--push-to-hub-bos-add-bos-token", "--no-hub-private-repo"]
    code, output = xllm(capsys, *args)
    assert code == 0, output
    assert SECRET not in output and f"Bearer {SECRET}" in fake_hub.authorizations
    assert fake_hub.repos["me/fused"]["private"] is not add_bos_token  # private is the default
    local = tmp_path / "fused"
    arrived = fake_hub.files["me/fused"]
    assert arrived == {p.name: p.read_bytes() for p in local.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(arrived)
    assert (json.loads(arrived["tokenizer_config.json"]).get("add_bos_token") is True) is add_bos_token
    assert_same_logits(materialize(arrived, tmp_path / "from-hub"), tiny_model, adapters["subset"])


def test_adapter_from_the_hub_by_id(capsys, tiny_model, adapters, tmp_path, fake_hub):
    from safetensors.torch import load_file

    adapter = adapters["subset"]
    fake_hub.add_files("me/adapter", {p.name: p.read_bytes() for p in adapter.iterdir() if p.is_file()})
    base = ["fuse", "--model-name-or-path", str(tiny_model), "--force-fp32"]
    code, output = xllm(capsys, *base, "--lora-hub-model-id", "me/adapter", "--fused-model-local-path", "from-hub")
    assert code == 0, output
    code, output = xllm(capsys, *base, "--lora-model-local-path", str(adapter), "--fused-model-local-path", "local")
    assert code == 0, output
    from_hub, local = (load_file(tmp_path / name / "model.safetensors") for name in ("from-hub", "local"))
    assert from_hub.keys() == local.keys() and all((from_hub[k] == local[k]).all() for k in local)
    code, output = xllm(capsys, *base, "--lora-hub-model-id", "me/missing")
    assert code == 1 and "me/missing" in output and "--lora-hub-model-id" in output
