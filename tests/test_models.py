"""Finding and opening a model the same way in every step (``xllm_cli/models.py``): the Hub token and
``trust_remote_code`` reach every download and load, a tokenizer that cannot be read ends one way everywhere, and an
exception without a message still makes a line."""

from __future__ import annotations

import pytest

from tests.fake_hub import fake_hub  # noqa: F401 - the fixture
from xllm_cli.errors import ConfigError, first_line
from xllm_cli.models import load_tokenizer, open_model, resolve_model, save_tokenizer
from xllm_cli.settings import XllmConfig

TOKEN = "hf_models_SECRET_777"


def model_files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def test_a_hub_model_opened_with_remote_code_comes_with_its_code(fake_hub, tiny_model):  # noqa: F811
    """The model's own code files are fetched exactly when the load will run them (quantize once fetched none)."""
    from xllm_cli.quantize import resolve_model_and_plan

    fake_hub.add_files("org/remote", {**model_files(tiny_model), "modeling_custom.py": b"# the model's code\n"})
    plain = resolve_model(XllmConfig(model_name_or_path="org/remote"))
    assert not (plain / "modeling_custom.py").exists()
    config = XllmConfig(model_name_or_path="org/remote", trust_remote_code=True, gptq_group_size=32)
    folder, _ = resolve_model_and_plan(config)
    assert (folder / "modeling_custom.py").is_file()


def test_every_tokenizer_load_sends_the_hub_token(fake_hub, tiny_model, tmp_path, monkeypatch):  # noqa: F811
    """Training, fuse's tokenizer copy and quantize's calibration tokenizer all pass the token (two of them did not)."""
    import xllm_cli.quantize as quantize_module

    tokenizer_files = {name: data for name, data in model_files(tiny_model).items() if "token" in name}
    fake_hub.add_files("org/private-tokenizer", tokenizer_files, private=True)
    config = XllmConfig(
        model_name_or_path=str(tiny_model),
        tokenizer_name_or_path="org/private-tokenizer",
        huggingface_hub_token=TOKEN,
        gptq_group_size=32,
    )
    load_tokenizer(config)
    save_tokenizer(config, config.tokenizer_name_or_path, tmp_path / "copy")
    assert (tmp_path / "copy" / "tokenizer_config.json").is_file()

    class Reached(Exception):
        pass

    def stop(*args, **kwargs):
        raise Reached

    fake_hub.authorizations.clear()
    monkeypatch.setattr(quantize_module, "calibration_ids", stop)  # right after quantize loads its tokenizer
    with pytest.raises(Reached):
        quantize_module.quantize(config)
    assert fake_hub.authorizations and set(fake_hub.authorizations) == {f"Bearer {TOKEN}"}


def test_a_tokenizer_that_cannot_be_read_ends_the_same_way_in_every_step(tiny_model, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer_config.json").write_text("{not json")
    config = XllmConfig(model_name_or_path=str(tiny_model), tokenizer_name_or_path=str(broken))
    for load in (lambda: load_tokenizer(config), lambda: save_tokenizer(config, broken, tmp_path / "out")):
        with pytest.raises(ConfigError, match=f"cannot load the tokenizer from '{broken}'"):
            load()


def test_an_exception_without_a_message_still_makes_one_line(tiny_model, monkeypatch):
    import transformers

    assert first_line(OSError()) == "OSError" and first_line(ValueError("a\nb")) == "a"

    def fail(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fail)
    with pytest.raises(ConfigError, match=r"cannot load the model '.*': OSError$"):
        open_model(tiny_model, XllmConfig(model_name_or_path=str(tiny_model)), dtype=None)
