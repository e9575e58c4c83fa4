"""Two nodes on one machine: the multi-node launches of docs/scaling.md run for real.

Each simulated node is a launcher (``torchrun`` or ``deepspeed --no_ssh``) with one process, started side by side,
with its own working folder and tokenization cache, so a path valid on one node only shows up; they meet over
loopback and talk over gloo. A launch writes each node's output to ``<node>/log``. The Slurm script and the
DeepSpeed hostfile recipe are taken from the page as generated and run with only the cluster's names replaced.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, VENV_BIN
from tests.test_distributed import clean_env
from tests.test_train import lora_model, write_training_data  # noqa: F401 (fixture)
from xllm_cli.training.distributed import free_port

sys.path.insert(0, str(REPO / "docs"))
import generate  # noqa: E402

pytestmark = pytest.mark.slow

SCALING = REPO / "docs" / "scaling.md"
STEPS = 12
LAUNCH_TIMEOUT = 420


# --- nodes -----------------------------------------------------------------------------------------------------------
def node_env(node: Path, **extra: str) -> dict[str, str]:
    """A node's environment: single-threaded, its own tokenization cache, the venv's launchers first on PATH."""
    env = clean_env(XDG_CACHE_HOME=str(node / "cache"), **extra)  # TORCH_EXTENSIONS_DIR stays shared (conftest)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def start(command: list[str], node: Path, env: dict[str, str]) -> subprocess.Popen:
    node.mkdir(parents=True, exist_ok=True)
    with (node / "log").open("w") as log:
        return subprocess.Popen(
            command, cwd=node, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def kill_tree(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.wait()


def wait_all(processes: list[subprocess.Popen], timeout: float = LAUNCH_TIMEOUT) -> list[int]:
    """Exit codes, in order; on a timeout every process tree is killed and the test fails."""
    deadline = time.monotonic() + timeout
    try:
        return [process.wait(timeout=max(1.0, deadline - time.monotonic())) for process in processes]
    finally:
        for process in processes:
            kill_tree(process)


def run_nodes(launches: list[tuple[list[str], Path, dict[str, str]]], timeout: float = LAUNCH_TIMEOUT) -> list[int]:
    """Start the nodes (the first one first: it hosts the rendezvous, as the endpoint's node does on a cluster)."""
    processes = []
    try:
        for index, (command, node, env) in enumerate(launches):
            processes.append(start(command, node, env))
            if index == 0:
                time.sleep(1.0)
    except BaseException:
        for process in processes:
            kill_tree(process)
        raise
    return wait_all(processes, timeout)


def log(node: Path) -> str:
    return (node / "log").read_text()


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^(\[rank \d+\] )?error: ", line)]


def torchrun(port: int, node_rank: int, *train_args: str) -> list[str]:
    """The torchrun line of the recipes on one simulated node. --local-addr stands for the node's host name: c10d
    ranks nodes by it, so node N is rank N on every launch (the same hosts keep their ranks on a cluster)."""
    return [
        str(VENV_BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{port}", "--local-addr", f"127.0.0.{node_rank + 1}",
        str(VENV_BIN / "xllm"), "train", *train_args,
    ]  # fmt: skip


def two_torchrun_nodes(root: Path, *train_args: str, env: dict[str, str] | None = None) -> list[int]:
    port = free_port()
    nodes = [root / "node0", root / "node1"]
    return run_nodes(
        [(torchrun(port, rank, *train_args), node, node_env(node, **(env or {}))) for rank, node in enumerate(nodes)]
    )


# --- settings and results --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory, deepspeed_op) -> Path:
    """Training data on 'shared storage': a few samples repeated, so the loss falls within a few steps."""
    return write_training_data(tmp_path_factory.mktemp("shared-data") / "train.jsonl", samples=8, repeats=8)


def train_settings(model: Path, data: Path, **extra: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "model_name_or_path": str(model), "dataset_key": "general", "train_local_path_to_data": str(data),
        "max_steps": STEPS, "save_steps": 4, "save_total_limit": 2, "logging_steps": 1, "warmup_steps": 0,
        "max_length": 64, "per_device_train_batch_size": 2, "optim": "adamw_torch", "learning_rate": 5e-3,
    }  # fmt: skip
    settings.update(extra)
    return settings


def write_yaml(path: Path, settings: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def losses(out: Path) -> dict[int, float]:
    return {
        entry["step"]: entry["loss"] for entry in json.loads((out / "training_log.json").read_text()) if "loss" in entry
    }


def assert_loss_falls(curve: dict[int, float]) -> None:
    steps = sorted(curve)
    assert steps == list(range(1, steps[-1] + 1)), steps
    first, last = [curve[s] for s in steps[:2]], [curve[s] for s in steps[-2:]]
    assert sum(last) < sum(first) - 0.2, curve


def global_step(checkpoint: Path) -> int:
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]


def shard_files(checkpoint: Path) -> list[str]:
    return sorted(p.name for p in (checkpoint / f"global_step{global_step(checkpoint)}").iterdir())


def load_adapter(out: Path) -> dict:
    """The adapter as plain transformers loads it; its trained B matrices (zero at the start) must not be zero."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    lora_b = {name: t for name, t in model.state_dict().items() if "lora_B" in name}
    assert lora_b and any(t.abs().max() > 0 for t in lora_b.values())
    return lora_b


def assert_written_once(out: Path, texts: list[str], weights: str) -> None:
    assert (out / weights).is_file() and (out / "tokenizer.json").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging or probe left behind
    assert sum(text.count("done: trained") for text in texts) == 1


# --- the recipes as the page shows them ------------------------------------------------------------------------------
def recipe(name: str) -> str:
    """The script of a generated block of docs/scaling.md, which must be what docs/generate.py renders today."""
    page = SCALING.read_text()
    match = re.search(rf"<!-- generated:{name} -->\n```bash[^\n]*\n(.*?)\n```\n<!-- /generated:{name} -->", page, re.S)
    assert match, f"docs/scaling.md has no {name} block"
    assert generate.RENDERERS[name]() in match.group(0), "docs/scaling.md is stale: run python docs/generate.py"
    return match.group(1)


def replaced(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"the recipe no longer contains {old!r}"
        text = text.replace(old, new)
    return text


FAKE_SCONTROL = """#!/bin/bash
# scontrol show hostnames <list>: the simulated nodes' addresses, the first one first
printf '127.0.0.1\\n127.0.0.2\\n'
"""
FAKE_SRUN = """#!/bin/bash
# srun inside an sbatch job: one task per node runs the command; here each node is a folder of its own
pids=()
for node in 0 1; do
    mkdir -p "$NODES/node$node"
    (cd "$NODES/node$node" && SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 exec "$@" > log 2>&1) &
    pids+=($!)
    [ $node = 0 ] && sleep 1  # the first node hosts the rendezvous
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, lora_model, data):  # noqa: F811
    """The Slurm script, run as sbatch would run it, with stand-ins for srun and scontrol: ZeRO-2 LoRA on two nodes,
    a shared output folder, node-local caches."""
    root = tmp_path_factory.mktemp("slurm")
    shared, bin_dir = root / "shared", root / "bin"
    write_yaml(shared / "train.yaml", train_settings(lora_model, data, apply_lora=True, deepspeed_stage=2))
    bin_dir.mkdir()
    for name, text in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = replaced(
        recipe("slurm-recipe"),
        {
            f"SHARED={generate.CLUSTER['shared']}": f"SHARED={shared}",
            f"SCRATCH={generate.SCRATCH}": "SCRATCH=scratch",  # relative: each node's own folder, as a local disk is
            f"MASTER_PORT={generate.CLUSTER['master_port']}": f"MASTER_PORT={free_port()}",
        },
    )
    (root / "train.sbatch").write_text(script)
    env = node_env(root, NODES=str(root), SLURM_JOB_NODELIST="node[1-2]", SLURM_NNODES="2", SLURM_GPUS_ON_NODE="1")
    env.update(
        SLURM_JOB_ID="4242", SLURM_JOB_NAME="xllm-train", USER="tester", PATH=f"{bin_dir}{os.pathsep}{env['PATH']}"
    )
    env.pop("XDG_CACHE_HOME")  # the script's XLLM_CACHE_DIR decides
    # What sbatch would write to the job's output file; the nodes' own output goes to node0/log and node1/log.
    (code,) = run_nodes([(["bash", str(root / "train.sbatch")], root / "job", env)])
    return root, shared / "runs" / "xllm-train", code


def test_slurm_recipe_trains_on_two_nodes_with_a_shared_output_dir(slurm_run):
    root, out, code = slurm_run
    job, node0, node1 = (
        log(root / name) if (root / name / "log").is_file() else "" for name in ("job", "node0", "node1")
    )
    assert code == 0, "\n".join(text[-2000:] for text in (job, node0, node1))
    assert "distributed: 2 process(es), DeepSpeed ZeRO-2, gloo communication" in node0
    assert "not shared by all nodes" not in node0
    assert_loss_falls(losses(out))
    assert_written_once(out, [node0, node1], "adapter_model.safetensors")
    load_adapter(out)
    # Both processes trained every step: each checkpoint holds both shards, saved at that step.
    for step in (8, STEPS):
        checkpoint = out / f"checkpoint-{step}"
        assert global_step(checkpoint) == step
        assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= set(
            shard_files(checkpoint)
        )
        assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    # Each node tokenized into its own cache (XLLM_CACHE_DIR on its 'local disk'); the second node says it is rank 1.
    assert node0.count("tokenizing ") == 1 and "[rank 1] tokenizing " in node1
    for node in ("node0", "node1"):
        assert list((root / node / "scratch" / "xllm" / "tokenized").glob("train.jsonl-*/meta.json"))
    assert "train: " not in node1  # progress comes from rank 0 only


def test_zero3_on_node_local_output_dirs(tmp_path, lora_model, data):  # noqa: F811
    # A relative output_dir: each node writes under its own working folder, as on a local disk.
    settings = train_settings(lora_model, data, apply_lora=True, deepspeed_stage=3, output_dir="out")
    codes = two_torchrun_nodes(tmp_path, "--config", str(write_yaml(tmp_path / "train.yaml", settings)))
    node0, node1 = log(tmp_path / "node0"), log(tmp_path / "node1")
    assert codes == [0, 0], node0[-3000:] + node1[-3000:]
    assert "--output-dir out is not shared by all nodes (1 of 2 processes do not see rank 0's files there)" in node0
    out0, out1 = tmp_path / "node0" / "out", tmp_path / "node1" / "out"
    assert_loss_falls(losses(out0))
    assert_written_once(out0, [node0, node1], "adapter_model.safetensors")
    load_adapter(out0)
    # The final model once, on the first node; the second keeps only its checkpoints.
    assert {p.name for p in out1.iterdir()} == {"checkpoint-8", f"checkpoint-{STEPS}"}
    for step in (8, STEPS):
        first, second = out0 / f"checkpoint-{step}", out1 / f"checkpoint-{step}"
        assert global_step(first) == global_step(second) == step
        # ZeRO-3: each process's slice of the weights and of the optimizer, on its own node.
        assert shard_files(first) == [
            "zero_pp_rank_0_mp_rank_00_model_states.pt",
            "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        ]
        assert shard_files(second) == [
            "zero_pp_rank_1_mp_rank_00_model_states.pt",
            "zero_pp_rank_1_mp_rank_00_optim_states.pt",
        ]
    # One process cannot resume from one node's copy: the other half of the states is on the other node.
    node = tmp_path / "node0"
    alone = [
        str(VENV_BIN / "xllm"),
        "train",
        "--config",
        str(tmp_path / "train.yaml"),
        "--resume-from-checkpoint",
        "last",
    ]
    (code,) = run_nodes([(alone, node, node_env(node))])
    assert code == 2 and error_lines(log(node)) == [
        f"error: out/checkpoint-{STEPS} was written by 2 processes and this run has 1: DeepSpeed must convert it to its "
        f"universal checkpoint, which needs the optimizer shards of all 2 in out/checkpoint-{STEPS}/global_step{STEPS}, "
        "and 1 are there (the others are on the other nodes' disks): copy them there, or resume on 2 processes"
    ], log(node)[-3000:]


@pytest.fixture(scope="module")
def hostfile_run(tmp_path_factory, tiny_model, data):
    """The DeepSpeed hostfile recipe's --no_ssh line on both nodes: ZeRO-2 full fine-tuning, shared output."""
    root = tmp_path_factory.mktemp("hostfile")
    shared = root / "shared"
    out = shared / "runs" / "full"
    settings = train_settings(tiny_model, data, deepspeed_stage=2, learning_rate=3e-3, output_dir=str(out))
    write_yaml(shared / "train.yaml", settings)
    port = free_port()
    text = replaced(
        recipe("deepspeed-hostfile-recipe"),
        {
            f"SHARED={generate.CLUSTER['shared']}": f"SHARED={shared}",
            f"slots={generate.CLUSTER['gpus_per_node']}": "slots=1",
            f"--master_addr {generate.CLUSTER['nodes'][0]}": "--master_addr 127.0.0.1",
            f"--master_port {generate.CLUSTER['master_port']}": f"--master_port {port}",
        },
    )
    setup, _, launches = text.partition("\nEOF\n")
    subprocess.run(["bash", "-c", setup + "\nEOF\n"], check=True, env=node_env(root))
    no_ssh = next(block for block in launches.split("\n# ") if "--no_ssh" in block)
    command = no_ssh[no_ssh.index("deepspeed ") :]
    nodes = [root / "node0", root / "node1"]
    codes = run_nodes(
        [
            (["bash", "-c", command], node, node_env(node, SHARED=str(shared), NODE_RANK=str(rank)))
            for rank, node in enumerate(nodes)
        ]
    )
    return root, shared, out, codes


def test_deepspeed_hostfile_recipe_without_ssh(hostfile_run, tiny_model):
    root, shared, out, codes = hostfile_run
    node0, node1 = log(root / "node0"), log(root / "node1")
    assert codes == [0, 0], node0[-3000:] + node1[-3000:]
    assert (shared / "hostfile").read_text() == "node1 slots=1\nnode2 slots=1\n"
    assert "distributed: 2 process(es), DeepSpeed ZeRO-2, gloo communication" in node0
    assert_loss_falls(losses(out))
    assert_written_once(out, [node0, node1], "model.safetensors")
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    assert set(trained) == set(base) and any((trained[n] - base[n]).abs().max() > 1e-4 for n in base)
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= set(
        shard_files(out / f"checkpoint-{STEPS}")
    )


# --- preemption --------------------------------------------------------------------------------------------------------
def wait_for(node: Path, text: str, processes: list[subprocess.Popen], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in log(node):
        assert all(p.poll() is None for p in processes) and time.monotonic() < deadline, log(node)[-3000:]
        time.sleep(0.3)


def test_sigterm_to_one_node_checkpoints_both_and_the_relaunch_resumes(tmp_path, lora_model, data):  # noqa: F811
    """SIGTERM reaches the second node's process only; both save at one step (node-local output dirs, so each node
    its own copy) and exit 143; relaunching both resumes from that step."""
    long_run = train_settings(lora_model, data, apply_lora=True, deepspeed_stage=2, output_dir="out", max_steps=200)
    config = write_yaml(tmp_path / "train.yaml", {**long_run, "save_steps": 1000})
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    port = free_port()
    processes = []
    try:
        for rank, node in enumerate(nodes):
            processes.append(start(torchrun(port, rank, "--config", str(config)), node, node_env(node)))
            if rank == 0:
                time.sleep(1.0)
        wait_for(nodes[0], "train: 20/200 steps", processes)  # the loss has moved by then
        (worker,) = psutil.Process(processes[1].pid).children()
        worker.send_signal(signal.SIGTERM)
        codes = wait_all(processes, timeout=180)  # raises if a process hangs in a collective
    finally:
        for process in processes:
            kill_tree(process)
    node0, node1 = log(nodes[0]), log(nodes[1])
    assert codes == [1, 1], node0[-3000:] + node1[-3000:]  # torchrun's exit for a failed worker
    assert "exitcode  : 143" in node0 and "exitcode  : 143" in node1
    first, second = sorted((nodes[0] / "out").glob("checkpoint-*")), sorted((nodes[1] / "out").glob("checkpoint-*"))
    assert len(first) == len(second) == 1 and first[0].name == second[0].name, (first, second)
    step = global_step(first[0])
    assert step == global_step(second[0]) >= 20 and first[0].name == f"checkpoint-{step}"
    assert "[rank 1] warning: SIGTERM received: saving a checkpoint after this step, then stopping" in node1
    # One line for the run, from rank 0, which did not get the signal itself.
    stopped = f"training stopped by SIGTERM at step {step}; checkpoint saved: out/checkpoint-{step}"
    assert error_lines(node0) == [f"error: {stopped}"] and error_lines(node1) == []

    resume = ["--config", str(config), "--resume-from-checkpoint", "last", "--max-steps", str(step + 3)]
    port = free_port()
    codes = run_nodes([(torchrun(port, rank, *resume), node, node_env(node)) for rank, node in enumerate(nodes)])
    node0 = log(nodes[0])
    assert codes == [0, 0], node0[-3000:] + log(nodes[1])[-3000:]
    assert f"resuming from out/checkpoint-{step}" in node0
    curve = losses(nodes[0] / "out")
    assert sorted(curve) == list(range(1, step + 4))  # the first run's steps (from the checkpoint), then 3 more
    assert_continues(curve, step)


def assert_continues(curve: dict[int, float], resumed_at: int) -> None:
    """The first loss after resuming is near the last ones before, far below the untrained model's: a restart from
    scratch would be back at the start."""
    before = [curve[s] for s in range(resumed_at - 1, resumed_at + 1)]
    start = curve[1]
    assert start - max(before) > 0.3, curve  # the run had learned something worth keeping
    assert abs(curve[resumed_at + 1] - min(before)) < (start - max(before)) / 2, curve


# --- another number of processes ----------------------------------------------------------------------------------
def resume_elsewhere(launcher: list[str], node: Path, config: Path, out: Path, checkpoint: Path, steps: int) -> str:
    """``xllm train`` with the run's settings under ``launcher``, resuming from ``checkpoint`` into ``out``."""
    flags = ["--config", str(config), "--max-steps", str(steps), "--output-dir", str(out)]
    command = [*launcher, str(VENV_BIN / "xllm"), "train", *flags, "--resume-from-checkpoint", str(checkpoint)]
    (code,) = run_nodes([(command, node, node_env(node))])
    assert code == 0, log(node)[-3000:]
    return log(node)


@pytest.mark.parametrize(
    ("run", "weights"), [("slurm_run", "adapter_model.safetensors"), ("hostfile_run", "model.safetensors")]
)
def test_zero2_resumes_on_one_process_and_back_on_two(run, weights, request, tmp_path):
    """A checkpoint of 2 processes continues on 1 (LoRA from the Slurm run, full fine-tuning from the hostfile run),
    and that one's checkpoint continues on 2 again: DeepSpeed's universal checkpoint, made by xllm."""
    result = request.getfixturevalue(run)
    shared, out = (result[0] / "shared", result[1]) if run == "slurm_run" else (result[1], result[2])
    assert (out / f"checkpoint-{STEPS}").is_dir(), "the 2-node run did not finish"
    node, one, two = tmp_path / "node", tmp_path / "one", tmp_path / "two"

    text = resume_elsewhere([], node, shared / "train.yaml", one, out / "checkpoint-8", STEPS)
    converted = "checkpoint-8 was written by 2 process(es) and this run has 1: converting it to DeepSpeed's universal"
    assert f"{converted} checkpoint (global_step8_universal) to resume" in text
    curve = losses(one)
    assert sorted(curve) == list(range(1, STEPS + 1))  # steps 1-8 of the 2-process run, then 9-12 on one process
    assert_continues(curve, 8)
    assert (one / weights).is_file()

    torchrun_one_node = [str(VENV_BIN / "torchrun"), "--nproc-per-node", "2", f"--master-port={free_port()}"]
    text = resume_elsewhere(torchrun_one_node, node, shared / "train.yaml", two, one / f"checkpoint-{STEPS}", STEPS + 4)
    assert f"checkpoint-{STEPS} was written by 1 process(es) and this run has 2: converting it" in text
    curve = losses(two)
    assert sorted(curve) == list(range(1, STEPS + 5))  # and 4 more steps on two processes
    assert_continues(curve, STEPS)
    assert (two / weights).is_file() and global_step(two / f"checkpoint-{STEPS + 4}") == STEPS + 4


# --- a node that never arrives, and errors ---------------------------------------------------------------------------
def test_a_node_that_never_arrives_fails_within_the_timeout(tmp_path, tiny_model, data):
    """The DeepSpeed launcher starts xllm at once, so xllm is the one waiting: --ddp-timeout bounds it."""
    node = tmp_path / "node0"
    node.mkdir()
    (node / "hostfile").write_text("node1 slots=1\nnode2 slots=1\n")
    port = free_port()
    command = [
        str(VENV_BIN / "deepspeed"), "--hostfile", "hostfile", "--no_ssh", "--node_rank", "0",
        "--master_addr", "127.0.0.1", "--master_port", str(port), str(VENV_BIN / "xllm"), "train",
        "--config", str(write_yaml(tmp_path / "train.yaml", train_settings(tiny_model, data, deepspeed_stage=2))),
        "--ddp-timeout", "10",
    ]  # fmt: skip
    started = time.monotonic()
    (code,) = run_nodes([(command, node, node_env(node))], timeout=240)
    elapsed = time.monotonic() - started
    text = log(node)
    assert code != 0
    assert error_lines(text) == [
        f"error: only 1 of the 2 processes joined the run at 127.0.0.1:{port} within --ddp-timeout 10 s: start every "
        "node with the same launch command (same master address, port and number of nodes), or raise --ddp-timeout"
    ], text[-3000:]
    assert elapsed < 200, elapsed  # the 10 s wait plus starting up, not torch's default of 30 minutes


def test_errors_on_two_nodes_a_settings_error_is_printed_once(tmp_path, tiny_model, data):
    config = write_yaml(tmp_path / "train.yaml", train_settings(tiny_model, data))
    codes = two_torchrun_nodes(tmp_path, "--config", str(config), "--deepspeed-stage", "5")
    assert codes == [1, 1]
    lines = error_lines(log(tmp_path / "node0")) + error_lines(log(tmp_path / "node1"))
    assert lines == ["error: --deepspeed-stage must be 0, 1, 2 or 3, got 5"], lines


def test_errors_on_two_nodes_a_failure_on_one_node_is_printed_there_with_its_rank(tmp_path, tiny_model, data):
    """The data file is node-local here, and broken on the second node only: that node says what is wrong, the first
    one that it lost its peer (within --ddp-timeout), each once."""
    rows = data.read_text().splitlines(keepends=True)
    for node, broken in (("node0", False), ("node1", True)):
        (tmp_path / node).mkdir()
        (tmp_path / node / "train.jsonl").write_text(
            "".join(rows[:3] + (['{"text": "cut\n'] if broken else []) + rows[3:])
        )
    settings = train_settings(tiny_model, Path("train.jsonl"), max_steps=4)
    codes = two_torchrun_nodes(
        tmp_path, "--config", str(write_yaml(tmp_path / "train.yaml", settings)), "--ddp-timeout", "30"
    )
    node0, node1 = error_lines(log(tmp_path / "node0")), error_lines(log(tmp_path / "node1"))
    assert codes == [1, 1]
    assert len(node1) == 1 and node1[0].startswith("[rank 1] error: train.jsonl:4: malformed JSON"), node1
    assert len(node0) == 1 and node0[0].startswith("error: lost contact with another process of the run ("), node0
