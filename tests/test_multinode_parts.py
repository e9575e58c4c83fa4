"""The pieces of the multi-node path, without launching anything (tests/test_multinode.py runs them for real): which
process prints what, the one-line messages of a run that cannot assemble or loses a process, and which checkpoint a
resume takes."""

from __future__ import annotations

import json

import pytest

from xllm_cli import console
from xllm_cli.cli.app import main
from xllm_cli.cli.console import report
from xllm_cli.cli.errors import describe
from xllm_cli.errors import ConfigError, DataError
from xllm_cli.settings import XllmConfig
from xllm_cli.training.distributed import joining_failure
from xllm_cli.training.experiment import TrainingInterrupted
from xllm_cli.training.resume import _deepspeed_tag_dir, checkpoint_to_resume


@pytest.fixture
def rank(monkeypatch):
    """Pretend to be a process of a launched run: ``rank(global, local, connected)``."""

    def become(global_rank: int, local_rank: int = 0, connected: bool = False) -> None:
        import xllm_cli.training.distributed

        monkeypatch.setenv("RANK", str(global_rank))
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        monkeypatch.setenv("WORLD_SIZE", "4")
        monkeypatch.setattr(xllm_cli.training.distributed, "processes_connected", lambda: connected)

    return become


def test_only_lines_a_process_alone_can_give_come_from_other_ranks_with_their_rank(rank, capsys):
    console.configure()
    rank(3, local_rank=1)
    console.info("train: 1/8 steps")  # about the whole run: rank 0 says it
    console.warn("--warmup-steps too high")
    console.info("tokenizing train.jsonl", every_process=True)
    console.warn("SIGTERM received: saving a checkpoint after this step, then stopping", every_process=True)
    assert capsys.readouterr().err.splitlines() == [
        "[rank 3] tokenizing train.jsonl",
        "[rank 3] warning: SIGTERM received: saving a checkpoint after this step, then stopping",
    ]
    rank(0)
    console.info("train: 1/8 steps")
    assert capsys.readouterr().err == "train: 1/8 steps\n"


@pytest.mark.parametrize(
    ("error", "global_rank", "local_rank", "connected", "printed"),
    [
        # Settings are read alike everywhere: rank 0 says it for all.
        (ConfigError("--lora-rank must be > 0"), 1, 0, False, []),
        (ConfigError("--lora-rank must be > 0"), 0, 0, False, ["error: --lora-rank must be > 0"]),
        # Once connected, a config error comes from files, which may differ between nodes: each node's first process.
        (ConfigError("no such file train.jsonl"), 2, 0, True, ["[rank 2] error: no such file train.jsonl"]),
        (ConfigError("no such file train.jsonl"), 3, 1, True, []),
        # A runtime failure: each process that meets it.
        (DataError("train.jsonl:4: malformed JSON"), 3, 1, True, ["[rank 3] error: train.jsonl:4: malformed JSON"]),
        # A stop the processes agreed on: once.
        (TrainingInterrupted("training stopped by SIGTERM at step 9", 15), 1, 1, True, []),
        (TrainingInterrupted("training stopped by SIGTERM at step 9", 15), 0, 0, True, ["error: training stopped by SIGTERM at step 9"]),
    ],
)  # fmt: skip
def test_a_failure_is_printed_once_for_the_processes_that_meet_it_alike(
    rank, capsys, error, global_rank, local_rank, connected, printed
):
    rank(global_rank, local_rank, connected)
    assert report(describe(error), error) == error.exit_code
    assert capsys.readouterr().err.splitlines() == printed


def test_a_usage_error_is_printed_by_rank_0_only(rank, capsys):
    rank(1, connected=False)
    with pytest.raises(SystemExit) as done:
        main(["train", "--no-such-flag"])
    assert done.value.code == 2 and capsys.readouterr().err == ""


def test_a_run_that_cannot_assemble_says_who_is_missing(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "node1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("WORLD_SIZE", "16")
    main_side = RuntimeError("Timed out after 31 seconds waiting for clients. 8/16 clients joined.")
    assert joining_failure(main_side, 30) == (
        "only 8 of the 16 processes joined the run at node1:29500 within --ddp-timeout 30 s: start every node with "
        "the same launch command (same master address, port and number of nodes), or raise --ddp-timeout"
    )
    other_side = RuntimeError(
        "The client socket has timed out after 30000ms while trying to connect to (node1, 29500)."
    )
    assert joining_failure(other_side, 30) == (
        "the run's main process (rank 0) at node1:29500 did not answer within --ddp-timeout 30 s: start the first "
        "node too, check the master address and port, or raise --ddp-timeout"
    )


def test_losing_another_process_is_one_line():
    error = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:43912. "
        "This is typically caused by a remote worker crashing. Check the logs of the remote worker."
    )
    failure = describe(error)
    assert failure.exit_code == 1 and failure.message == (
        "lost contact with another process of the run (Connection closed by peer [127.0.0.1]:43912): it failed or "
        "was stopped, and its own error (with its [rank N] prefix) or the launcher's summary says why"
    )


def test_last_is_the_newest_complete_checkpoint(tmp_path, capsys):
    console.configure()
    for step, complete in ((2, True), (9, True), (10, False)):  # 10 after 9: by number, not by name
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    config = XllmConfig(output_dir=str(tmp_path), resume_from_checkpoint="last")
    assert checkpoint_to_resume(config, warn=True) == tmp_path / "checkpoint-9"
    warning = (
        f"{tmp_path / 'checkpoint-10'} has no trainer_state.json (cut short while saving): resuming from checkpoint-9"
    )
    assert warning in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--resume-from-checkpoint last: no checkpoint-\\* folder in"):
        checkpoint_to_resume(XllmConfig(output_dir=str(tmp_path / "empty"), resume_from_checkpoint="last"))


def test_a_node_local_copy_gets_the_latest_file_deepspeed_writes_on_rank_0_only(tmp_path):
    checkpoint = tmp_path / "checkpoint-8"
    (checkpoint / "global_step8").mkdir(parents=True)
    (checkpoint / "global_step8_universal").mkdir()  # a conversion is not the checkpoint's own tag
    tag_dir, problem = _deepspeed_tag_dir(checkpoint)
    assert problem is None and tag_dir == checkpoint / "global_step8"
    assert (checkpoint / "latest").read_text() == "global_step8"
    _, problem = _deepspeed_tag_dir(tmp_path)
    assert (
        problem
        == f"{tmp_path} holds no DeepSpeed checkpoint (no global_step* folder): it was written without DeepSpeed"
    )


def test_ddp_timeout_reaches_the_trainer(tmp_path):
    from xllm_cli.training.arguments import training_arguments

    arguments = training_arguments(XllmConfig(ddp_timeout=42, output_dir=str(tmp_path), optim="adamw_torch"))
    assert arguments.ddp_timeout == 42
