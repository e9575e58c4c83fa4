"""Distributed training: the shipped DeepSpeed configs, the settings -> Trainer mapping, and real launches.

The slow tests start ``xllm train`` with two processes under the ``deepspeed`` launcher (ZeRO-2 LoRA, ZeRO-3 full,
ZeRO-3 LoRA) and under ``torchrun`` (DDP), on CPU over gloo, plus one single-process ZeRO-1 run without a launcher.
Each launch runs once per module and several tests read its results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, XLLM
from xllm_cli.cli.app import main
from xllm_cli.errors import ConfigError
from xllm_cli.settings import XllmConfig
from xllm_cli.training.distributed import (
    distributed_arguments,
    free_port,
    is_main_process,
    main_process_first,
    predefined_config_path,
    world_size,
)
from xllm_cli.training.threads import usable_cores

STEPS = 8


def every_key(tree: object) -> list[str]:
    if isinstance(tree, dict):
        return [key for name, value in tree.items() for key in (name, *every_key(value))]
    return []


# --- the shipped configs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_predefined_configs_follow_xllm_settings_and_never_offload_silently(stage):
    config = distributed_arguments(XllmConfig(deepspeed_stage=stage))["deepspeed"]
    assert config == json.loads(predefined_config_path(stage).read_text())  # the file users read is the one used
    assert config["zero_optimization"]["stage"] == stage
    # Batch size, accumulation and clipping come from xllm's settings through the Trainer.
    filled = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")
    assert {key: config[key] for key in filled} == dict.fromkeys(filled, "auto")
    assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
    # No optimizer/scheduler section: the Trainer builds --optim, --learning-rate and the warmup schedule itself, so
    # nothing needs total steps the file cannot know (the original stage 1 file failed on exactly that).
    assert "optimizer" not in config and "scheduler" not in config
    assert not [key for key in every_key(config) if "offload" in key]


def test_stage3_saves_a_normal_checkpoint():
    zero = distributed_arguments(XllmConfig(deepspeed_stage=3))["deepspeed"]["zero_optimization"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("stage", [2, 3])
def test_offload_is_an_explicit_choice(stage):
    config = distributed_arguments(XllmConfig(deepspeed_stage=stage, deepspeed_offload=True))["deepspeed"]
    zero = config["zero_optimization"]
    assert zero["stage"] == stage and zero["offload_optimizer"]["device"] == "cpu"
    assert ("offload_param" in zero) == (stage == 3)
    # ZeRO-Offload runs the optimizer on the CPU, which needs DeepSpeed's own (CPU) Adam.
    assert config["optimizer"]["type"] == "AdamW" and config["optimizer"]["params"]["lr"] == "auto"


@pytest.mark.parametrize(
    "args",
    [
        ["--deepspeed-stage", "1", "--deepspeed-offload"],
        ["--deepspeed-offload"],
        ["--deepspeed-config-path", "mine.json", "--deepspeed-offload"],
    ],
)
def test_offload_without_a_predefined_stage_2_or_3_is_refused(args, capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", *args])
    assert done.value.code == 2
    message = "--deepspeed-offload applies to the predefined configs of --deepspeed-stage 2 or 3"
    assert message in capsys.readouterr().err


def test_a_users_deepspeed_file_is_passed_as_its_path(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_batch_size": "auto"}))
    assert distributed_arguments(XllmConfig(deepspeed_config_path=str(path))) == {"deepspeed": str(path)}


def test_a_broken_deepspeed_file_is_one_line_with_file_and_line(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{\n  "zero_optimization": {"stage": 2},\n  "train_batch_size": auto\n}\n')
    with pytest.raises(ConfigError, match=rf"^{path}:3: invalid JSON in the DeepSpeed config"):
        distributed_arguments(XllmConfig(deepspeed_config_path=str(path)))
    with pytest.raises(ConfigError, match="--deepspeed-config-path: no such DeepSpeed config file"):
        distributed_arguments(XllmConfig(deepspeed_config_path=str(tmp_path / "missing.json")))


def test_no_engine_means_no_extra_arguments():
    assert distributed_arguments(XllmConfig()) == {}


# --- FSDP ------------------------------------------------------------------------------------------------------------
def test_fsdp_strategy_maps_to_fsdp2_and_says_it_is_ddp_on_cpu(capsys):
    arguments = distributed_arguments(XllmConfig(fsdp_strategy="full_shard auto_wrap", fsdp_offload=True))
    assert arguments == {
        "fsdp": True,
        "fsdp_config": {"version": 2, "reshard_after_forward": True, "cpu_offload": True},
    }
    arguments = distributed_arguments(XllmConfig(fsdp_strategy="shard_grad_op", fsdp_offload=False))
    assert arguments["fsdp_config"] == {"version": 2, "reshard_after_forward": False}
    import torch

    warning = "FSDP needs an accelerator, so the Trainer will run plain DDP"
    assert (warning in capsys.readouterr().err) != torch.cuda.is_available()


FSDP_SCRIPT = """
import json
from transformers import TrainingArguments
from xllm_cli.settings import XllmConfig
from xllm_cli.training.distributed import distributed_arguments

extra = distributed_arguments(XllmConfig(fsdp_strategy="full_shard auto_wrap", fsdp_offload=True))
arguments = TrainingArguments(output_dir="out", use_cpu=True, report_to=[], **extra)
print(json.dumps(arguments.fsdp_plugin_args))
"""


@pytest.mark.slow
def test_the_trainer_accepts_the_fsdp_mapping(tmp_path):
    """What transformers makes of it: the FSDP plugin settings accelerate receives on a GPU machine."""
    result = subprocess.run(
        [sys.executable, "-c", FSDP_SCRIPT], capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    plugin = json.loads(result.stdout.strip().splitlines()[-1])
    assert plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is True and plugin["cpu_offload"] is True
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"  # the final save is a normal checkpoint


def test_fsdp1_only_strategies_say_so(capsys):
    arguments = distributed_arguments(XllmConfig(fsdp_strategy="hybrid_shard", fsdp_offload=False))
    assert arguments["fsdp_config"] == {"version": 1, "reshard_after_forward": "hybrid_shard"}
    assert "exists only in FSDP1" in capsys.readouterr().err


def test_unknown_fsdp_word_names_the_closest():
    with pytest.raises(ConfigError, match="--fsdp-strategy: unknown word 'full_shrd'; did you mean 'full_shard'"):
        distributed_arguments(XllmConfig(fsdp_strategy="full_shrd auto_wrap"))
    with pytest.raises(ConfigError, match="pick one sharding strategy"):
        distributed_arguments(XllmConfig(fsdp_strategy="full_shard shard_grad_op"))


# --- every spelling of the stage reaches DeepSpeed ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "env"),
    [
        # As the deepspeed launcher writes it: --local_rank=N before the step, the original spelling after.
        (["--local_rank=1", "train", "--deepspeed_stage", "2", "--apply_lora", "True"], {}),
        (["train", "--deepspeed-stage", "2", "--local-rank", "1"], {}),
        (["train"], {"XLLM_DEEPSPEED_STAGE": "2", "LOCAL_RANK": "1"}),
    ],
)
def test_every_spelling_of_the_stage_reaches_deepspeed(argv, env, monkeypatch):
    import xllm_cli.training.run

    seen = []
    monkeypatch.setattr(xllm_cli.training.run, "train", seen.append)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    (config,) = seen
    assert config.local_rank == 1
    assert distributed_arguments(config)["deepspeed"]["zero_optimization"]["stage"] == 2


# --- helpers without a process group ---------------------------------------------------------------------------------
def test_rank_helpers_read_the_launcher_variables(monkeypatch):
    with main_process_first():  # no process group: a plain block
        pass
    assert is_main_process() and world_size() == 1
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not is_main_process() and world_size() == 2


ORDER_SCRIPT = """
import os, sys, time
import torch.distributed as dist
from xllm_cli.training.distributed import init_distributed, main_process_first, is_main_process, world_size
from xllm_cli.settings import XllmConfig

init_distributed(XllmConfig())
marker = sys.argv[1]
with main_process_first(local=False, description="prepare"):
    if is_main_process():
        time.sleep(1.0)  # a slow preparation: the other rank must not start before it ends
        open(marker, "w").write("prepared")
    else:
        assert open(marker).read() == "prepared", "rank 1 ran before the main process finished"
print(f"rank {dist.get_rank()} of {world_size()} ok", flush=True)
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The test process environment without the developer's xllm/hub/W&B settings, single-threaded per process."""
    prefixes = ("XLLM_", "HF_", "HUGGING_FACE_", "WANDB_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


@pytest.mark.slow
def test_main_process_first_makes_the_others_wait(tmp_path):
    script = tmp_path / "order.py"
    script.write_text(ORDER_SCRIPT)
    torchrun = [str(VENV_BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}"]
    result = subprocess.run(
        [*torchrun, str(script), str(tmp_path / "prepared.txt")],
        capture_output=True, text=True, env=clean_env(), timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rank 0 of 2 ok" in result.stdout and "rank 1 of 2 ok" in result.stdout


# --- real launches -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model, deepspeed_op) -> Path:
    """The demo data prepared once (as `xllm download` does) for every launch."""
    folder = tmp_path_factory.mktemp("distributed")
    result = subprocess.run(
        [XLLM, "download", "--dataset-key", "demo", "--model-name-or-path", str(tiny_model),
         "--train-local-path-to-data", str(folder / "train.jsonl")],
        capture_output=True, text=True, env=clean_env(), cwd=folder, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder


def launch(
    prepared: Path, tiny_model: Path, launcher: list[str], name: str, *flags: str, env: dict[str, str] | None = None
) -> tuple[Path, str]:
    """``<launcher> xllm train`` on the tiny model; returns the output folder and the combined output."""
    out = prepared / name
    train_flags = [
        "--model-name-or-path", str(tiny_model), "--dataset-key", "demo",
        "--train-local-path-to-data", str(prepared / "train.jsonl"), "--output-dir", str(out),
        "--max-steps", str(STEPS), "--save-steps", str(STEPS), "--max-length", "64", "--logging-steps", "1",
        "--warmup-steps", "0", "--learning-rate", "3e-3", "--optim", "adamw_torch",
    ]  # fmt: skip
    launch_env = clean_env(**(env or {}))
    launch_env.pop("OMP_NUM_THREADS")  # xllm chooses each process's threads itself: the tests read its start-up line
    result = subprocess.run(
        [*launcher, XLLM, "train", *train_flags, *flags],
        capture_output=True, text=True, env=launch_env, cwd=prepared, timeout=420, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return out, output


def chosen_threads(processes: int, torchrun: bool = False) -> str:
    """The start-up line of a CPU launch of ``processes`` processes on this node without OMP_NUM_THREADS."""
    cores = usable_cores()
    line = f"CPU threads: {max(1, cores // processes)} per process (auto: {cores} core(s) / {processes} process(es)"
    return line + (" on this node, instead of torchrun's OMP_NUM_THREADS=1)" if torchrun else " on this node)")


def deepspeed_launcher() -> list[str]:
    # The spelling of the original docs, with `=`.
    return [str(VENV_BIN / "deepspeed"), "--num_gpus=2", f"--master_port={free_port()}"]


def torchrun_launcher() -> list[str]:
    return [str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", f"--master_port={free_port()}"]


@pytest.fixture(scope="module")
def zero2_lora(prepared, tiny_model):
    # The original tool's spelling, as users paste it.
    return launch(
        prepared, tiny_model, deepspeed_launcher(), "zero2-lora", "--deepspeed_stage", "2", "--apply_lora", "True"
    )


@pytest.fixture(scope="module")
def zero3_full(prepared, tiny_model):
    return launch(prepared, tiny_model, deepspeed_launcher(), "zero3-full", "--deepspeed-stage", "3")


@pytest.fixture(scope="module")
def zero3_lora(prepared, tiny_model):
    return launch(prepared, tiny_model, deepspeed_launcher(), "zero3-lora", "--deepspeed-stage", "3", "--apply-lora")


@pytest.fixture(scope="module")
def ddp_full(prepared, tiny_model):
    # A cache of its own, empty: this launch must tokenize (once), whichever launch ran before it.
    return launch(
        prepared, tiny_model, torchrun_launcher(), "ddp-full", env={"XDG_CACHE_HOME": str(prepared / "ddp-cache")}
    )


def losses(out: Path) -> list[float]:
    return [entry["loss"] for entry in json.loads((out / "training_log.json").read_text()) if "loss" in entry]


def deepspeed_state(out: Path) -> dict:
    """What DeepSpeed itself recorded in the checkpoint: its config and how many processes shared the work."""
    import torch

    # mp_rank_00_model_states.pt (ZeRO 1/2), or one zero_pp_rank_N_... per process (ZeRO-3): rank 0's sorts first.
    states = sorted((out / f"checkpoint-{STEPS}").glob("global_step*/*model_states.pt"))
    return torch.load(states[0], map_location="cpu", weights_only=False)


def assert_trained_and_saved_once(out: Path, output: str, weights: str) -> None:
    curve = losses(out)
    assert len(curve) >= STEPS - 1 and sum(curve[-2:]) < sum(curve[:2]), curve
    assert (out / weights).is_file() and (out / "tokenizer.json").is_file()
    # Only the main process writes: no other rank's staging folder, one summary line.
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert output.count("done: trained") == 1, output[-3000:]


def state_dict_from_file(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("run", ["zero2_lora", "zero3_lora"])
def test_deepspeed_lora_trains_and_saves_a_loadable_adapter(run, request, tiny_model):
    out, output = request.getfixturevalue(run)
    assert_trained_and_saved_once(out, output, "adapter_model.safetensors")
    assert f"distributed: 2 process(es), DeepSpeed ZeRO-{run[4]}, gloo communication" in output
    assert chosen_threads(2) in output  # the DeepSpeed launcher sets no OMP_NUM_THREADS: cores are shared out
    state = deepspeed_state(out)
    assert state["ds_config"]["zero_optimization"]["stage"] == int(run[4]) and state["dp_world_size"] == 2

    from transformers import AutoModelForCausalLM

    saved = state_dict_from_file(out / "adapter_model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers reads the adapter folder (peft inside)
    loaded = {name: tensor for name, tensor in model.state_dict().items() if "lora_" in name}
    assert len(loaded) == len(saved) > 0
    lora_b = [tensor for name, tensor in saved.items() if "lora_B" in name]
    assert lora_b and all(tensor.numel() > 0 for tensor in saved.values())
    assert any(tensor.abs().max() > 0 for tensor in lora_b)  # B starts at zero: nonzero means it trained and gathered


@pytest.mark.slow
def test_zero3_full_fine_tuning_saves_the_whole_model(zero3_full, ddp_full, tiny_model):
    out, output = zero3_full
    assert_trained_and_saved_once(out, output, "model.safetensors")
    assert "distributed: 2 process(es), DeepSpeed ZeRO-3, gloo communication" in output
    state = deepspeed_state(out)
    assert state["ds_config"]["zero_optimization"]["stage"] == 3 and state["dp_world_size"] == 2

    from transformers import AutoModelForCausalLM

    saved = state_dict_from_file(out / "model.safetensors")
    single = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    # Gathered, not partitioned: every weight of the architecture, full shape, as a single process loads it.
    assert set(saved) == set(single) == set(base)
    for name, tensor in saved.items():
        assert tensor.shape == base[name].shape, name
        assert (single[name] == tensor).all(), name
    assert any((saved[name] - base[name]).abs().max() > 1e-4 for name in saved)
    # The same data, seed and optimizer under DDP give the same weights: sharding changed nothing.
    ddp = state_dict_from_file(ddp_full[0] / "model.safetensors")
    worst = max((saved[name] - ddp[name]).abs().max().item() for name in saved)
    assert worst < 1e-4, worst


@pytest.mark.slow
def test_torchrun_ddp_trains_and_saves_once(ddp_full):
    out, output = ddp_full
    assert_trained_and_saved_once(out, output, "model.safetensors")
    assert "distributed: 2 process(es), DDP (every process holds the whole model), gloo communication" in output
    assert chosen_threads(2, torchrun=True) in output
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out) is not None
    assert not list((out / f"checkpoint-{STEPS}").glob("global_step*"))  # plain DDP: no DeepSpeed involved
    # One process tokenized (whoever tokenizes says so), into the user cache folder; the other read its entry.
    assert output.count(f"tokenizing {out.parent / 'train.jsonl'}") == 1, output[-3000:]
    tokenized = out.parent / "ddp-cache" / "xllm" / "tokenized"
    assert [p.name for p in tokenized.iterdir() if p.name != "CACHEDIR.TAG"] == [
        p.name for p in tokenized.glob("train.jsonl-*") if (p / "meta.json").is_file()
    ]
    assert len(list(tokenized.glob("train.jsonl-*"))) == 1
    assert not (out.parent / ".xllm-cache").exists()  # nothing beside the data


@pytest.mark.slow
def test_deepspeed_stage1_runs_without_a_launcher(prepared, tiny_model):
    """The original stage 1 file never ran (a scheduler without total steps); ours does, even as one process."""
    out, output = launch(prepared, tiny_model, [sys.executable], "zero1-single", "--deepspeed-stage", "1")
    assert_trained_and_saved_once(out, output, "model.safetensors")
    assert "distributed: 1 process(es), DeepSpeed ZeRO-1" in output
    assert chosen_threads(1) in output
    state = deepspeed_state(out)
    assert state["ds_config"]["zero_optimization"]["stage"] == 1 and state["dp_world_size"] == 1
