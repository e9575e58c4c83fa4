"""The one settings model: four sources and their precedence, the original spelling, validation, secrets."""

from __future__ import annotations

import json

import pytest

from xllm_cli.cli.argv import normalize_argv
from xllm_cli.errors import ConfigError
from xllm_cli.settings import XllmConfig, resolve_config
from xllm_cli.settings.index import STEP_SECTIONS
from xllm_cli.settings.sections import SECTIONS, LoraSettings

# (field, default, config-file value, .env value, env value, flag value): each source gives a different value.
PRECEDENCE_CASES = [
    ("lora_rank", 8, 2, "3", "4", 5),
    ("learning_rate", 2e-4, 0.1, "0.2", "0.3", 0.4),
    ("apply_lora", False, True, "false", "true", False),
    ("model_name_or_path", "mistralai/Mistral-7B-v0.1", "from-file", "from-dotenv", "from-env", "from-flag"),
    ("tokenizer_padding_side", None, "left", "right", "left", "right"),
    ("deepspeed_stage", 0, 1, "2", "3", 0),
]


def _write_sources(tmp_path, name, file_value, dotenv_value):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({name: file_value}))
    (tmp_path / ".env").write_text(f"XLLM_{name.upper()}={dotenv_value}\n")
    return config_file


@pytest.mark.parametrize(("name", "default", "file_value", "dotenv_value", "env_value", "flag_value"), PRECEDENCE_CASES)
def test_each_source_beats_the_next(tmp_path, name, default, file_value, dotenv_value, env_value, flag_value):
    config_file = _write_sources(tmp_path, name, file_value, dotenv_value)
    env = {f"XLLM_{name.upper()}": env_value}
    field_type = type(flag_value)

    def value(**kwargs):
        return getattr(resolve_config(**kwargs).config, name)

    resolved = resolve_config({name: flag_value}, config_file=config_file, environ=env)
    assert getattr(resolved.config, name) == flag_value and resolved.source_of(name) == "flag"
    resolved = resolve_config({}, config_file=config_file, environ=env)
    assert getattr(resolved.config, name) == field_type(json.loads(env_value) if field_type is bool else env_value)
    assert resolved.source_of(name) == "env"
    resolved = resolve_config({}, config_file=config_file, environ={})
    expected = json.loads(dotenv_value) if field_type is bool else field_type(dotenv_value)
    assert getattr(resolved.config, name) == expected and resolved.source_of(name) == ".env"
    (tmp_path / ".env").unlink()
    resolved = resolve_config({}, config_file=config_file, environ={})
    assert getattr(resolved.config, name) == file_value and resolved.source_of(name) == "config file"
    assert value(environ={}) == default
    assert resolve_config({}, environ={}).source_of(name) == "default"


def test_config_file_formats_and_entity_sections(tmp_path):
    (tmp_path / "c.yaml").write_text("lora:\n  lora_rank: 4\nseed: 7\n")
    (tmp_path / "c.toml").write_text("seed = 7\n[lora]\nlora_rank = 4\n")
    (tmp_path / "c.json").write_text('{"lora": {"lora_rank": 4}, "seed": 7}')
    for name in ("c.yaml", "c.toml", "c.json"):
        config = resolve_config({}, config_file=tmp_path / name, environ={}).config
        assert (config.lora_rank, config.seed) == (4, 7), name


def test_env_file_path_can_be_moved_by_flag_and_env(tmp_path):
    (tmp_path / "other.env").write_text("XLLM_SEED=11\n")
    (tmp_path / ".env").write_text("XLLM_SEED=3\n")
    assert resolve_config({}, environ={}).config.seed == 3
    assert resolve_config({"path_to_env_file": "other.env"}, environ={}).config.seed == 11
    assert resolve_config({}, environ={"XLLM_PATH_TO_ENV_FILE": "other.env"}).config.seed == 11
    assert resolve_config({"path_to_env_file": "missing.env"}, environ={}).config.seed == 42


def test_conventional_secret_variables(tmp_path):
    assert resolve_config({}, environ={"HF_TOKEN": "a"}).config.secret("huggingface_hub_token") == "a"
    config = resolve_config({}, environ={"HUGGING_FACE_HUB_TOKEN": "b", "WANDB_API_KEY": "c"}).config
    assert config.secret("huggingface_hub_token") == "b" and config.secret("wandb_api_key") == "c"
    # The xllm-specific name wins over the conventional one.
    config = resolve_config({}, environ={"HF_TOKEN": "a", "XLLM_HUGGINGFACE_HUB_TOKEN": "x"}).config
    assert config.secret("huggingface_hub_token") == "x"


def test_plain_python_construction_reads_env_and_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("XLLM_LORA_ALPHA=5\nUNRELATED_TOOL_SETTING=1\n")
    monkeypatch.setenv("XLLM_LORA_RANK", "3")
    config = XllmConfig(seed=1)
    assert (config.lora_rank, config.lora_alpha, config.seed) == (3, 5, 1)


@pytest.mark.parametrize(
    ("where", "content", "expected"),
    [
        ("c.yaml", "lora:\n  lora_rnk: 4\n", "c.yaml:2: unknown setting 'lora_rnk'; did you mean 'lora_rank'?"),
        ("c.json", '{\n "max_lenght": 3\n}', "c.json:2: unknown setting 'max_lenght'; did you mean 'max_length'?"),
        (".env", "A=1\nXLLM_LORA_RNK=4\n", ".env:2: unknown setting XLLM_LORA_RNK; did you mean 'XLLM_LORA_RANK'?"),
        ("c.yaml", "seed: [1\n", "c.yaml:2: invalid YAML"),
        ("c.toml", "seed = \n", "c.toml: invalid TOML"),
        ("c.ini", "seed=1", "unknown file type '.ini'"),
    ],
)
def test_unknown_keys_and_bad_files_name_file_line_and_closest_match(tmp_path, where, content, expected):
    (tmp_path / where).write_text(content)
    with pytest.raises(ConfigError) as error:
        resolve_config({}, config_file=None if where == ".env" else tmp_path / where, environ={})
    assert expected in str(error.value)


def test_unknown_env_variable_warns_with_closest_match(capsys):
    resolve_config({}, environ={"XLLM_LORA_RANKK": "3"})
    err = capsys.readouterr().err
    assert "warning: environment: unknown setting XLLM_LORA_RANKK; did you mean 'XLLM_LORA_RANK'?" in err


def test_wrong_type_names_flag_and_source(tmp_path):
    with pytest.raises(ConfigError, match=r"--lora-rank \(from env XLLM_LORA_RANK\): Input should be a valid integer"):
        resolve_config({}, environ={"XLLM_LORA_RANK": "eight"})
    (tmp_path / "c.yaml").write_text("apply_lora: maybe\n")
    with pytest.raises(ConfigError, match=r"--apply-lora \(from config file\): Input should be a valid boolean"):
        resolve_config({}, config_file=tmp_path / "c.yaml", environ={})


INVALID_COMBINATIONS = [
    ({"load_in_4bit": True, "load_in_8bit": True}, "--load-in-4bit and --load-in-8bit cannot be used together"),
    ({"from_gptq": True, "load_in_4bit": True}, "--from-gptq cannot be combined with --load-in-4bit"),
    ({"from_gptq": True, "load_in_8bit": True}, "--from-gptq cannot be combined with --load-in-8bit"),
    ({"force_fp16": True, "force_fp32": True}, "--force-fp16 and --force-fp32 cannot be used together"),
    ({"deepspeed_stage": 4}, "--deepspeed-stage must be 0, 1, 2 or 3, got 4"),
    ({"deepspeed_stage": -1}, "--deepspeed-stage must be 0, 1, 2 or 3, got -1"),
    ({"deepspeed_stage": 2, "fsdp_strategy": "full_shard"}, "cannot be used together: pick one engine"),
    ({"deepspeed_config_path": "ds.json", "fsdp_strategy": "full_shard"}, "pick one engine"),
    ({"deepspeed_stage": 3, "load_in_4bit": True}, "--deepspeed-stage 3 cannot shard bitsandbytes weights"),
    ({"deepspeed_stage": 3, "load_in_8bit": True}, "--deepspeed-stage 3 cannot shard bitsandbytes weights"),
    ({"push_to_hub": True}, "--push-to-hub needs --hub-model-id"),
    ({"raw_lora_target_modules": "q_proj, v-proj"}, "--raw-lora-target-modules must be 'all' or a comma list"),
    ({"raw_lora_target_modules": ""}, "--raw-lora-target-modules must be 'all' or a comma list"),
    ({"tokenizer_padding_side": "middle"}, "--tokenizer-padding-side: Input should be 'right' or 'left'"),
    ({"bnb_4bit_quant_type": "int4"}, "--bnb-4bit-quant-type: Input should be 'nf4' or 'fp4'"),
    ({"lora_rank": 0}, "--lora-rank: Input should be greater than 0"),
]


@pytest.mark.parametrize(("flags", "message"), INVALID_COMBINATIONS)
def test_validation_rules(flags, message):
    with pytest.raises(ConfigError) as error:
        resolve_config(flags, environ={})
    assert message in str(error.value)


def test_valid_neighbours_of_the_rules_pass():
    for flags in (
        {"load_in_4bit": True},
        {"deepspeed_stage": 2, "load_in_4bit": True},
        {"deepspeed_stage": 3},
        {"fsdp_strategy": "full_shard auto_wrap"},
        {"push_to_hub": True, "hub_model_id": "me/model"},
        {"raw_lora_target_modules": "q_proj,v_proj, model.layers.0.mlp.up_proj"},
    ):
        resolve_config(flags, environ={})


def test_secrets_never_appear_in_dumps_reprs_or_errors():
    secret = "hf_TOPSECRET_123"
    config = resolve_config({}, environ={"HF_TOKEN": secret, "WANDB_API_KEY": secret}).config
    assert secret not in repr(config) and secret not in str(config)
    assert secret not in config.model_dump_json()
    assert config.secret("huggingface_hub_token") == secret
    with pytest.raises(ConfigError) as error:
        resolve_config({"lora_rank": "x"}, environ={"HF_TOKEN": secret})
    assert secret not in str(error.value)


def test_every_field_is_documented_and_in_exactly_one_section():
    owners = [name for section in SECTIONS for name in section.model_fields]
    assert sorted(owners) == sorted(XllmConfig.model_fields), "a field outside the sections, or in two"
    for name, info in XllmConfig.model_fields.items():
        assert info.description, name
    read = {section for sections in STEP_SECTIONS.values() for section in sections}
    assert read == set(SECTIONS), "a section no step reads"


def test_a_section_is_the_type_a_library_function_takes():
    config = resolve_config({"lora_rank": 4}, environ={}).config
    assert isinstance(config, LoraSettings) and config.lora_rank == 4
    with pytest.raises(ValueError, match="--raw-lora-target-modules must be 'all'"):
        LoraSettings(raw_lora_target_modules="a-b")  # a section validates its own rules on its own


def test_config_file_groups_by_section_and_by_the_names_of_earlier_versions(tmp_path):
    (tmp_path / "c.yaml").write_text("training:\n  max_steps: 3\ngeneral:\n  seed: 5\nwandb:\n  wandb_project: p\n")
    config = resolve_config({}, config_file=tmp_path / "c.yaml", environ={}).config
    assert (config.max_steps, config.seed, config.wandb_project) == (3, 5, "p")


def test_issue_table_defaults():
    config = resolve_config({}, environ={}).config
    expected = {
        "experiment_key": "base", "save_safetensors": True, "max_shard_size": "10GB", "local_rank": 0,
        "trainer_key": "lm", "deepspeed_stage": 0, "deepspeed_config_path": None, "fsdp_strategy": "",
        "fsdp_offload": True, "seed": 42, "path_to_env_file": "./.env", "dataset_key": "soda",
        "train_local_path_to_data": "./train.jsonl", "max_eval_samples": 1000, "collator_key": "lm",
        "max_length": 2048, "model_name_or_path": "mistralai/Mistral-7B-v0.1", "llm_int8_threshold": 6.0,
        "bnb_4bit_quant_type": "nf4", "gptq_bits": 4, "gptq_group_size": 128, "lora_rank": 8, "lora_alpha": 32,
        "lora_dropout": 0.1, "raw_lora_target_modules": "all", "output_dir": "./outputs/",
        "per_device_train_batch_size": 2, "warmup_steps": 1000, "learning_rate": 2e-4, "weight_decay": 0.001,
        "save_total_limit": 1, "optim": "paged_adamw_8bit", "hub_private_repo": True,
        "quantization_max_samples": 1024, "quantized_model_path": "./quantized_model/", "eval_steps": 1000,
    }  # fmt: skip
    for name, value in expected.items():
        assert getattr(config, name) == value, name


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--deepspeed_stage", "2"], ["train", "--deepspeed-stage", "2"]),
        (["train", "--apply_lora", "True", "--stabilize", "False"], ["train", "--apply-lora", "--no-stabilize"]),
        (["train", "--apply_lora=true", "--local_rank=3"], ["train", "--apply-lora", "--local-rank=3"]),
        (["train", "--apply-lora", "--lora-rank", "4"], ["train", "--apply-lora", "--lora-rank", "4"]),
        (["train", "--push_to_hub", "--hub_model_id", "a/b"], ["train", "--push-to-hub", "--hub-model-id", "a/b"]),
    ],
)
def test_original_spelling_is_normalized(argv, expected):
    bools = [n for n, i in XllmConfig.model_fields.items() if i.annotation in (bool, bool | None)]
    assert normalize_argv(argv, bools) == expected


def test_bool_flag_with_a_bad_word_is_an_error():
    with pytest.raises(ConfigError, match="--apply-lora takes no value or one of True/False, got 'maybe'"):
        normalize_argv(["train", "--apply_lora=maybe"], ["apply_lora"])
