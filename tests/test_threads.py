"""CPU threads per process: chosen from cores and processes on the node unless the user chose, applied to torch."""

from __future__ import annotations

import os

import pytest

from xllm_cli.cli.app import main
from xllm_cli.training.threads import ThreadChoice, apply_threads, choose_threads, local_processes, usable_cores


def test_auto_divides_the_cores_among_the_processes_of_the_node():
    assert choose_threads(None, False, {}, cores=16).threads == 16
    assert choose_threads(None, False, {"LOCAL_WORLD_SIZE": "4"}, cores=16).threads == 4  # torchrun, accelerate
    assert choose_threads(None, False, {"LOCAL_SIZE": "2"}, cores=16).threads == 8  # the DeepSpeed launcher
    assert choose_threads(None, False, {"OMPI_COMM_WORLD_LOCAL_SIZE": "3"}, cores=16).threads == 5  # mpirun
    # More processes than cores: one each, never zero.
    choice = choose_threads(None, False, {"LOCAL_WORLD_SIZE": "8"}, cores=2)
    assert choice.threads == 1
    assert choice.line == "CPU threads: 1 per process (auto: 2 core(s) / 8 process(es) on this node)"


def test_the_users_choice_wins_and_says_where_it_came_from():
    choice = choose_threads(3, False, {"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}, cores=16)
    assert (choice.threads, choice.reason) == (3, "--cpu-threads")
    choice = choose_threads(None, False, {"OMP_NUM_THREADS": "6", "LOCAL_WORLD_SIZE": "2"}, cores=16)
    assert (choice.threads, choice.reason) == (6, "OMP_NUM_THREADS")
    assert choose_threads(None, False, {"OMP_NUM_THREADS": "many"}, cores=16).threads is None


def test_with_cuda_torch_keeps_its_default_unless_asked():
    assert choose_threads(None, True, {}, cores=16).threads is None
    assert choose_threads(4, True, {}, cores=16).threads == 4


def write_environ(path, **variables: str):
    path.write_bytes(b"".join(f"{name}={value}".encode() + b"\0" for name, value in variables.items()))
    return path


def test_torchruns_own_default_is_replaced_but_a_value_the_user_gave_torchrun_is_kept(tmp_path, monkeypatch):
    import xllm_cli.training.threads as threads

    worker = {"TORCHELASTIC_RUN_ID": "none", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    # torchrun started without OMP_NUM_THREADS (its /proc environ lacks it), then set 1 for its workers.
    launcher = write_environ(tmp_path / "launcher", PATH="/usr/bin")
    monkeypatch.setattr(threads, "Path", lambda _: launcher)
    choice = choose_threads(None, False, worker, cores=16)
    assert choice.threads == 8 and "instead of torchrun's OMP_NUM_THREADS=1" in choice.reason
    # The user exported OMP_NUM_THREADS=1 before torchrun: theirs.
    launcher = write_environ(tmp_path / "launcher", PATH="/usr/bin", OMP_NUM_THREADS="1")
    assert choose_threads(None, False, worker, cores=16) == ThreadChoice(1, "OMP_NUM_THREADS")


def test_counts_come_from_this_machine():
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
    assert local_processes({}) == 1 and local_processes({"LOCAL_WORLD_SIZE": "junk", "LOCAL_SIZE": "2"}) == 2


def test_apply_sets_torch_and_the_environment_for_children(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))  # restored after the test
    try:
        apply_threads(ThreadChoice(3, "test"))
        assert torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"
        apply_threads(ThreadChoice(None, "left alone"))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_cpu_threads_must_be_a_positive_number(value, capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--cpu-threads", value, "--show-config"])
    assert done.value.code == 2
    assert "--cpu-threads" in capsys.readouterr().err
