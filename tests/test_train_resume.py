"""SIGTERM saves a checkpoint, and resuming from it continues exactly where the run stopped."""

from __future__ import annotations

import os
import signal

import pytest
from transformers import TrainerCallback

from tests.test_train import logged_losses, lora_model, run_train, write_training_data  # noqa: F401 (fixture)
from xllm_cli import registry
from xllm_cli.training.experiment import Experiment

STOP_AFTER = 3


class SigtermDuringStep(TrainerCallback):
    """Sends this process a real SIGTERM while step ``STOP_AFTER`` runs, as a cluster preempting the job would."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == STOP_AFTER - 1:
            os.kill(os.getpid(), signal.SIGTERM)


class PreemptedExperiment(Experiment):
    def before_trainer(self) -> None:  # a plugin-style hook adding a callback
        self.callbacks.append(SigtermDuringStep())


@pytest.fixture
def flags(tmp_path):
    data = write_training_data(tmp_path / "train.jsonl")
    # Two epochs (8 batches each), LoRA dropout on: the data order and the RNG must both be restored.
    return ["--apply-lora", "--lora-dropout", "0.1", "--learning-rate", "1e-2", "--max-steps", "12"], data


def test_sigterm_checkpoints_and_resume_matches_an_uninterrupted_run(lora_model, tmp_path, capsys, flags):  # noqa: F811
    args, data = flags
    straight = tmp_path / "straight"
    assert run_train(lora_model, straight, *args, data=data) == 0

    registry.register("experiments", "test-preempted", PreemptedExperiment)
    resumed = tmp_path / "resumed"
    capsys.readouterr()
    code = run_train(lora_model, resumed, *args, "--experiment-key", "test-preempted", data=data)
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM  # 143, as a shell reports a command ended by SIGTERM
    assert f"training stopped by SIGTERM at step {STOP_AFTER}" in err and "--resume-from-checkpoint last" in err
    assert (resumed / f"checkpoint-{STOP_AFTER}").is_dir()
    assert not (resumed / "adapter_model.safetensors").exists()  # no final model from an interrupted run
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after training

    assert run_train(lora_model, resumed, *args, "--resume-from-checkpoint", "last", data=data) == 0
    expected, got = logged_losses(straight), logged_losses(resumed)
    assert len(got) == len(expected) == 12
    assert got == pytest.approx(expected, abs=1e-4)
    assert f"resuming from {resumed / f'checkpoint-{STOP_AFTER}'}" in capsys.readouterr().err


def test_resume_last_without_a_checkpoint_is_a_clear_error(tiny_model, tmp_path, capsys):
    code = run_train(tiny_model, tmp_path / "empty", "--resume-from-checkpoint", "last")
    assert code == 2
    assert "--resume-from-checkpoint last: no checkpoint-* folder" in capsys.readouterr().err
