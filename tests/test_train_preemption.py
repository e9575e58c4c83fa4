"""Preemption under torchrun: SIGTERM reaching only one of two processes still stops both at the same step with one
checkpoint (saving is collective, so a process that stopped alone would hang the other)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import psutil
import pytest

from tests.conftest import VENV_BIN, XLLM
from tests.test_distributed import clean_env
from tests.test_train import write_training_data
from xllm_cli.training.distributed import free_port


@pytest.mark.slow
def test_sigterm_to_one_process_checkpoints_both_at_the_same_step(tiny_model, tmp_path):
    data = write_training_data(tmp_path / "train.jsonl", samples=40, repeats=25)
    output = tmp_path / "out"
    log = tmp_path / "train.log"
    command = [
        str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", f"--master_port={free_port()}",
        XLLM, "train", "--model-name-or-path", str(tiny_model), "--dataset-key", "general",
        "--train-local-path-to-data", str(data), "--output-dir", str(output), "--max-steps", "100000",
        "--save-steps", "100000", "--logging-steps", "1000", "--optim", "adamw_torch",
    ]  # fmt: skip
    with log.open("w") as sink:
        launcher = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=clean_env(), cwd=tmp_path)
        try:
            deadline = time.monotonic() + 240
            while "train: started" not in log.read_text():
                assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(2)  # a few steps in
            workers = psutil.Process(launcher.pid).children()
            assert len(workers) == 2
            workers[-1].send_signal(signal.SIGTERM)  # only one of them, as an uneven preemption would
            launcher.wait(timeout=120)  # raises if a process hangs waiting for the other
        finally:
            if launcher.poll() is None:  # a failure above: leave no training processes behind
                for process in psutil.Process(launcher.pid).children(recursive=True):
                    process.kill()
                launcher.kill()
    text = log.read_text()
    checkpoints = list(output.glob("checkpoint-*"))
    assert len(checkpoints) == 1, text[-3000:]
    step = json.loads((checkpoints[0] / "trainer_state.json").read_text())["global_step"]
    assert checkpoints[0].name == f"checkpoint-{step}" and step > 0
    # Both processes ended (no hang in a collective: the launcher returned by itself), after the same step.
    assert f"training stopped by SIGTERM at step {step}" in text
    assert "exitcode  : 143" in text
