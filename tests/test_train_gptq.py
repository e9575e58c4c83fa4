"""``--from-gptq``: LoRA training on top of a GPTQ checkpoint, on the CPU (gptqmodel's torch kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_train import assert_loss_falls, lora_model, run_train, write_training_data  # noqa: F401 (fixture)
from xllm_cli.settings import resolve_config


@pytest.mark.slow
def test_lora_on_a_gptq_checkpoint_trains_with_falling_loss(lora_model, tmp_path):  # noqa: F811
    pytest.importorskip("gptqmodel")
    from xllm_cli.quantize import quantize

    data = write_training_data(tmp_path / "train.jsonl")
    gptq = tmp_path / "gptq"
    config = resolve_config(
        {
            "model_name_or_path": str(lora_model),
            "dataset_key": "general",
            "train_local_path_to_data": str(data),
            "quantized_model_path": str(gptq),
            "gptq_group_size": 32,
            "max_length": 64,
        },
        environ={},
    ).config
    quantize(config)
    assert "quantization_config" in (gptq / "config.json").read_text()

    output = tmp_path / "adapter"
    code = run_train(
        gptq, output, "--from-gptq", "--apply-lora", "--max-steps", "24", "--learning-rate", "2e-2", data=data
    )
    assert code == 0
    assert_loss_falls(output, factor=0.85)
    assert (output / "adapter_model.safetensors").is_file()
    assert Path(output / "adapter_config.json").read_text().count("q_proj") >= 1
